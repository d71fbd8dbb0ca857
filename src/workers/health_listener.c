/*-------------------------------------------------------------------------
 *
 * health_listener.c
 *		The HTTP health listener: a background worker, on every server
 *		(primary and standby), that answers GET /health, /primary, /replica
 *		and /metrics on hasched.health_port.
 *
 * It has no database connection: every answer comes from shared memory
 * (src/core/health.c), so it answers while the database is busy, locked or
 * in recovery.  It runs on the shared worker loop: the listening and client
 * sockets are in the loop's wait set, and everything happens in the
 * worker's one thread.
 *
 * Bounded by construction: a request (line and headers) may be at most
 * REQUEST_MAX bytes and must arrive within REQUEST_TIMEOUT_MS of its first
 * byte (or of the connection); an idle keep-alive connection is closed
 * after IDLE_TIMEOUT_MS; at most MAX_CLIENTS connections are open, and when
 * all are taken the longest idle one (or, when none is idle, the oldest
 * request) is closed for a new one.  Only GET (and HEAD) is served;
 * anything else is answered 405, a malformed request 400, an oversized one
 * 431, and the connection closed.  The request parser is plain C in
 * src/common/http_request.c (fuzzed by fuzz/http_fuzz.c).
 *
 * A response is built whole (a few kB) and sent as the socket takes it; a
 * client that does not read it is closed at its deadline like one that
 * does not finish its request.
 *
 * When the port cannot be bound (in use, bad address), the listener says
 * so in the log and in health(), and tries again every RETRY_BIND_MS; the
 * server runs on.
 *
 * IDENTIFICATION
 *		src/workers/health_listener.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/spin.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "common/http_request.h"
#include "workers/worker.h"

#define MAX_LISTEN			8
#define MAX_CLIENTS			128
#define REQUEST_MAX			4096
#define REQUEST_TIMEOUT_MS	5000
#define IDLE_TIMEOUT_MS		60000
#define RETRY_BIND_MS		10000

typedef struct Client
{
	pgsocket	sock;			/* PGINVALID_SOCKET: slot free */
	char		in[REQUEST_MAX];
	int			in_len;
	char	   *out;			/* response being sent (TopMemoryContext) */
	int			out_len;
	int			out_sent;
	bool		close_after;	/* close once the response is sent */
	TimestampTz deadline;		/* closed when this passes */
	TimestampTz last_used;
} Client;

static pgsocket listeners[MAX_LISTEN];
static int	n_listeners = 0;
static TimestampTz next_bind_attempt = 0;
static char last_bind_error[128] = "";
static Client *clients = NULL;	/* MAX_CLIENTS of them */
static bool answering = false;	/* inside client_answer_held() */

static bool client_answer_held(Client *c);

/* ------------------------------------------------------------------------
 * Listening sockets
 * ------------------------------------------------------------------------ */

static void
close_listeners(void)
{
	for (int i = 0; i < n_listeners; i++)
		closesocket(listeners[i]);
	n_listeners = 0;
}

/* Bind one address; false with *error set when it cannot. */
static bool
listen_on(const char *host, char *error, size_t errlen)
{
	struct addrinfo hints;
	struct addrinfo *res = NULL;
	char		port[16];
	int			rc;
	bool		ok = false;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV | AI_NUMERICHOST;
	snprintf(port, sizeof(port), "%d", hs_health_port);
	rc = getaddrinfo(strcmp(host, "*") == 0 ? NULL : host, port, &hints, &res);
	if (rc != 0)
	{
		snprintf(error, errlen, "invalid address \"%s\": %s", host, gai_strerror(rc));
		return false;
	}
	for (struct addrinfo *ai = res; ai != NULL && n_listeners < MAX_LISTEN; ai = ai->ai_next)
	{
		pgsocket	s = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		int			one = 1;

		if (s == PGINVALID_SOCKET)
		{
			snprintf(error, errlen, "could not create a socket for \"%s\": %m", host);
			continue;
		}
		(void) setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (ai->ai_family == AF_INET6)
			(void) setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		if (bind(s, ai->ai_addr, ai->ai_addrlen) != 0 || listen(s, 64) != 0)
		{
			snprintf(error, errlen, "could not listen on %s port %d: %m",
					 strcmp(host, "*") == 0 ? "*" : host, hs_health_port);
			closesocket(s);
			continue;
		}
		listeners[n_listeners++] = s;
		ok = true;
	}
	freeaddrinfo(res);
	return ok;
}

/*
 * Bind every address of hasched.health_listen_addresses, all or none: a
 * listener that serves only some of them would hide the error.
 */
static void
open_listeners(void)
{
	char	   *list = pstrdup(hs_health_listen_addresses ? hs_health_listen_addresses : "");
	char	   *save = NULL;
	char		error[128] = "";
	bool		ok = true;

	for (char *tok = strtok_r(list, ", \t", &save); tok != NULL && ok;
		 tok = strtok_r(NULL, ", \t", &save))
		ok = listen_on(tok, error, sizeof(error));
	if (ok && n_listeners == 0)
	{
		strlcpy(error, "hasched.health_listen_addresses is empty", sizeof(error));
		ok = false;
	}
	if (!ok)
	{
		close_listeners();
		hs_health_set_listener(MyProcPid, error);
		/* say it once per distinct error, not every retry */
		if (strcmp(error, last_bind_error) != 0)
			ereport(WARNING,
					(errmsg("hasched health listener: %s", error),
					 errdetail("GET /health, /primary, /replica and /metrics are not served; the listener tries again every %d seconds.",
							   RETRY_BIND_MS / 1000),
					 errhint("Choose a free port in hasched.health_port, or fix hasched.health_listen_addresses, and restart the server.")));
		strlcpy(last_bind_error, error, sizeof(last_bind_error));
		next_bind_attempt = GetCurrentTimestamp() + (int64) RETRY_BIND_MS * 1000;
		return;
	}
	ereport(LOG,
			(errmsg("hasched health listener: listening on %s port %d",
					hs_health_listen_addresses, hs_health_port)));
	last_bind_error[0] = '\0';
	hs_health_set_listener(MyProcPid, "");
}

/* ------------------------------------------------------------------------
 * Clients
 * ------------------------------------------------------------------------ */

static void
client_close(Client *c)
{
	if (c->sock != PGINVALID_SOCKET)
		closesocket(c->sock);
	if (c->out)
		pfree(c->out);
	c->sock = PGINVALID_SOCKET;
	c->out = NULL;
	c->in_len = c->out_len = c->out_sent = 0;
}

/*
 * A free slot.  When none is free, the longest idle connection makes room;
 * when none is idle either (every one is partway through a request, as
 * with a slowloris attack), the one nearest its deadline does: a request
 * that trickles in is older than one that is about to be answered.  So a
 * new client is always served.
 */
static Client *
client_slot(void)
{
	Client	   *idle = NULL;
	Client	   *oldest = NULL;

	for (int i = 0; i < MAX_CLIENTS; i++)
	{
		Client	   *c = &clients[i];

		if (c->sock == PGINVALID_SOCKET)
			return c;
		if (c->in_len == 0 && c->out == NULL &&
			(idle == NULL || c->last_used < idle->last_used))
			idle = c;
		if (oldest == NULL || c->deadline < oldest->deadline)
			oldest = c;
	}
	if (idle == NULL)
		idle = oldest;
	client_close(idle);
	return idle;
}

static void
accept_clients(pgsocket listener)
{
	for (;;)
	{
		pgsocket	s = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		Client	   *c;
		TimestampTz now;

		if (s == PGINVALID_SOCKET)
			return;				/* EAGAIN, or an error: nothing more to take */
		c = client_slot();
		if (c == NULL)
		{
			/* every connection is mid-request: this one waits for none */
			closesocket(s);
			continue;
		}
		now = GetCurrentTimestamp();
		c->sock = s;
		c->in_len = 0;
		c->close_after = false;
		c->last_used = now;
		c->deadline = now + (int64) REQUEST_TIMEOUT_MS * 1000;
	}
}

/* Send what is pending; the response done, keep the connection or close it. */
static void
client_send(Client *c)
{
	while (c->out != NULL && c->out_sent < c->out_len)
	{
		ssize_t		n = send(c->sock, c->out + c->out_sent, c->out_len - c->out_sent,
							 MSG_NOSIGNAL);

		if (n < 0)
		{
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				return;
			client_close(c);
			return;
		}
		c->out_sent += (int) n;
	}
	if (c->out == NULL)
		return;
	pfree(c->out);
	c->out = NULL;
	c->out_len = c->out_sent = 0;
	if (c->close_after)
	{
		char		discard[4096];

		/*
		 * Closing a socket with unread input resets the connection, which
		 * can make the client lose the answer just sent (a 431 to a client
		 * still sending its headers): end our side first and discard what
		 * has arrived, a bounded amount, without waiting for more.
		 */
		(void) shutdown(c->sock, SHUT_WR);
		for (int i = 0; i < 16 && recv(c->sock, discard, sizeof(discard), MSG_DONTWAIT) > 0; i++)
			;
		client_close(c);
		return;
	}
	c->last_used = GetCurrentTimestamp();
	c->deadline = c->last_used + (int64) IDLE_TIMEOUT_MS * 1000;

	/*
	 * Pipelined requests already read wait for no socket event: answer
	 * them now (a response that did not fit in the socket used to leave
	 * them until the client sent more, or the connection timed out).
	 */
	if (c->in_len > 0)
	{
		c->deadline = c->last_used + (int64) REQUEST_TIMEOUT_MS * 1000;
		if (!answering)			/* else the loop there goes on with them */
			(void) client_answer_held(c);
	}
}

/* Queue a whole response for the client (body may be NULL). */
static void
respond(Client *c, int status, const char *reason, const char *type,
		const char *body, bool head_only, const char *extra_headers)
{
	StringInfoData r;
	int			blen = body ? (int) strlen(body) : 0;
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	initStringInfo(&r);
	appendStringInfo(&r, "HTTP/1.1 %d %s\r\n"
					 "Content-Type: %s\r\n"
					 "Content-Length: %d\r\n"
					 "Cache-Control: no-store\r\n"
					 "%s%s\r\n",
					 status, reason, type, blen,
					 extra_headers ? extra_headers : "",
					 c->close_after ? "Connection: close\r\n" : "");
	if (body && !head_only)
		appendBinaryStringInfo(&r, body, blen);
	MemoryContextSwitchTo(old);
	c->out = r.data;
	c->out_len = r.len;
	c->out_sent = 0;
	client_send(c);
}

/* ------------------------------------------------------------------------
 * The answers
 * ------------------------------------------------------------------------ */

static void
json_string(StringInfo s, const char *v)
{
	appendStringInfoChar(s, '"');
	for (const char *p = v; *p; p++)
	{
		unsigned char ch = (unsigned char) *p;

		if (ch == '"' || ch == '\\')
			appendStringInfo(s, "\\%c", ch);
		else if (ch < 0x20)
			appendStringInfo(s, "\\u%04x", ch);
		else
			appendStringInfoChar(s, ch);
	}
	appendStringInfoChar(s, '"');
}


/* The transition counters of /metrics: name, help text, counter. */
typedef struct CounterMetric
{
	const char *name;
	const char *help;
	int			counter;
} CounterMetric;

static const CounterMetric job_counters[] = {
	{"hasched_jobs_submitted_total", "Jobs submitted on this server since it started (submit, submit_many, schedules).", HS_CTR_SUBMITTED},
	{"hasched_jobs_started_total", "Attempts started (leased, or dispatched) on this server since it started.", HS_CTR_STARTED},
	{"hasched_jobs_completed_total", "Attempts that completed (succeeded) on this server since it started.", HS_CTR_SUCCEEDED},
	{"hasched_jobs_failed_total", "Attempts that failed and will be retried, on this server since it started.", HS_CTR_FAILED},
	{"hasched_jobs_dead_total", "Jobs that went dead (attempts spent, or no retry wanted) on this server since it started.", HS_CTR_DEAD},
	{"hasched_jobs_cancelled_total", "Jobs cancelled on this server since it started.", HS_CTR_CANCELLED},
};

/* hasched_submits_refused_total's reasons (the help text is theirs together) */
static const CounterMetric refusals[] = {
	{"quota", NULL, HS_CTR_REFUSED_QUOTA},
	{"rate", NULL, HS_CTR_REFUSED_RATE},
	{"read_only", NULL, HS_CTR_REFUSED_READ_ONLY},
};

/*
 * GET /health: the rows of health(), JSON; 200 unless a component failed
 * (the first row, overall, is the worst of them), else 503.
 */
static int
health_body(StringInfo s)
{
	HsHealthRow rows[HS_HEALTH_MAX_ROWS];
	int			n = hs_health_report(rows);

	appendStringInfoString(s, "{\"status\": ");
	json_string(s, rows[0].status);
	appendStringInfoString(s, ", \"components\": [");
	for (int i = 0; i < n; i++)
	{
		appendStringInfoString(s, i ? ", {\"component\": " : "{\"component\": ");
		json_string(s, rows[i].component);
		appendStringInfoString(s, ", \"status\": ");
		json_string(s, rows[i].status);
		appendStringInfo(s, ", \"healthy\": %s, \"detail\": ", rows[i].healthy ? "true" : "false");
		json_string(s, rows[i].detail);
		appendStringInfoChar(s, '}');
	}
	appendStringInfoString(s, "]}\n");
	return rows[0].healthy ? 200 : 503;
}

static void
metric(StringInfo s, const char *name, const char *help, const char *type)
{
	appendStringInfo(s, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/*
 * The dispatcher's circuit breakers: hasched_circuit_state{kind, name}, 0
 * closed, 1 open, 2 half open (none without hasched.amqp_url).
 */
static void
circuit_metrics(StringInfo s)
{
	HsCircuitInfo *c;
	int			n;

	if (hs_amqp_url == NULL || hs_amqp_url[0] == '\0')
		return;
	c = palloc(sizeof(HsCircuitInfo) * HS_MAX_CIRCUITS);
	n = hs_circuit_snapshot(c, HS_MAX_CIRCUITS);
	metric(s, "hasched_circuit_state",
		   "State of a RabbitMQ dispatcher circuit breaker: 0 closed, 1 open, 2 half open.", "gauge");
	for (int i = 0; i < n; i++)
	{
		appendStringInfo(s, "hasched_circuit_state{kind=\"%s\",name=\"",
						 hs_circuit_kind_name(c[i].kind));
		for (const char *p = c[i].name; *p; p++)
		{
			if (*p == '"' || *p == '\\')
				appendStringInfoChar(s, '\\');
			if (*p != '\n')
				appendStringInfoChar(s, *p);
		}
		appendStringInfo(s, "\"} %d\n", c[i].state);
	}
	pfree(c);
}


/* A label value, escaped as the text format wants (\\, \", \n). */
static void
label_value(StringInfo s, const char *v)
{
	for (const char *p = v; *p; p++)
	{
		if (*p == '\\' || *p == '"')
			appendStringInfoChar(s, '\\');
		if (*p == '\n')
			appendStringInfoString(s, "\\n");
		else
			appendStringInfoChar(s, *p);
	}
}

/* one sample of hasched_jobs for each unfinished state of a queue */
static void
queue_jobs(StringInfo s, const HsQueueFigures *q)
{
	static const HsJobState states[] = {
		HS_STATE_SCHEDULED, HS_STATE_PENDING, HS_STATE_FAILED,
		HS_STATE_RUNNING, HS_STATE_DISPATCHED
	};

	for (int i = 0; i < lengthof(states); i++)
	{
		appendStringInfoString(s, "hasched_jobs{queue=\"");
		label_value(s, q->queue);
		appendStringInfo(s, "\",state=\"%s\"} " INT64_FORMAT "\n",
						 hs_state_name(states[i]), q->jobs[states[i]]);
	}
}

/*
 * GET /metrics: the Prometheus text format (version 0.0.4), from shared
 * memory only.  Every name is listed in the README ("Metrics").
 */
static void
metrics_body(StringInfo s)
{
	HsHealthRow rows[HS_HEALTH_MAX_ROWS];
	int			n = hs_health_report(rows);
	HaschedShared snap;
	HsFigures  *fig = hs_figures_alloc();
	bool		fig_ok = hs_figures_read(fig);
	uint64		counters[HS_NUM_COUNTERS];
	uint64		buckets[HS_LATENCY_BUCKETS + 1];
	uint64		sum_us;
	uint64		cumulative = 0;
	int			by_state[HS_EXEC_BUSY + 1] = {0};
	static const char *const exec_states[] = {"free", "starting", "idle", "woken", "busy"};
	static const char *const statuses[] = {"ok", "degraded", "failed"};
	static const char *const modes[] = {"normal", "read_only", "paused"};
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&hs_shared->mutex);
	memcpy(&snap, hs_shared, offsetof(HaschedShared, writer_since));
	for (int i = 0; i < hs_max_executors; i++)
		by_state[hs_executors[i].state]++;
	SpinLockRelease(&hs_shared->mutex);
	hs_metrics_read_counters(counters, buckets, &sum_us);

	/* the server and its processes */
	metric(s, "hasched_up", "1 while the health listener answers.", "gauge");
	appendStringInfoString(s, "hasched_up 1\n");
	metric(s, "hasched_active_primary", "1 on the primary whose scheduler is active (GET /primary).", "gauge");
	appendStringInfo(s, "hasched_active_primary %d\n", hs_health_active_primary() ? 1 : 0);
	metric(s, "hasched_streaming_standby", "1 on a standby whose WAL receiver streams (GET /replica).", "gauge");
	appendStringInfo(s, "hasched_streaming_standby %d\n", hs_health_streaming() ? 1 : 0);
	metric(s, "hasched_epoch", "The scheduler epoch this server runs in (0 before its first round as primary).", "gauge");
	appendStringInfo(s, "hasched_epoch %d\n", snap.epoch);
	metric(s, "hasched_failovers_total", "Epochs this server's scheduler opened since the server started (promotions, ZooKeeper leadership terms).", "counter");
	appendStringInfo(s, "hasched_failovers_total " UINT64_FORMAT "\n", counters[HS_CTR_FAILOVERS]);
	metric(s, "hasched_scheduler_up", "1 while the scheduler process runs.", "gauge");
	appendStringInfo(s, "hasched_scheduler_up %d\n", snap.scheduler_pid != 0 ? 1 : 0);
	metric(s, "hasched_scheduler_last_round_age_seconds",
		   "Seconds since the scheduler's last round (as primary: of the primary's work; absent before the first).", "gauge");
	if (snap.scheduler_role == HS_ROLE_PRIMARY ? snap.last_tick != 0 : snap.last_round != 0)
		appendStringInfo(s, "hasched_scheduler_last_round_age_seconds %.3f\n",
						 (double) (now - (snap.scheduler_role == HS_ROLE_PRIMARY ?
										  snap.last_tick : snap.last_round)) / 1e6);
	metric(s, "hasched_executors", "Executor slots by state.", "gauge");
	for (int i = 1; i <= HS_EXEC_BUSY; i++)
		appendStringInfo(s, "hasched_executors{state=\"%s\"} %d\n", exec_states[i], by_state[i]);
	metric(s, "hasched_executors_max", "hasched.max_executors.", "gauge");
	appendStringInfo(s, "hasched_executors_max %d\n", hs_max_executors);

	/* health, as in GET /health */
	metric(s, "hasched_component_healthy", "1 when the component's status is not failed (as in GET /health).", "gauge");
	for (int i = 0; i < n; i++)
	{
		appendStringInfoString(s, "hasched_component_healthy{component=\"");
		label_value(s, rows[i].component);
		appendStringInfo(s, "\"} %d\n", rows[i].healthy ? 1 : 0);
	}
	metric(s, "hasched_component_status", "1 for the component's status (ok, degraded, failed), 0 for the others.", "gauge");
	for (int i = 0; i < n; i++)
		for (int k = 0; k < lengthof(statuses); k++)
		{
			appendStringInfoString(s, "hasched_component_status{component=\"");
			label_value(s, rows[i].component);
			appendStringInfo(s, "\",status=\"%s\"} %d\n", statuses[k],
							 strcmp(rows[i].status, statuses[k]) == 0 ? 1 : 0);
		}

	/* the mode, as the scheduler last read it */
	metric(s, "hasched_mode", "1 for the mode set by set_mode() (normal, read_only, paused), 0 for the others; none before the scheduler read it.", "gauge");
	if (fig_ok && fig->mode != HS_MODE_UNKNOWN)
		for (int k = 0; k < lengthof(modes); k++)
			appendStringInfo(s, "hasched_mode{mode=\"%s\"} %d\n", modes[k],
							 strcmp(hs_mode_name(fig->mode), modes[k]) == 0 ? 1 : 0);

	/* the automatic modes (degrade.c) */
	{
		HsDegradeStatus st;

		hs_degrade_status(&st);
		metric(s, "hasched_auto_read_only", "1 while the automatic read-only mode (overload) is in force.", "gauge");
		appendStringInfo(s, "hasched_auto_read_only %d\n", st.read_only ? 1 : 0);
		metric(s, "hasched_holdback", "1 while lower priorities are held back under a backlog.", "gauge");
		appendStringInfo(s, "hasched_holdback %d\n", st.holdback ? 1 : 0);
	}

	/* the jobs the scheduler counted */
	metric(s, "hasched_jobs",
		   "Unfinished jobs by queue and state, as the scheduler last counted them (every hasched.stats_interval); the deepest hasched.metrics_max_queues queues, the others summed as queue \"(other)\".",
		   "gauge");
	if (fig_ok && fig->counted_at != 0)
		for (int i = 0; i < fig->n_queues; i++)
			queue_jobs(s, &fig->queues[i]);
	metric(s, "hasched_queue_oldest_due_seconds",
		   "How long the oldest due waiting job of the queue had waited when counted (absent: none due).", "gauge");
	if (fig_ok && fig->counted_at != 0)
		for (int i = 0; i < fig->n_queues; i++)
			if (fig->queues[i].oldest_due != 0)
			{
				appendStringInfoString(s, "hasched_queue_oldest_due_seconds{queue=\"");
				label_value(s, fig->queues[i].queue);
				appendStringInfo(s, "\"} %.3f\n",
								 (double) Max(fig->counted_at - fig->queues[i].oldest_due, 0) / 1e6);
			}
	metric(s, "hasched_backlog_jobs", "Waiting jobs (scheduled, pending, failed to retry) in every queue, when counted.", "gauge");
	metric(s, "hasched_oldest_due_seconds", "How long the oldest due waiting job of any queue had waited when counted (0: none due).", "gauge");
	metric(s, "hasched_queues_counted", "Queues with unfinished jobs when counted (those past hasched.metrics_max_queues are in queue \"(other)\").", "gauge");
	metric(s, "hasched_stats_age_seconds", "Seconds since the scheduler counted the jobs.", "gauge");
	if (fig_ok && fig->counted_at != 0)
	{
		const HsQueueFigures *t = &fig->total;

		appendStringInfo(s, "hasched_backlog_jobs " INT64_FORMAT "\n",
						 t->jobs[HS_STATE_SCHEDULED] + t->jobs[HS_STATE_PENDING] + t->jobs[HS_STATE_FAILED]);
		appendStringInfo(s, "hasched_oldest_due_seconds %.3f\n",
						 t->oldest_due != 0 ? (double) Max(fig->counted_at - t->oldest_due, 0) / 1e6 : 0.0);
		appendStringInfo(s, "hasched_queues_counted %d\n", fig->queues_total);
		appendStringInfo(s, "hasched_stats_age_seconds %.3f\n", (double) (now - fig->counted_at) / 1e6);
	}

	/* counters of this server since it started */
	for (int i = 0; i < lengthof(job_counters); i++)
	{
		metric(s, job_counters[i].name, job_counters[i].help, "counter");
		appendStringInfo(s, "%s " UINT64_FORMAT "\n", job_counters[i].name,
						 counters[job_counters[i].counter]);
	}
	metric(s, "hasched_submits_refused_total", "Submits refused since the server started: quota (JQ001), rate (JQ002), read_only (JQ003).", "counter");
	for (int i = 0; i < lengthof(refusals); i++)
		appendStringInfo(s, "hasched_submits_refused_total{reason=\"%s\"} " UINT64_FORMAT "\n",
						 refusals[i].name, counters[refusals[i].counter]);

	/* submit -> start */
	metric(s, "hasched_job_start_delay_seconds",
		   "From a job being due (its run_at: the submit, for a job to run now; the end of the backoff, for a retry) to its attempt starting.",
		   "histogram");
	for (int i = 0; i < HS_LATENCY_BUCKETS; i++)
	{
		cumulative += buckets[i];
		appendStringInfo(s, "hasched_job_start_delay_seconds_bucket{le=\"%g\"} " UINT64_FORMAT "\n",
						 hs_latency_bounds[i], cumulative);
	}
	cumulative += buckets[HS_LATENCY_BUCKETS];
	appendStringInfo(s, "hasched_job_start_delay_seconds_bucket{le=\"+Inf\"} " UINT64_FORMAT "\n", cumulative);
	appendStringInfo(s, "hasched_job_start_delay_seconds_sum %.6f\n", (double) sum_us / 1e6);
	appendStringInfo(s, "hasched_job_start_delay_seconds_count " UINT64_FORMAT "\n", cumulative);

	/* the dispatcher's circuit breakers, when hasched.amqp_url is set */
	circuit_metrics(s);
}

/* Answer one parsed request. */
static void
answer(Client *c, const HttpRequest *req)
{
	bool		head_only = req->method == HTTP_HEAD;
	StringInfoData body;

	c->close_after = !req->keep_alive;
	if (req->method == HTTP_OTHER)
	{
		c->close_after = true;
		respond(c, 405, "Method Not Allowed", "text/plain", "only GET is served\n", false,
				"Allow: GET, HEAD\r\n");
		return;
	}

	initStringInfo(&body);
	if (strcmp(req->path, "/health") == 0)
	{
		int			status = health_body(&body);

		respond(c, status, status == 200 ? "OK" : "Service Unavailable",
				"application/json", body.data, head_only, NULL);
	}
	else if (strcmp(req->path, "/primary") == 0)
	{
		bool		yes = hs_health_active_primary();

		respond(c, yes ? 200 : 503, yes ? "OK" : "Service Unavailable", "text/plain",
				yes ? "primary: scheduling\n" : "not the active primary\n", head_only, NULL);
	}
	else if (strcmp(req->path, "/replica") == 0)
	{
		bool		yes = hs_health_streaming();

		respond(c, yes ? 200 : 503, yes ? "OK" : "Service Unavailable", "text/plain",
				yes ? "replica: streaming\n" : "not a streaming standby\n", head_only, NULL);
	}
	else if (strcmp(req->path, "/metrics") == 0)
	{
		metrics_body(&body);
		respond(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8",
				body.data, head_only, NULL);
	}
	else
		respond(c, 404, "Not Found", "text/plain",
				"not found: try /health, /primary, /replica or /metrics\n", head_only, NULL);
	pfree(body.data);
}

/*
 * Answer the complete requests held in c->in (pipelining allowed), one
 * response at a time: stop when a response waits for the socket, or the
 * rest is incomplete.  The parser (src/common/http_request.c) refuses a
 * bad start at once, so garbage is answered without waiting for more.
 * False when the connection was closed.
 */
static bool
client_answer_held(Client *c)
{
	answering = true;
	while (c->sock != PGINVALID_SOCKET && c->out == NULL && c->in_len > 0)
	{
		HttpRequest req;

		switch (http_parse_request(c->in, c->in_len, REQUEST_MAX, &req))
		{
			case HTTP_INCOMPLETE:
				answering = false;
				return true;
			case HTTP_BAD:
				c->close_after = true;
				c->in_len = 0;
				respond(c, 400, "Bad Request", "text/plain", "bad request\n", false, NULL);
				break;
			case HTTP_TOO_LARGE:
				c->close_after = true;
				c->in_len = 0;
				respond(c, 431, "Request Header Fields Too Large", "text/plain",
						"request too large\n", false, NULL);
				break;
			case HTTP_OK:
				c->in_len -= (int) req.length;
				memmove(c->in, c->in + req.length, c->in_len);
				answer(c, &req);
				/* the next request held, if any, has its own time */
				if (c->sock != PGINVALID_SOCKET && c->in_len > 0)
					c->deadline = GetCurrentTimestamp() + (int64) REQUEST_TIMEOUT_MS * 1000;
				break;
		}
	}
	answering = false;
	return c->sock != PGINVALID_SOCKET;
}

/* Read what arrived and answer what it completes. */
static void
client_read(Client *c)
{
	for (;;)
	{
		ssize_t		n;

		if (!client_answer_held(c) || c->out != NULL || c->in_len >= REQUEST_MAX)
			return;				/* closed, or a response waits for the socket */
		n = recv(c->sock, c->in + c->in_len, REQUEST_MAX - c->in_len, 0);
		if (n == 0)
		{
			client_close(c);
			return;
		}
		if (n < 0)
		{
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				client_close(c);
			return;
		}
		if (c->in_len == 0)
			c->deadline = GetCurrentTimestamp() + (int64) REQUEST_TIMEOUT_MS * 1000;
		c->in_len += (int) n;
	}
}

/* ------------------------------------------------------------------------
 * The loop
 * ------------------------------------------------------------------------ */

/* Close what overstayed; bind if not bound.  Wait until the next deadline. */
static long
listener_round(void)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz next = now + (int64) 1000 * 1000;

	if (n_listeners == 0 && now >= next_bind_attempt)
		open_listeners();
	if (n_listeners == 0)
		next = Min(next, next_bind_attempt);
	for (int i = 0; i < MAX_CLIENTS; i++)
	{
		Client	   *c = &clients[i];

		if (c->sock == PGINVALID_SOCKET)
			continue;
		if (now >= c->deadline)
			client_close(c);
		else
			next = Min(next, c->deadline);
	}
	return next <= now ? 0 : (long) ((next - now + 999) / 1000);
}

static int
listener_sockets(HsWaitSocket *socks, int max)
{
	int			n = 0;

	for (int i = 0; i < n_listeners && n < max; i++)
	{
		socks[n].sock = listeners[i];
		socks[n++].events = WL_SOCKET_READABLE;
	}
	for (int i = 0; i < MAX_CLIENTS && n < max; i++)
	{
		if (clients[i].sock == PGINVALID_SOCKET)
			continue;
		socks[n].sock = clients[i].sock;
		socks[n++].events = clients[i].out ? WL_SOCKET_WRITEABLE : WL_SOCKET_READABLE;
	}
	return n;
}

static void
listener_socket_ready(pgsocket sock, uint32 events)
{
	for (int i = 0; i < n_listeners; i++)
		if (listeners[i] == sock)
		{
			accept_clients(sock);
			return;
		}
	for (int i = 0; i < MAX_CLIENTS; i++)
	{
		Client	   *c = &clients[i];

		if (c->sock != sock)
			continue;
		if (c->out != NULL)
			client_send(c);
		else
			client_read(c);
		return;
	}
}

static void
listener_detach(int code, Datum arg)
{
	close_listeners();
	hs_health_set_listener(0, "not running");
}

void
hasched_health_listener_main(Datum main_arg)
{
	static const HsWorkerLoop loop = {
		.name = "health listener",
		.round = listener_round,
		.after_error = NULL,
		.error_pause_ms = 1000,
		.sockets = listener_sockets,
		.socket_ready = listener_socket_ready,
	};

	hs_worker_signals(false);
	clients = MemoryContextAllocZero(TopMemoryContext, sizeof(Client) * MAX_CLIENTS);
	for (int i = 0; i < MAX_CLIENTS; i++)
		clients[i].sock = PGINVALID_SOCKET;
	hs_health_set_listener(MyProcPid, "starting");
	on_shmem_exit(listener_detach, (Datum) 0);
	hs_worker_run(&loop);
}

/* Register the listener; called from _PG_init when hasched.health_port > 0. */
void
hs_register_health_listener(void)
{
	/* shared memory only: it never connects to a database */
	hs_register_static_worker("health listener", "hasched_health_listener_main", false,
							  BgWorkerStart_PostmasterStart);
}
