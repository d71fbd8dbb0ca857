/*-------------------------------------------------------------------------
 *
 * source_pull.c
 *		The pull job source: jobs of a pull queue taken with
 *		hasched.claim().  The session listens with hasched.listen(queue), so
 *		a commit that makes jobs of the queue due wakes the worker through a
 *		NOTIFY on the connection's socket; polling every --poll-interval
 *		finds what no NOTIFY announces (jobs due later, retries after a
 *		backoff, a pooler that drops notifications).
 *
 * IDENTIFICATION
 *		hasched-worker/source_pull.c
 *
 *-------------------------------------------------------------------------
 */
#include "hw.h"

#include <stdlib.h>
#include <string.h>

typedef struct PullState
{
	const char *queue;
	const char *worker;
	bool		listen;
	bool		listening;		/* hasched.listen() succeeded on this connection */
} PullState;

static int
pull_fd(HwSource *src)
{
	PullState  *ps = src->state;

	/* also while a statement's result is to come */
	return ps->listening || hw_db_sent_busy() ? hw_db_socket() : -1;
}

static bool
pull_readable(HwSource *src)
{
	return hw_db_consume_notifies();
}

/* LISTEN again on a new connection (directly: the breaker is not involved). */
static void
pull_reconnected(HwSource *src, PGconn *conn)
{
	PullState  *ps = src->state;
	const char *v[1] = {ps->queue};
	PGresult   *r;

	ps->listening = false;
	if (!ps->listen)
		return;
	r = PQexecParams(conn, "SELECT hasched.listen($1)", 1, NULL, v, NULL, NULL, 0);
	if (PQresultStatus(r) == PGRES_TUPLES_OK)
	{
		ps->listening = true;
		hw_log("INFO", "listening on channel \"%s\" for jobs of queue \"%s\"",
			   PQgetvalue(r, 0, 0), ps->queue);
	}
	else
	{
		/*
		 * An older hasched without listen(), or a server that refuses the
		 * worker (not the primary, unknown queue): poll; the claim finds
		 * out about the latter and says so.
		 */
		hw_log("WARNING", "cannot listen for jobs of queue \"%s\", polling every %.3f s: %s",
			   ps->queue, (double) hw_cfg.poll_usec / 1e6, PQresultErrorMessage(r));
	}
	PQclear(r);
}

#define CLAIM_COLUMNS \
	"SELECT job_id, token, payload::text, attempt, priority, tenant," \
	" extract(epoch FROM timeout)::float8," \
	" extract(epoch FROM lease_until - clock_timestamp())::float8"

/* The jobs of a claim's result into jobs[0..]; their count. */
static int
pull_take(HwSource *src, PGresult *res, HwJob **jobs, int max, bool *more)
{
	int			n = PQntuples(res);

	/* a full batch: more may wait */
	*more = n >= max;

	for (int i = 0; i < n && i < max; i++)
	{
		HwJob	   *job = jobs[i];

		job->id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
		snprintf(job->token, sizeof(job->token), "%s", PQgetvalue(res, i, 1));
		job->payload = strdup(PQgetvalue(res, i, 2));
		job->attempt = atoi(PQgetvalue(res, i, 3));
		job->priority = atoi(PQgetvalue(res, i, 4));
		snprintf(job->tenant, sizeof(job->tenant), "%s", PQgetvalue(res, i, 5));
		job->timeout_s = atof(PQgetvalue(res, i, 6));
		job->lease_s = atof(PQgetvalue(res, i, 7));
		job->source_data = NULL;
		if (job->payload == NULL)
		{
			hw_log("FATAL", "out of memory");
			exit(70);
		}
	}
	return n < max ? n : max;
}

static int
pull_fetch(HwSource *src, HwJob **jobs, int max)
{
	PullState  *ps = src->state;
	char		maxs[16];
	const char *v[3] = {ps->queue, ps->worker, maxs};
	PGresult   *res;
	char	   *err;
	HwDbResult	r;
	int			n;

	snprintf(maxs, sizeof(maxs), "%d", max);
	r = hw_db_call(CLAIM_COLUMNS " FROM hasched.claim($1, $2, $3::integer)", 3, v, &res, &err);
	if (r != HW_DB_OK)
	{
		if (err)
		{
			hw_log("WARNING", "claim on queue \"%s\" failed: %s", ps->queue, err);
			free(err);
		}
		return -1;
	}
	{
		bool		more;

		n = pull_take(src, res, jobs, max, &more);
	}
	PQclear(res);
	return n;
}

/* The claim as a statement of its own (literals: it is sent with the reports). */
static char *
pull_fetch_sql(HwSource *src, int max)
{
	PullState  *ps = src->state;
	char	   *q = hw_db_literal(ps->queue, strlen(ps->queue));
	char	   *w = hw_db_literal(ps->worker, strlen(ps->worker));
	char	   *sql = NULL;
	size_t		len;

	if (q != NULL && w != NULL)
	{
		len = strlen(CLAIM_COLUMNS) + strlen(q) + strlen(w) + 64;
		if ((sql = malloc(len)) != NULL)
			snprintf(sql, len, CLAIM_COLUMNS " FROM hasched.claim(%s, %s, %d)", q, w, max);
	}
	free(q);
	free(w);
	return sql;
}

static void
pull_settle(HwSource *src, HwJob *job, bool recorded)
{
	/* nothing to acknowledge: the database row is the job */
}

HwSource *
hw_source_pull(const char *queue, const char *worker, bool listen)
{
	HwSource   *src = calloc(1, sizeof(HwSource));
	PullState  *ps = calloc(1, sizeof(PullState));

	if (src == NULL || ps == NULL)
		return NULL;
	ps->queue = queue;
	ps->worker = worker;
	ps->listen = listen;
	src->name = "pull";
	src->fd = pull_fd;
	src->readable = pull_readable;
	src->fetch = pull_fetch;
	src->fetch_sql = pull_fetch_sql;
	src->fetch_take = pull_take;
	src->settle = pull_settle;
	src->reconnected = pull_reconnected;
	src->state = ps;
	return src;
}
