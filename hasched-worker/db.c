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
 * 5 s).  So a failover is met by one probe per worker per backoff step,
 * not by a storm of reconnects, and a worker finds the new primary at
 * most about 5 s after it takes writes (15 s, the cap before, made AMQP
 * jobs pause up to 24 s in make chaos against 13 s for the rest).
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
#define BREAKER_CAP_USEC	5000000

static PGconn *conn = NULL;
static HwBreakerState breaker = HW_BREAKER_CLOSED;
static int	failures = 0;
static int64_t open_until = 0;
static const char *fatal_config = NULL;

static HwDbResult classify(PGconn *c, PGresult *r, PGresult **res, char **errmsg);
static void sent_collect(bool block);

/*
 * The statement sent with hw_db_send() whose result has not been read yet
 * (at most one), and its outcome once read (until hw_db_sent_result()).
 */
static bool sent_busy = false;
static bool sent_done = false;
static HwDbResult sent_r;
static PGresult *sent_res = NULL;
static char *sent_err = NULL;
static PGresult *sent_keep = NULL;	/* the results read so far: the one kept */

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
	if (sent_busy)
	{
		/* its outcome is unknown: the caller reports again (idempotent) */
		sent_busy = false;
		sent_done = true;
		sent_r = HW_DB_DOWN;
		PQclear(sent_keep);
		sent_keep = NULL;
	}
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
	if (sent_busy)
		sent_collect(false);
	return any;
}

/* ------------------------------------------------------------------------
 * A statement sent without waiting for its result
 *
 * The loop sends the reports of its successes (and, in pull mode, the
 * next claim) with hw_db_send() and goes on starting and reaping commands
 * while the server commits; the result is read when the socket is readable
 * (hw_db_consume_notifies()) and taken with hw_db_sent_result().  Any
 * other call waits for it first (hw_db_wait()): one statement at a time.
 * ------------------------------------------------------------------------ */

/*
 * Read the sent statement's results that are there (block: wait for all
 * of them); after the last, its outcome is ready.
 */
static void
sent_collect(bool block)
{
	PGresult   *r;

	for (;;)
	{
		ExecStatusType st;

		if (!block && PQisBusy(conn))
			return;				/* more to come */
		if ((r = PQgetResult(conn)) == NULL)
			break;
		/* keep the first error, else the last statement's result */
		st = PQresultStatus(sent_keep);
		if (sent_keep == NULL || st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
		{
			PQclear(sent_keep);
			sent_keep = r;
		}
		else
			PQclear(r);
	}
	r = sent_keep;
	sent_keep = NULL;
	sent_busy = false;
	sent_res = NULL;
	sent_err = NULL;
	sent_r = classify(conn, r, &sent_res, &sent_err);
	sent_done = true;
}

/*
 * Send sql (one or more statements, no parameters: several run in one
 * transaction) and return at once.  HW_DB_OK: sent; HW_DB_DOWN: no
 * usable connection (the breaker says when to try again).
 */
HwDbResult
hw_db_send(const char *sql)
{
	PGconn	   *c;

	hw_db_wait();
	c = hw_db_get();
	if (c == NULL)
		return HW_DB_DOWN;
	if (!PQsendQuery(c, sql))
	{
		size_t		n = strlen(PQerrorMessage(c));

		hw_log("WARNING", "database unusable: %.*s", (int) (n > 0 ? n - 1 : 0), PQerrorMessage(c));
		connection_lost();
		return HW_DB_DOWN;
	}
	sent_busy = true;
	sent_done = false;
	return HW_DB_OK;
}

/* Is a sent statement's result still to come? */
bool
hw_db_sent_busy(void)
{
	return sent_busy;
}

/* Wait for the sent statement's result, if one is still to come. */
void
hw_db_wait(void)
{
	if (sent_busy && conn != NULL)
		sent_collect(true);
}

/*
 * The sent statement's outcome, once it is there (false before): as
 * hw_db_call() returns it, with its last result in *res (the caller
 * clears it) and the server's message in *errmsg (malloc'd).
 */
bool
hw_db_sent_result(HwDbResult *r, PGresult **res, char **errmsg)
{
	if (!sent_done)
		return false;
	sent_done = false;
	*r = sent_r;
	*res = sent_res;
	*errmsg = sent_err;
	sent_res = NULL;
	sent_err = NULL;
	return true;
}

/* s as a literal for the connection's statements (malloc'd), NULL: no connection, no memory. */
char *
hw_db_literal(const char *s, size_t len)
{
	char	   *lit,
			   *copy;

	if (conn == NULL)
		return NULL;
	lit = PQescapeLiteral(conn, s, len);
	if (lit == NULL)
		return NULL;
	copy = strdup(lit);
	PQfreemem(lit);
	return copy;
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
	PGconn	   *c;

	if (res)
		*res = NULL;
	if (errmsg)
		*errmsg = NULL;
	/* one statement at a time on the connection: the one sent first ends first */
	hw_db_wait();
	c = hw_db_get();
	if (c == NULL)
		return HW_DB_DOWN;
	return classify(c, PQexecParams(c, sql, nparams, NULL, values, NULL, NULL, 0), res, errmsg);
}

/*
 * What a statement's result means (see hw_db_call); takes r.
 */
static HwDbResult
classify(PGconn *c, PGresult *r, PGresult **res, char **errmsg)
{
	ExecStatusType st;
	const char *state;
	bool		stale;

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
 * The array form of complete() (one commit for many jobs, all or nothing):
 * ids, tokens, results (text), whether each result is JSON (else recorded
 * as a JSON string).
 */
#define COMPLETE_MANY_SQL(a1, a2, a3, a4) \
	"SELECT hasched.complete(" a1 "::bigint[], " a2 "::text[]," \
	" ARRAY(SELECT CASE WHEN r IS NULL THEN NULL WHEN k THEN r::jsonb ELSE to_jsonb(r) END" \
	"       FROM unnest(" a3 "::text[], " a4 "::boolean[]) WITH ORDINALITY AS u(r, k, i)" \
	"       ORDER BY i))"

/* The four array literals of COMPLETE_MANY_SQL for n jobs; false: out of memory. */
static bool
complete_arrays(HwJob **jobs, int n, HwBuf a[4])
{
	bool		ok = n > 0;

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
		ok = array_add(&a[0], i, id, strlen(id)) &&
			array_add(&a[1], i, job->token, strlen(job->token)) &&
			array_add(&a[2], i, out != NULL && len > 0 ? out : NULL, len) &&
			array_add(&a[3], i, is_json ? "t" : "f", 1);
	}
	for (int k = 0; k < 4 && ok; k++)
		ok = array_end(&a[k]);
	return ok;
}

/*
 * Send, without waiting (hw_db_send()), the report of n successes (none:
 * n = 0) followed by the statement then (NULL: none), in one transaction:
 * the claim that fills the slots they free commits with them.  The
 * outcome comes with hw_db_sent_result(): an error is either statement's,
 * and neither is recorded.
 */
HwDbResult
hw_report_send(HwJob **jobs, int n, const char *then)
{
	HwBuf		a[4] = {{0}};
	char	   *lit[4] = {NULL, NULL, NULL, NULL};
	char	   *sql = NULL;
	HwDbResult	r = HW_DB_ERROR;
	bool		ok = true;

	if (hw_db_get() == NULL)
		return HW_DB_DOWN;
	hw_db_wait();
	if (n > 0)
	{
		ok = complete_arrays(jobs, n, a);
		for (int k = 0; k < 4 && ok; k++)
			ok = (lit[k] = hw_db_literal(a[k].data, a[k].len)) != NULL;
		if (ok)
		{
			const char *fmt = COMPLETE_MANY_SQL("%s", "%s", "%s", "%s") "%s%s";
			size_t		len = strlen(fmt) + strlen(then ? then : "") + 4;

			for (int k = 0; k < 4; k++)
				len += strlen(lit[k]);
			if ((sql = malloc(len)) != NULL)
				snprintf(sql, len, fmt, lit[0], lit[1], lit[2], lit[3],
						 then ? "; " : "", then ? then : "");
		}
	}
	else if (then != NULL)
		sql = strdup(then);
	if (sql != NULL)
		r = hw_db_send(sql);
	else if (hw_db_get() == NULL)
		r = HW_DB_DOWN;
	free(sql);
	for (int k = 0; k < 4; k++)
	{
		free(lit[k]);
		hw_buf_free(&a[k]);
	}
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
