/*-------------------------------------------------------------------------
 *
 * db.c
 *		hasched-worker's database connection, the circuit breaker around
 *		it, and the reports on a lease (heartbeat, complete, fail) that
 *		every job source shares.
 *
 * The breaker.  CLOSED: the connection is used; a call that finds it gone
 * (a connection error, a server shutting down, a server that is not the
 * primary any more) drops it and tries once to connect again at once (a
 * multi-host connection string with target_session_attrs=read-write finds
 * the new primary).  If that fails the breaker is OPEN: every call fails
 * fast, without touching the network, until the probe time; then
 * HALF_OPEN: one connection attempt, which closes the breaker or opens it
 * again for longer (exponential backoff with jitter, 200 ms doubling up to
 * 15 s).  So a failover is met by one probe per worker per backoff step,
 * not by a storm of reconnects.
 *
 * Reports are idempotent on the server: a report whose reply was lost is
 * sent again with the same token and succeeds without recording twice.
 *
 * IDENTIFICATION
 *		hasched-worker/db.c
 *
 *-------------------------------------------------------------------------
 */
#include "hw.h"

#include <stdlib.h>
#include <string.h>

#define BREAKER_BASE_USEC	200000
#define BREAKER_CAP_USEC	15000000

static PGconn *conn = NULL;
static HwBreakerState breaker = HW_BREAKER_CLOSED;
static int	failures = 0;
static int64_t open_until = 0;
static const char *fatal_config = NULL;

/* the job source that wants to hear about reconnects */
extern HwSource *hw_source;

static void
notice_to_log(void *arg, const char *message)
{
	size_t		n = strlen(message);

	hw_log("NOTICE", "server: %.*s", (int) (n > 0 && message[n - 1] == '\n' ? n - 1 : n), message);
}

static const char *
breaker_name(HwBreakerState s)
{
	return s == HW_BREAKER_CLOSED ? "closed" : s == HW_BREAKER_OPEN ? "open" : "half-open";
}

static void
breaker_set(HwBreakerState s)
{
	if (s != breaker)
		hw_log("INFO", "database circuit breaker %s -> %s", breaker_name(breaker), breaker_name(s));
	breaker = s;
}

/* One connection attempt; true when connected to a server that takes writes. */
static bool
connect_once(void)
{
	/* defaults first: the connection string given overrides each of them */
	const char *const keys[] = {
		"connect_timeout", "application_name", "keepalives", "keepalives_idle",
		"keepalives_interval", "keepalives_count", "tcp_user_timeout", "dbname", NULL
	};
	const char *const vals[] = {
		"5", "hasched-worker", "1", "10", "3", "3", "20000", hw_cfg.db, NULL
	};
	PGconn	   *c = PQconnectdbParams(keys, vals, 1);

	if (PQstatus(c) != CONNECTION_OK)
	{
		char	   *m = PQerrorMessage(c);
		size_t		n = strlen(m);

		while (n > 0 && (m[n - 1] == '\n' || m[n - 1] == ' '))
			n--;
		hw_log("WARNING", "cannot connect to the database: %.*s", (int) n, m);
		PQfinish(c);
		return false;
	}
	PQsetNoticeProcessor(c, notice_to_log, NULL);
	conn = c;
	hw_log("INFO", "connected to the database (server %s, port %s)",
		   PQhost(c) ? PQhost(c) : "?", PQport(c) ? PQport(c) : "?");
	if (hw_source && hw_source->reconnected)
		hw_source->reconnected(hw_source, conn);
	/* the source may have found the connection unusable */
	return conn != NULL;
}

static void
trip(void)
{
	int64_t		delay;

	failures++;
	delay = hs_backoff_usec(failures, BREAKER_BASE_USEC, BREAKER_CAP_USEC,
							(double) random() / (double) RAND_MAX);
	open_until = hw_now() + delay;
	breaker_set(HW_BREAKER_OPEN);
	hw_log("INFO", "next database probe in %lld ms", (long long) (delay / 1000));
}

/*
 * The connection if it is usable now, else NULL.  Connects (a probe) when
 * the breaker allows it; never waits for the breaker.
 */
PGconn *
hw_db_get(void)
{
	if (conn != NULL && PQstatus(conn) == CONNECTION_OK)
		return conn;
	if (conn != NULL)
		hw_db_close();
	if (breaker == HW_BREAKER_OPEN)
	{
		if (hw_now() < open_until)
			return NULL;		/* fail fast */
		breaker_set(HW_BREAKER_HALF_OPEN);
	}
	if (connect_once())
	{
		failures = 0;
		breaker_set(HW_BREAKER_CLOSED);
		return conn;
	}
	trip();
	return NULL;
}

/* Is the database reachable as far as we know (health)? */
bool
hw_db_up(void)
{
	return conn != NULL && PQstatus(conn) == CONNECTION_OK && breaker == HW_BREAKER_CLOSED;
}

HwBreakerState
hw_db_breaker(int64_t *until)
{
	if (until)
		*until = open_until;
	return breaker;
}

int
hw_db_socket(void)
{
	return conn != NULL ? PQsocket(conn) : -1;
}

void
hw_db_close(void)
{
	if (conn != NULL)
		PQfinish(conn);
	conn = NULL;
}

/* A configuration error the server reported (exit with it), or NULL. */
const char *
hw_db_fatal_config(void)
{
	return fatal_config;
}

/* A setup error found elsewhere (the broker refused the worker): exit with it. */
void
hw_set_fatal_config(const char *why)
{
	fatal_config = why;
}

/*
 * The connection is lost, or the server is not one to work with (shutting
 * down, not the primary): drop it and try once at once, then the breaker.
 */
static void
connection_lost(void)
{
	hw_db_close();
	if (breaker == HW_BREAKER_CLOSED && connect_once())
		return;
	trip();
}

static bool
sqlstate_is(const char *state, const char *prefix)
{
	return state != NULL && strncmp(state, prefix, strlen(prefix)) == 0;
}

/*
 * Read what arrived on the socket; true if a NOTIFY came.  A closed
 * connection is handled like a lost one.
 */
bool
hw_db_consume_notifies(void)
{
	PGnotify   *n;
	bool		any = false;

	if (conn == NULL)
		return false;
	if (!PQconsumeInput(conn) || PQstatus(conn) != CONNECTION_OK)
	{
		hw_log("WARNING", "database connection lost");
		connection_lost();
		return true;			/* look again: a new primary may have jobs */
	}
	while ((n = PQnotifies(conn)) != NULL)
	{
		any = true;
		PQfreemem(n);
	}
	return any;
}

/*
 * Run one statement with text parameters.  HW_DB_OK leaves the result in
 * *res (the caller clears it); on HW_DB_ERROR and HW_DB_STALE *errmsg gets
 * the server's message (malloc'd).  A lost connection, a server shutting
 * down or not the primary: HW_DB_DOWN, and the breaker takes over.
 */
HwDbResult
hw_db_call(const char *sql, int nparams, const char *const *values, PGresult **res,
		   char **errmsg)
{
	PGconn	   *c = hw_db_get();
	PGresult   *r;
	ExecStatusType st;
	const char *state;
	bool		stale;

	if (res)
		*res = NULL;
	if (errmsg)
		*errmsg = NULL;
	if (c == NULL)
		return HW_DB_DOWN;
	r = PQexecParams(c, sql, nparams, NULL, values, NULL, NULL, 0);
	st = PQresultStatus(r);
	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
	{
		if (res)
			*res = r;
		else
			PQclear(r);
		return HW_DB_OK;
	}
	state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
	if (PQstatus(c) != CONNECTION_OK || state == NULL ||
		sqlstate_is(state, "08") || sqlstate_is(state, "57P") ||
		sqlstate_is(state, "JQ004") || sqlstate_is(state, "25006"))
	{
		const char *m = PQresultErrorMessage(r);

		hw_log("WARNING", "database unusable (%s): %s", state ? state : "no SQLSTATE",
			   m && *m ? m : PQerrorMessage(c));
		PQclear(r);
		connection_lost();
		return HW_DB_DOWN;
	}
	if (errmsg)
	{
		const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
		/* JQ006: the detail names the job's state (the AMQP source reads it) */
		const char *d = sqlstate_is(state, "JQ006") ?
			PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL) : NULL;

		*errmsg = malloc(strlen(state) + strlen(m ? m : "") + strlen(d ? d : "") + 8);
		if (*errmsg)
			sprintf(*errmsg, "%s: %s%s%s", state, m ? m : "", d ? " " : "", d ? d : "");
	}
	/* the worker is set up wrong: unknown queue, wrong transport, no rights */
	if (sqlstate_is(state, "JQ010") || sqlstate_is(state, "JQ016") ||
		sqlstate_is(state, "42501") || sqlstate_is(state, "42883") ||
		sqlstate_is(state, "3F000"))
	{
		const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
		const char *h = PQresultErrorField(r, PG_DIAG_MESSAGE_HINT);
		char	   *f = malloc(1024);

		if (f)
		{
			snprintf(f, 1024, "%s: %s%s%s", state, m ? m : "", h ? " (hint: " : "", h ? h : "");
			if (h)
				strncat(f, ")", 1023 - strlen(f));
			fatal_config = f;
		}
	}
	stale = sqlstate_is(state, "JQ006");
	PQclear(r);
	return stale ? HW_DB_STALE : HW_DB_ERROR;
}

/* ------------------------------------------------------------------------
 * Reports on a lease
 * ------------------------------------------------------------------------ */

static void
id_text(const HwJob *job, char *buf, size_t n)
{
	snprintf(buf, n, "%lld", (long long) job->id);
}

/* Extend the lease; sets the next heartbeat a third of the lease away. */
HwDbResult
hw_report_heartbeat(HwJob *job)
{
	char		id[32];
	const char *v[2] = {id, job->token};
	PGresult   *res;
	char	   *err;
	HwDbResult	r;

	id_text(job, id, sizeof(id));
	r = hw_db_call("SELECT extract(epoch FROM hasched.heartbeat($1::bigint, $2) - clock_timestamp())::float8",
				   2, v, &res, &err);
	if (r == HW_DB_OK)
	{
		double		left = atof(PQgetvalue(res, 0, 0));

		job->lease_s = left;
		PQclear(res);
	}
	else if (err)
	{
		hw_log("WARNING", "job %lld: heartbeat refused: %s", (long long) job->id, err);
		free(err);
	}
	return r;
}

/*
 * Record the job's success with stdout as its result: as it is when it is
 * JSON, else as a JSON string (bounded, cleaned to UTF-8); empty output: no
 * result.
 */
HwDbResult
hw_report_complete(HwJob *job)
{
	char		id[32];
	const char *v[3] = {id, job->token, NULL};
	char	   *out = job->out.data;
	size_t		len = job->out.len;
	bool		is_json;
	char	   *err;
	HwDbResult	r;

	id_text(job, id, sizeof(id));
	if (out != NULL)
		hw_utf8_clean(out, len);
	is_json = out != NULL && !job->out_truncated && hw_json_valid(out, len);
	v[2] = out;
	if (out == NULL || len == 0)
		r = hw_db_call("SELECT hasched.complete($1::bigint, $2, NULL)", 2, v, NULL, &err);
	else if (is_json)
		r = hw_db_call("SELECT hasched.complete($1::bigint, $2, $3::jsonb)", 3, v, NULL, &err);
	else
		r = hw_db_call("SELECT hasched.complete($1::bigint, $2, to_jsonb($3::text))", 3, v, NULL, &err);
	if (r == HW_DB_ERROR && is_json)
	{
		/* JSON jsonb refuses (a number out of range, ...): as a string */
		hw_log("WARNING", "job %lld: result refused as JSON (%s), recorded as a string",
			   (long long) job->id, err ? err : "");
		free(err);
		r = hw_db_call("SELECT hasched.complete($1::bigint, $2, to_jsonb($3::text))", 3, v, NULL, &err);
	}
	if (r == HW_DB_STALE || r == HW_DB_ERROR)
	{
		hw_log("WARNING", "job %lld: completion refused: %s", (long long) job->id, err ? err : "");
		free(err);
	}
	return r;
}

/* Room for need more bytes; false when out of memory. */
static bool
buf_room(HwBuf *b, size_t need)
{
	size_t		cap = b->cap ? b->cap : 4096;
	char	   *d;

	if (b->len + need <= b->cap)
		return true;
	while (cap < b->len + need)
		cap *= 2;
	if ((d = realloc(b->data, cap)) == NULL)
		return false;
	b->data = d;
	b->cap = cap;
	return true;
}

/*
 * Append element i (NULL: SQL NULL) to an array literal: "{" before the
 * first, "," before the others; hw_array_end() closes it.
 */
static bool
array_add(HwBuf *b, int i, const char *s, size_t len)
{
	if (!buf_room(b, 2 * len + 8))
		return false;
	b->data[b->len++] = i == 0 ? '{' : ',';
	if (s == NULL)
	{
		memcpy(b->data + b->len, "NULL", 4);
		b->len += 4;
		return true;
	}
	b->data[b->len++] = '"';
	for (size_t k = 0; k < len; k++)
	{
		if (s[k] == '"' || s[k] == '\\')
			b->data[b->len++] = '\\';
		b->data[b->len++] = s[k];
	}
	b->data[b->len++] = '"';
	return true;
}

static bool
array_end(HwBuf *b)
{
	if (!buf_room(b, 2))
		return false;
	b->data[b->len++] = '}';
	b->data[b->len] = '\0';
	return true;
}

/*
 * Record the success of n jobs in one statement (one commit): the
 * array form of complete(), all or nothing.  Anything but HW_DB_OK: the
 * caller reports them one by one (which tells which one is refused).
 */
HwDbResult
hw_report_complete_many(HwJob **jobs, int n)
{
	HwBuf		ids = {0}, tokens = {0}, results = {0}, kinds = {0};
	const char *v[4];
	char	   *err = NULL;
	HwDbResult	r = HW_DB_ERROR;
	bool		ok = true;

	for (int i = 0; i < n && ok; i++)
	{
		HwJob	   *job = jobs[i];
		char		id[32];
		char	   *out = job->out.data;
		size_t		len = job->out.len;
		bool		is_json;

		snprintf(id, sizeof(id), "%lld", (long long) job->id);
		if (out != NULL)
			hw_utf8_clean(out, len);
		is_json = out != NULL && !job->out_truncated && hw_json_valid(out, len);
		ok = array_add(&ids, i, id, strlen(id)) &&
			array_add(&tokens, i, job->token, strlen(job->token)) &&
			array_add(&results, i, out != NULL && len > 0 ? out : NULL, len) &&
			array_add(&kinds, i, is_json ? "t" : "f", 1);
	}
	if (ok && n > 0 && array_end(&ids) && array_end(&tokens) && array_end(&results) &&
		array_end(&kinds))
	{
		v[0] = ids.data;
		v[1] = tokens.data;
		v[2] = results.data;
		v[3] = kinds.data;
		r = hw_db_call("SELECT hasched.complete($1::bigint[], $2::text[],"
					   " ARRAY(SELECT CASE WHEN r IS NULL THEN NULL WHEN k THEN r::jsonb ELSE to_jsonb(r) END"
					   "       FROM unnest($3::text[], $4::boolean[]) WITH ORDINALITY AS u(r, k, i)"
					   "       ORDER BY i))",
					   4, v, NULL, &err);
		if (r != HW_DB_OK && r != HW_DB_DOWN)
			hw_log("INFO", "%d completions in one statement refused (%s); reporting them one by one",
				   n, err ? err : "");
		free(err);
	}
	hw_buf_free(&ids);
	hw_buf_free(&tokens);
	hw_buf_free(&results);
	hw_buf_free(&kinds);
	return r;
}

HwDbResult
hw_report_fail(HwJob *job, const char *error, bool retry)
{
	char		id[32];
	const char *v[4] = {id, job->token, error, retry ? "true" : "false"};
	char	   *err;
	HwDbResult	r;

	id_text(job, id, sizeof(id));
	r = hw_db_call("SELECT hasched.fail($1::bigint, $2, $3, $4::boolean)", 4, v, NULL, &err);
	if (r == HW_DB_STALE || r == HW_DB_ERROR)
	{
		hw_log("WARNING", "job %lld: failure report refused: %s", (long long) job->id, err ? err : "");
		free(err);
	}
	return r;
}
