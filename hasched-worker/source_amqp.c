/*-------------------------------------------------------------------------
 *
 * source_amqp.c
 *		The AMQP job source: jobs of an amqp queue, delivered by RabbitMQ
 *		(librabbitmq-c 0.11, one connection, one channel, no threads).
 *
 * The contract with the dispatcher is in the README ("RabbitMQ transport",
 * Messages); in short: the queue Q's jobs come on the three durable queues
 * hasched.Q.{high,medium,low}; a message's body is a JSON object with the
 * job id, attempt and lease token.  The worker starts deliveries with
 * hasched.start(job_ids[], tokens[]), one row per delivery:
 *   - run: the job is ours (dispatched -> running, or a redelivery of a
 *     job whose worker died before acking): run it;
 *   - finished: that attempt's outcome is already recorded: ack, drop;
 *   - stale: the token is not the job's (re-dispatched, cancelled): ack,
 *     drop; but while the job is still pending only after STALE_RETRY_USEC:
 *     the message may come before the dispatcher recorded the broker's
 *     confirm (see below).
 * The message is acked only after the report committed (settle()).
 *
 * Deliveries are read from the socket into three local FIFOs (one per
 * band) as soon as they arrive; they are started highest band first, as
 * many as there are free slots, by a statement sent with the reports of
 * the jobs just finished (fetch_sql: one transaction, one commit, and the
 * loop goes on meanwhile, as the claim of pull mode does); fetch() sends
 * the same statement and waits, while the database is down.
 * basic.qos prefetch_count is --concurrency, plus --prefetch while the
 * commands are short (the loop's rule, given through amqp_ahead()), so the
 * broker never hands this worker more than it can start soon.  The count
 * is per consumer (quorum queues have no global prefetch) and fixed for a
 * consumer's life: a change cancels the three consumers and consumes
 * again; when it drops, the deliveries not started are given back.
 *
 * Lost connection: every delivery not yet acked is forgotten (the broker
 * gives it again, to this worker or another: start() with the same token
 * answers that the job runs or is finished); a delivery that comes again
 * for a job this worker still runs under the same token is attached to the
 * running job instead of running it twice.  Reconnects go through the
 * URLs in order, then wait (exponential backoff with full jitter, 200 ms
 * doubling up to 5 s) before the next round.
 *
 * The body's job_id, lease_token, priority and tenant are read here
 * (json.c): a body that is not the contract's is dropped before it could
 * fail a transaction shared with reports; the payload comes from start().
 *
 * IDENTIFICATION
 *		hasched-worker/source_amqp.c
 *
 *-------------------------------------------------------------------------
 */
#include "hw.h"

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <openssl/ssl.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#define AMQP_CHANNEL		1
#define AMQP_FRAME_MAX		131072
#define AMQP_HEARTBEAT_S	30
#define CONNECT_TIMEOUT_S	3
#define RECONNECT_BASE_USEC	200000
#define RECONNECT_CAP_USEC	5000000
/*
 * start() answers JQ006 for a message whose job is not dispatched yet: the
 * dispatcher records a job as dispatched only after the broker's confirm,
 * and the broker may deliver the message first.  So a stale answer that
 * says the job still waits (pending) is asked again (5 ms doubling to
 * 500 ms) for this long before the message is acked and dropped as truly
 * stale; any other stale answer drops it at once.
 */
#define STALE_RETRY_USEC	5000000

static const char *const band_name[HW_AMQP_BANDS] = {"high", "medium", "low"};

typedef struct Delivery
{
	uint64_t	tag;			/* delivery tag on connection gen */
	uint64_t	gen;
	int			band;
	char	   *body;			/* NUL-terminated message body */
	int64_t		stale_since;	/* start() first answered JQ006 */
	int64_t		retry_at;		/* start() again then */
	int			stale_tries;
	/* from the body (parse_body) */
	int64_t		job_id;
	char		token[HS_TOKEN_BUFSZ];
	int			attempt;
	int			priority;
	char		tenant[128];
	struct Delivery *next;
} Delivery;

typedef struct AmqpState
{
	HwAmqpUrl  *urls;
	int			nurls;
	int			url;			/* the URL connected to (or tried last) */
	const char *queue;
	const char *queue_type;
	int			prefetch;		/* --concurrency */
	int			ahead;			/* what the loop allows beyond it now */
	int			qos;			/* the prefetch count the consumers have */
	int64_t		qos_raised_at;	/* when it last grew (raised at most every 5 s) */

	amqp_connection_state_t conn;
	bool		up;
	uint64_t	gen;			/* connection generation */
	int			failures;		/* rounds of failed connects in a row */
	int64_t		next_connect;
	int64_t		down_since;
	char		error[512];		/* the last connection error (health, logs) */
	int64_t		last_drain;		/* the library last read (and sent heartbeats) */

	Delivery   *head[HW_AMQP_BANDS];
	Delivery   *tail[HW_AMQP_BANDS];
	int			npending;
	Delivery   *inflight;		/* started, not settled */
	Delivery   *retry;			/* start() said stale: asked again soon */
	Delivery  **cycle;			/* in the statement sent with the reports */
	int			ncycle;
	int			cycle_cap;
	int			singles;		/* a batch was refused: start this many one by one */
} AmqpState;

/* ------------------------------------------------------------------------
 * URLs
 * ------------------------------------------------------------------------ */

/*
 * Parse a comma-separated list of AMQP URLs.  NULL on success (*urls,
 * *nurls set), else why the list is malformed (static or malloc'd text).
 */
const char *
hw_amqp_parse_urls(const char *list, HwAmqpUrl **urls, int *nurls)
{
	static char why[512];
	char	   *copy = strdup(list);
	char	   *save = NULL;
	int			n = 0;

	*urls = NULL;
	*nurls = 0;
	if (copy == NULL)
		return "out of memory";
	for (char *p = copy; *p; p++)
		if (*p == ',')
			n++;
	*urls = calloc((size_t) n + 1, sizeof(HwAmqpUrl));
	if (*urls == NULL)
		return "out of memory";
	n = 0;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
	{
		HwAmqpUrl  *u = &(*urls)[n];
		char	   *work = strdup(tok);
		int			rc;

		if (work == NULL)
			return "out of memory";
		if (strncmp(tok, "amqp://", 7) != 0 && strncmp(tok, "amqps://", 8) != 0)
		{
			snprintf(why, sizeof(why), "\"%s\" is not an AMQP URL (amqp://USER:PASSWORD@HOST:PORT/VHOST)", tok);
			return why;
		}
		amqp_default_connection_info(&u->info);
		rc = amqp_parse_url(work, &u->info);
		if (rc != AMQP_STATUS_OK)
		{
			snprintf(why, sizeof(why), "\"%s\" is not an AMQP URL (amqp://USER:PASSWORD@HOST:PORT/VHOST): %s",
					 tok, amqp_error_string2(rc));
			return why;
		}
		/* the AMQP URI rules: amqp://host:port/ names the vhost "" (the broker refuses it) */
		if (u->info.vhost == NULL || u->info.vhost[0] == '\0')
		{
			snprintf(why, sizeof(why), "\"%s\" names the empty vhost; for the vhost \"/\" leave out"
					 " the trailing slash (amqp://HOST:PORT) or write amqp://HOST:PORT/%%2f", tok);
			return why;
		}
		if (u->info.port <= 0 || u->info.port > 65535)
		{
			snprintf(why, sizeof(why), "\"%s\": port %d is out of range", tok, u->info.port);
			return why;
		}
		/* for the log and health: no password */
		snprintf(u->shown, sizeof(u->shown), "%s://%s@%s:%d/%s", u->info.ssl ? "amqps" : "amqp",
				 u->info.user, u->info.host,
				 u->info.port, strcmp(u->info.vhost, "/") == 0 ? "" : u->info.vhost);
		/* work is kept: info points into it */
		n++;
	}
	if (n == 0)
	{
		snprintf(why, sizeof(why), "no URL in \"%s\"", list);
		return why;
	}
	*nurls = n;
	free(copy);
	return NULL;
}

/* Is any of the URLs amqps://? */
bool
hw_amqp_any_tls(const HwAmqpUrl *urls, int nurls)
{
	for (int i = 0; i < nurls; i++)
		if (urls[i].info.ssl)
			return true;
	return false;
}

/* ------------------------------------------------------------------------
 * The connection
 * ------------------------------------------------------------------------ */

/*
 * The socket of a connection to u: TLS for amqps:// (the broker's
 * certificate checked against --amqp-ca-file, or the system's CAs, and its
 * name against the URL's host, unless --amqp-no-verify), else TCP.  NULL
 * with st->error set.
 */
static amqp_socket_t *
new_socket(AmqpState *st, const HwAmqpUrl *u)
{
	amqp_socket_t *sock;
	int			rc;

	if (!u->info.ssl)
	{
		if ((sock = amqp_tcp_socket_new(st->conn)) == NULL)
			snprintf(st->error, sizeof(st->error), "out of memory");
		return sock;
	}
	if ((sock = amqp_ssl_socket_new(st->conn)) == NULL)
	{
		snprintf(st->error, sizeof(st->error), "cannot set up TLS (out of memory)");
		return NULL;
	}
	amqp_ssl_socket_set_verify_peer(sock, !hw_cfg.amqp_no_verify);
	amqp_ssl_socket_set_verify_hostname(sock, !hw_cfg.amqp_no_verify);
	if (hw_cfg.amqp_ca_file != NULL)
	{
		if ((rc = amqp_ssl_socket_set_cacert(sock, hw_cfg.amqp_ca_file)) != AMQP_STATUS_OK)
		{
			snprintf(st->error, sizeof(st->error), "cannot load the CA certificates of --amqp-ca-file \"%s\": %s",
					 hw_cfg.amqp_ca_file, amqp_error_string2(rc));
			return NULL;
		}
	}
	/* librabbitmq 0.11 loads no CA by itself */
	else if (SSL_CTX_set_default_verify_paths(amqp_ssl_socket_get_context(sock)) != 1)
	{
		snprintf(st->error, sizeof(st->error), "cannot load the system's CA certificates; give --amqp-ca-file");
		return NULL;
	}
	return sock;
}

/* The text of a failed RPC reply, into st->error. */
static void
reply_error(AmqpState *st, const char *what, amqp_rpc_reply_t r)
{
	switch (r.reply_type)
	{
		case AMQP_RESPONSE_NORMAL:
			snprintf(st->error, sizeof(st->error), "%s: ok", what);
			break;
		case AMQP_RESPONSE_NONE:
			snprintf(st->error, sizeof(st->error), "%s: no reply", what);
			break;
		case AMQP_RESPONSE_LIBRARY_EXCEPTION:
			snprintf(st->error, sizeof(st->error), "%s: %s", what, amqp_error_string2(r.library_error));
			break;
		case AMQP_RESPONSE_SERVER_EXCEPTION:
			if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD)
			{
				amqp_connection_close_t *m = r.reply.decoded;

				snprintf(st->error, sizeof(st->error), "%s: the broker closed the connection: %d %.*s",
						 what, m->reply_code, (int) m->reply_text.len, (char *) m->reply_text.bytes);
			}
			else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD)
			{
				amqp_channel_close_t *m = r.reply.decoded;

				snprintf(st->error, sizeof(st->error), "%s: the broker closed the channel: %d %.*s",
						 what, m->reply_code, (int) m->reply_text.len, (char *) m->reply_text.bytes);
			}
			else
				snprintf(st->error, sizeof(st->error), "%s: the broker answered method 0x%08x",
						 what, r.reply.id);
			break;
	}
}

/* A refusal no retry cures: credentials, vhost, queue arguments. */
static bool
reply_is_config_error(amqp_rpc_reply_t r)
{
	if (r.reply_type != AMQP_RESPONSE_SERVER_EXCEPTION)
		return false;
	if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD)
	{
		int			code = ((amqp_connection_close_t *) r.reply.decoded)->reply_code;

		return code == AMQP_ACCESS_REFUSED || code == AMQP_NOT_ALLOWED;
	}
	if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD)
	{
		int			code = ((amqp_channel_close_t *) r.reply.decoded)->reply_code;

		return code == AMQP_ACCESS_REFUSED || code == AMQP_PRECONDITION_FAILED ||
			code == AMQP_NOT_ALLOWED;
	}
	return false;
}

static void
forget_pending(AmqpState *st)
{
	for (int b = 0; b < HW_AMQP_BANDS; b++)
	{
		Delivery   *d = st->head[b];

		while (d)
		{
			Delivery   *next = d->next;

			free(d->body);
			free(d);
			d = next;
		}
		st->head[b] = st->tail[b] = NULL;
	}
	st->npending = 0;
	while (st->retry)
	{
		Delivery   *d = st->retry;

		st->retry = d->next;
		free(d->body);
		free(d);
	}
}

/* Drop the connection; what was delivered and not acked comes again. */
static void
disconnect(AmqpState *st, bool schedule)
{
	if (st->conn != NULL)
	{
		/* a dead socket: close it without the closing handshake */
		amqp_destroy_connection(st->conn);
		st->conn = NULL;
	}
	if (st->up)
	{
		hw_log("WARNING", "broker connection to %s lost: %s; deliveries not acked come again",
			   st->urls[st->url].shown, st->error);
		st->down_since = hw_now();
	}
	st->up = false;
	st->gen++;
	forget_pending(st);
	if (schedule)
		st->next_connect = hw_now();
}

static Delivery *pop(AmqpState *st);
static void push_front(AmqpState *st, Delivery *d);

/* basic.qos, then a consumer on each band's queue; false: st->error says why */
static bool
consume(AmqpState *st, int qos, bool *config_error)
{
	amqp_rpc_reply_t r;

	if (qos > 65535)
		qos = 65535;
	amqp_basic_qos(st->conn, AMQP_CHANNEL, 0, (uint16_t) qos, 0);
	r = amqp_get_rpc_reply(st->conn);
	if (r.reply_type != AMQP_RESPONSE_NORMAL)
	{
		reply_error(st, "basic.qos", r);
		return false;
	}
	for (int b = 0; b < HW_AMQP_BANDS; b++)
	{
		char		qname[128];
		char		ctag[16];

		snprintf(qname, sizeof(qname), "hasched.%s.%s", st->queue, band_name[b]);
		snprintf(ctag, sizeof(ctag), "band%d", b);
		amqp_basic_consume(st->conn, AMQP_CHANNEL, amqp_cstring_bytes(qname),
						   amqp_cstring_bytes(ctag), 0, 0, 0, amqp_empty_table);
		r = amqp_get_rpc_reply(st->conn);
		if (r.reply_type != AMQP_RESPONSE_NORMAL)
		{
			char		what[200];

			snprintf(what, sizeof(what), "consuming queue \"%s\"", qname);
			reply_error(st, what, r);
			*config_error = reply_is_config_error(r);
			return false;
		}
	}
	st->qos = qos;
	return true;
}

/* basic.cancel of the three consumers; false: st->error says why */
static bool
cancel_consumers(AmqpState *st)
{
	for (int b = 0; b < HW_AMQP_BANDS; b++)
	{
		char		ctag[16];

		snprintf(ctag, sizeof(ctag), "band%d", b);
		if (amqp_basic_cancel(st->conn, AMQP_CHANNEL, amqp_cstring_bytes(ctag)) == NULL)
		{
			reply_error(st, "basic.cancel", amqp_get_rpc_reply(st->conn));
			return false;
		}
	}
	return true;
}

/*
 * The deliveries not started (and those waiting for a retry) back to the
 * broker; how many.
 */
static int
give_back(AmqpState *st)
{
	int			given = 0;
	Delivery   *d;

	while (st->retry)
	{
		d = st->retry;
		st->retry = d->next;
		d->next = NULL;
		push_front(st, d);
	}
	while (st->up && (d = pop(st)) != NULL)
	{
		if (d->gen == st->gen)
			(void) amqp_basic_reject(st->conn, AMQP_CHANNEL, d->tag, 1);
		free(d->body);
		free(d);
		given++;
	}
	return given;
}

/* One connection attempt to one URL; true when consuming. */
static bool
connect_one(AmqpState *st, int i, bool *config_error)
{
	HwAmqpUrl  *u = &st->urls[i];
	amqp_socket_t *sock;
	struct timeval tv = {CONNECT_TIMEOUT_S, 0};
	amqp_rpc_reply_t r;
	int			rc;
	amqp_table_entry_t arg;
	amqp_table_t args;

	*config_error = false;
	st->conn = amqp_new_connection();
	if (st->conn == NULL)
	{
		snprintf(st->error, sizeof(st->error), "out of memory");
		goto fail;
	}
	if ((sock = new_socket(st, u)) == NULL)
		goto fail;
	(void) amqp_set_handshake_timeout(st->conn, &tv);
	(void) amqp_set_rpc_timeout(st->conn, &tv);
	rc = amqp_socket_open_noblock(sock, u->info.host, u->info.port, &tv);
	if (rc != AMQP_STATUS_OK)
	{
		snprintf(st->error, sizeof(st->error), "cannot connect to %s:%d%s: %s", u->info.host,
				 u->info.port, u->info.ssl ? " (TLS)" : "", amqp_error_string2(rc));
		goto fail;
	}
	r = amqp_login(st->conn, u->info.vhost, 0, AMQP_FRAME_MAX, AMQP_HEARTBEAT_S,
				   AMQP_SASL_METHOD_PLAIN, u->info.user, u->info.password);
	if (r.reply_type != AMQP_RESPONSE_NORMAL)
	{
		reply_error(st, "login", r);
		/* RabbitMQ closes the socket on bad credentials before a reply */
		if (reply_is_config_error(r) ||
			(r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
			 r.library_error == AMQP_STATUS_CONNECTION_CLOSED))
		{
			*config_error = true;
			snprintf(st->error + strlen(st->error), sizeof(st->error) - strlen(st->error),
					 " (check the user, password and vhost of the URL)");
		}
		goto fail;
	}
	amqp_channel_open(st->conn, AMQP_CHANNEL);
	r = amqp_get_rpc_reply(st->conn);
	if (r.reply_type != AMQP_RESPONSE_NORMAL)
	{
		reply_error(st, "channel.open", r);
		goto fail;
	}

	arg.key = amqp_cstring_bytes("x-queue-type");
	arg.value.kind = AMQP_FIELD_KIND_UTF8;
	arg.value.value.bytes = amqp_cstring_bytes(st->queue_type);
	args.num_entries = 1;
	args.entries = &arg;
	for (int b = 0; b < HW_AMQP_BANDS; b++)
	{
		char		qname[128];

		snprintf(qname, sizeof(qname), "hasched.%s.%s", st->queue, band_name[b]);
		amqp_queue_declare(st->conn, AMQP_CHANNEL, amqp_cstring_bytes(qname), 0, 1, 0, 0, args);
		r = amqp_get_rpc_reply(st->conn);
		if (r.reply_type != AMQP_RESPONSE_NORMAL)
		{
			char		what[200];

			snprintf(what, sizeof(what), "declaring queue \"%s\" (x-queue-type %s)", qname, st->queue_type);
			reply_error(st, what, r);
			if (reply_is_config_error(r))
			{
				*config_error = true;
				snprintf(st->error + strlen(st->error), sizeof(st->error) - strlen(st->error),
						 " (does --amqp-queue-type match the server's hasched.amqp_queue_type?)");
			}
			goto fail;
		}
	}
	if (!consume(st, st->prefetch + st->ahead, config_error))
		goto fail;
	st->url = i;
	st->up = true;
	st->gen++;
	st->failures = 0;
	st->error[0] = '\0';
	hw_log("INFO", "consuming hasched.%s.{high,medium,low} on %s (prefetch %d, %s queues)",
		   st->queue, u->shown, st->qos, st->queue_type);
	return true;

fail:
	if (st->conn != NULL)
		amqp_destroy_connection(st->conn);
	st->conn = NULL;
	return false;
}

/* Try the URLs in order; on failure wait for the next round. */
static void
try_connect(AmqpState *st)
{
	int64_t		delay;

	for (int i = 0; i < st->nurls; i++)
	{
		bool		config_error;

		if (connect_one(st, i, &config_error))
			return;
		hw_log("WARNING", "broker %s: %s", st->urls[i].shown, st->error);
		if (config_error)
		{
			static char fatal[1024];

			snprintf(fatal, sizeof(fatal), "broker %s refused the worker: %s",
					 st->urls[i].shown, st->error);
			hw_set_fatal_config(fatal);
			return;
		}
	}
	if (st->down_since == 0)
		st->down_since = hw_now();
	st->failures++;
	delay = hs_backoff_usec(st->failures, RECONNECT_BASE_USEC, RECONNECT_CAP_USEC,
							(double) random() / (double) RAND_MAX);
	st->next_connect = hw_now() + delay;
	hw_log("INFO", "no broker reachable; next attempt in %lld ms", (long long) (delay / 1000));
}

/* ------------------------------------------------------------------------
 * Deliveries
 * ------------------------------------------------------------------------ */

static int
band_of(amqp_bytes_t routing_key)
{
	size_t		n = routing_key.len;
	const char *k = routing_key.bytes;

	for (int b = 0; b < HW_AMQP_BANDS; b++)
	{
		size_t		l = strlen(band_name[b]);

		if (n > l && k[n - l - 1] == '.' && memcmp(k + n - l, band_name[b], l) == 0)
			return b;
	}
	return HW_AMQP_BANDS - 1;
}

static void
ack(AmqpState *st, uint64_t gen, uint64_t tag)
{
	int			rc;

	if (!st->up || gen != st->gen)
		return;					/* that connection is gone: the broker gives it again */
	rc = amqp_basic_ack(st->conn, AMQP_CHANNEL, tag, 0);
	if (rc != AMQP_STATUS_OK)
	{
		snprintf(st->error, sizeof(st->error), "basic.ack: %s", amqp_error_string2(rc));
		disconnect(st, true);
	}
}

/*
 * The acks of a batch of reports go in one TCP segment: the socket is
 * corked while they are written, uncorked after (which sends them).  One
 * send() per ack had the broker read and handle each by itself.
 */
static void
amqp_settle_batch(HwSource *src, bool begin)
{
	AmqpState  *st = src->state;

	hs_socket_cork(st->up ? amqp_get_sockfd(st->conn) : -1, begin);
}

/* A frame that is not a delivery: the broker closes the channel or the connection, cancels. */
static void
other_frame(AmqpState *st)
{
	amqp_frame_t f;
	int			rc = amqp_simple_wait_frame(st->conn, &f);

	if (rc != AMQP_STATUS_OK)
	{
		snprintf(st->error, sizeof(st->error), "%s", amqp_error_string2(rc));
		disconnect(st, true);
		return;
	}
	if (f.frame_type != AMQP_FRAME_METHOD)
		return;
	switch (f.payload.method.id)
	{
		case AMQP_CONNECTION_CLOSE_METHOD:
			{
				amqp_connection_close_t *m = f.payload.method.decoded;

				snprintf(st->error, sizeof(st->error), "the broker closed the connection: %d %.*s",
						 m->reply_code, (int) m->reply_text.len, (char *) m->reply_text.bytes);
				disconnect(st, false);
				st->next_connect = hw_now() + RECONNECT_BASE_USEC;
				return;
			}
		case AMQP_CHANNEL_CLOSE_METHOD:
			{
				amqp_channel_close_t *m = f.payload.method.decoded;

				snprintf(st->error, sizeof(st->error), "the broker closed the channel: %d %.*s",
						 m->reply_code, (int) m->reply_text.len, (char *) m->reply_text.bytes);
				disconnect(st, false);
				st->next_connect = hw_now() + RECONNECT_BASE_USEC;
				return;
			}
		case AMQP_BASIC_CANCEL_METHOD:
			/* the queue was deleted: consume again after a reconnect */
			snprintf(st->error, sizeof(st->error), "the broker cancelled a consumer (queue deleted?)");
			disconnect(st, false);
			st->next_connect = hw_now() + RECONNECT_BASE_USEC;
			return;
		default:
			return;
	}
}

/* Read everything the socket and the library hold; false when the connection is lost. */
static bool
drain(AmqpState *st)
{
	bool		got = false;

	st->last_drain = hw_now();
	while (st->up)
	{
		amqp_envelope_t env;
		struct timeval zero = {0, 0};
		amqp_rpc_reply_t r;
		Delivery   *d;

		amqp_maybe_release_buffers(st->conn);
		r = amqp_consume_message(st->conn, &env, &zero, 0);
		if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION)
		{
			if (r.library_error == AMQP_STATUS_TIMEOUT)
				break;
			if (r.library_error == AMQP_STATUS_UNEXPECTED_STATE)
			{
				other_frame(st);
				continue;
			}
			snprintf(st->error, sizeof(st->error), "%s", amqp_error_string2(r.library_error));
			disconnect(st, true);
			break;
		}
		if (r.reply_type != AMQP_RESPONSE_NORMAL)
		{
			reply_error(st, "consume", r);
			disconnect(st, true);
			break;
		}
		d = calloc(1, sizeof(Delivery));
		if (d == NULL || (d->body = malloc(env.message.body.len + 1)) == NULL)
		{
			hw_log("FATAL", "out of memory");
			exit(70);
		}
		memcpy(d->body, env.message.body.bytes, env.message.body.len);
		d->body[env.message.body.len] = '\0';
		d->tag = env.delivery_tag;
		d->gen = st->gen;
		d->band = band_of(env.routing_key);
		if (st->tail[d->band])
			st->tail[d->band]->next = d;
		else
			st->head[d->band] = d;
		st->tail[d->band] = d;
		st->npending++;
		got = true;
		amqp_destroy_envelope(&env);
	}
	return got;
}

static Delivery *
pop(AmqpState *st)
{
	for (int b = 0; b < HW_AMQP_BANDS; b++)
	{
		Delivery   *d = st->head[b];

		if (d)
		{
			st->head[b] = d->next;
			if (st->head[b] == NULL)
				st->tail[b] = NULL;
			d->next = NULL;
			st->npending--;
			return d;
		}
	}
	return NULL;
}

static void push_front(AmqpState *st, Delivery *d);

/* Deliveries whose start() is due again go back to the front of their band. */
static void
retry_due(AmqpState *st)
{
	int64_t		now = hw_now();
	Delivery  **pp = &st->retry;

	while (*pp)
	{
		Delivery   *d = *pp;

		if (d->gen != st->gen)
		{
			/* its connection is gone: the broker gives it again */
			*pp = d->next;
			free(d->body);
			free(d);
		}
		else if (d->retry_at <= now)
		{
			*pp = d->next;
			push_front(st, d);
		}
		else
			pp = &d->next;
	}
}

static void
push_front(AmqpState *st, Delivery *d)
{
	d->next = st->head[d->band];
	st->head[d->band] = d;
	if (st->tail[d->band] == NULL)
		st->tail[d->band] = d;
	st->npending++;
}

static void
drop(AmqpState *st, Delivery *d)
{
	ack(st, d->gen, d->tag);
	free(d->body);
	free(d);
}

/* ------------------------------------------------------------------------
 * The HwSource interface
 * ------------------------------------------------------------------------ */

static int
amqp_fd(HwSource *src)
{
	AmqpState  *st = src->state;

	return st->up ? amqp_get_sockfd(st->conn) : -1;
}

static bool
amqp_readable(HwSource *src)
{
	AmqpState  *st = src->state;

	(void) drain(st);
	/* lost: look again soon (reconnect); else jobs may be waiting */
	return st->npending > 0 || !st->up;
}

/*
 * The contract's members of a delivery's body, read here: the statement
 * that starts deliveries takes their job ids and tokens as arrays, and a
 * body that is not the contract's is dropped before it could fail the
 * transaction it would share with reports.  False: not the contract's
 * (no integer job_id, no well-formed lease_token).  The body is freed (the
 * job's payload comes from start()): a delivery with no body was read.
 */
static bool
parse_body(Delivery *d)
{
	size_t		len = strlen(d->body);
	const char *v;
	size_t		n;
	char		num[32];
	char	   *end;
	int32_t		epoch;
	int32_t		attempt;
	int64_t		lease_id;

	if (!hw_json_member(d->body, len, "job_id", &v, &n) || n == 0 || n >= sizeof(num))
		return false;
	memcpy(num, v, n);
	num[n] = '\0';
	errno = 0;
	d->job_id = strtoll(num, &end, 10);
	if (errno != 0 || *end != '\0' || end == num)
		return false;
	if (!hw_json_member(d->body, len, "lease_token", &v, &n) ||
		!hw_json_string_value(v, n, d->token, sizeof(d->token)) ||
		!hs_token_parse(d->token, &epoch, &attempt, &lease_id))
		return false;
	d->attempt = attempt;
	d->priority = 0;
	if (hw_json_member(d->body, len, "priority", &v, &n) && n < sizeof(num))
	{
		memcpy(num, v, n);
		num[n] = '\0';
		d->priority = atoi(num);
	}
	/* the submitter's role; "" from a dispatcher older than the tenant member */
	if (!hw_json_member(d->body, len, "tenant", &v, &n) ||
		!hw_json_string_value(v, n, d->tenant, sizeof(d->tenant)))
		d->tenant[0] = '\0';
	free(d->body);
	d->body = NULL;
	return true;
}

/*
 * The deliveries to start now: up to max (one while st->singles says a
 * batch was refused), highest band first, into ds[]; bodies that are not
 * the contract's are acked and dropped on the way.
 */
static int
take_deliveries(AmqpState *st, Delivery **ds, int max)
{
	int			n = 0;

	if (st->singles > 0 && max > 1)
		max = 1;
	while (n < max && st->npending > 0)
	{
		Delivery   *d = pop(st);

		/* (a delivery back from a refused or retried start was read already) */
		if (d->body != NULL && !parse_body(d))
		{
			hw_log("WARNING", "delivery %llu is not a job message (no integer job_id and lease token): acked and dropped; body: %.200s",
				   (unsigned long long) d->tag, d->body);
			drop(st, d);
			continue;
		}
		ds[n++] = d;
	}
	if (n > 0 && st->singles > 0)
		st->singles--;
	return n;
}

/*
 * The two array literals of start() for ds[0..n): job ids and tokens
 * (digits and colons only: parse_body checked them).  False: no memory.
 */
static bool
start_arrays(Delivery **ds, int n, char **ids, char **toks)
{
	size_t		il = 0,
				tl = 0;

	*ids = malloc((size_t) n * 22 + 3);
	*toks = malloc((size_t) n * (HS_TOKEN_BUFSZ + 1) + 3);
	if (*ids == NULL || *toks == NULL)
	{
		free(*ids);
		free(*toks);
		return false;
	}
	(*ids)[il++] = '{';
	(*toks)[tl++] = '{';
	for (int i = 0; i < n; i++)
	{
		il += (size_t) sprintf(*ids + il, "%s%lld", i ? "," : "", (long long) ds[i]->job_id);
		tl += (size_t) sprintf(*toks + tl, "%s%s", i ? "," : "", ds[i]->token);
	}
	strcpy(*ids + il, "}");
	strcpy(*toks + tl, "}");
	return true;
}

/*
 * start() of many messages (the array form): one row per delivery, in
 * their order: job_id, outcome (run, finished, stale), the job's state,
 * and for run its payload, timeout and the seconds its lease has left.
 */
#define START_COLUMNS \
	"SELECT s.job_id, s.outcome, s.state, s.payload::text," \
	" extract(epoch FROM s.timeout)::float8," \
	" extract(epoch FROM s.lease_until - clock_timestamp())::float8"

/*
 * start() said stale.  The job still waits to be dispatched (pending; also
 * scheduled, or failed waiting for its retry): the message may have come
 * before the dispatcher recorded its confirm: ask again soon, for up to
 * STALE_RETRY_USEC.  Any other state (a newer attempt dispatched or
 * running, the job finished or cancelled, no such job): truly stale, drop
 * it now (holding it would hold a prefetch slot).
 */
static void
stale(AmqpState *st, Delivery *d, const char *state)
{
	int64_t		now = hw_now();
	bool		waiting = state != NULL &&
		(strcmp(state, "pending") == 0 || strcmp(state, "scheduled") == 0 ||
		 strcmp(state, "failed") == 0);

	if (d->stale_since == 0)
		d->stale_since = now;
	if (waiting && now - d->stale_since < STALE_RETRY_USEC)
	{
		int64_t		delay = 5000LL << (d->stale_tries < 7 ? d->stale_tries : 7);

		if (d->stale_tries == 0)
			hw_log("INFO", "delivery %llu: job %lld is still %s (its dispatch not recorded yet): asked again",
				   (unsigned long long) d->tag, (long long) d->job_id, state);
		d->stale_tries++;
		d->retry_at = now + (delay < 500000 ? delay : 500000);
		d->next = st->retry;
		st->retry = d;
		return;
	}
	if (waiting)
		hw_log("INFO", "delivery %llu: stale lease token %s for job %lld (the job is %s) for %.1f s: acked and dropped",
			   (unsigned long long) d->tag, d->token, (long long) d->job_id, state,
			   (double) (now - d->stale_since) / 1e6);
	else
		hw_log("INFO", "delivery %llu: stale lease token %s for job %lld (%s%s): acked and dropped",
			   (unsigned long long) d->tag, d->token, (long long) d->job_id,
			   state ? "the job is " : "no such job", state ? state : "");
	drop(st, d);
}

/*
 * Row i of start()'s result is delivery d's, to run: fills *job and
 * returns true; false when a delivery of the same job and token already
 * runs here (given again after a reconnect: attached to the running job).
 */
static bool
started(AmqpState *st, Delivery *d, PGresult *res, int i, HwJob *job)
{
	Delivery   *dup;

	/* given again while this worker runs it (a reconnect): keep running it */
	for (dup = st->inflight; dup; dup = dup->next)
		if (dup->job_id == d->job_id && strcmp(dup->token, d->token) == 0)
			break;
	if (dup != NULL)
	{
		hw_log("INFO", "job %lld: delivered again while it runs here; the running command reports it",
			   (long long) d->job_id);
		dup->tag = d->tag;
		dup->gen = d->gen;
		free(d);
		return false;
	}
	job->id = d->job_id;
	snprintf(job->token, sizeof(job->token), "%s", d->token);
	job->attempt = d->attempt;
	job->priority = d->priority;
	job->payload = strdup(PQgetisnull(res, i, 3) ? "null" : PQgetvalue(res, i, 3));
	job->timeout_s = atof(PQgetvalue(res, i, 4));
	job->lease_s = atof(PQgetvalue(res, i, 5));
	snprintf(job->tenant, sizeof(job->tenant), "%s", d->tenant);
	job->source_data = d;
	if (job->payload == NULL)
	{
		hw_log("FATAL", "out of memory");
		exit(70);
	}
	d->next = st->inflight;
	st->inflight = d;
	return true;
}

/*
 * start()'s result for ds[0..n): the jobs to run into jobs[0..] (at most
 * max; their count), the other deliveries settled (dropped, retried,
 * attached to the job running here).
 */
static int
take_started(AmqpState *st, PGresult *res, Delivery **ds, int n, HwJob **jobs, int max)
{
	int			got = 0;

	if (PQntuples(res) != n || PQnfields(res) != 6)
	{
		/* not this worker's hasched: the messages come again after the dispatch lease */
		hw_log("WARNING", "start() of %d deliveries answered %d rows of %d columns; acked and dropped (is the server's hasched as new as this worker?)",
			   n, PQntuples(res), PQnfields(res));
		for (int i = 0; i < n; i++)
			drop(st, ds[i]);
		return 0;
	}
	for (int i = 0; i < n; i++)
	{
		Delivery   *d = ds[i];
		const char *outcome = PQgetvalue(res, i, 1);
		const char *state = PQgetisnull(res, i, 2) ? NULL : PQgetvalue(res, i, 2);

		if (strcmp(outcome, "run") == 0)
		{
			if (got >= max)
				push_front(st, d);	/* (not asked for more than max) */
			else if (started(st, d, res, i, jobs[got]))
				got++;
		}
		else if (strcmp(outcome, "finished") == 0)
		{
			hw_log("INFO", "job %lld attempt %d: already finished (%s): acked and dropped",
				   (long long) d->job_id, d->attempt, state ? state : "");
			drop(st, d);
		}
		else
			stale(st, d, state);
	}
	return got;
}

/*
 * The start of ds[0..n) was not committed.  down: the database went away:
 * they wait for it, in order.  Refused with other deliveries (not alone:
 * reports shared the transaction, or a batch): back in order, and a
 * refused batch is started one delivery at a time next (which says which
 * one is refused).  Refused alone: asked again with the stale back-off
 * (5 ms doubling to 500 ms) for STALE_RETRY_USEC, then acked and dropped
 * (its job is dispatched again after hasched.dispatch_lease).
 */
static void
start_failed(AmqpState *st, Delivery **ds, int n, bool alone, bool down)
{
	if (!down && alone && n == 1)
	{
		Delivery   *d = ds[0];
		int64_t		now = hw_now();

		if (d->stale_since == 0)
			d->stale_since = now;
		if (now - d->stale_since < STALE_RETRY_USEC)
		{
			int64_t		delay = 5000LL << (d->stale_tries < 7 ? d->stale_tries : 7);

			d->stale_tries++;
			d->retry_at = now + (delay < 500000 ? delay : 500000);
			d->next = st->retry;
			st->retry = d;
		}
		else
		{
			hw_log("WARNING", "delivery %llu (job %lld): start() refused for %.1f s: acked and dropped",
				   (unsigned long long) d->tag, (long long) d->job_id,
				   (double) (now - d->stale_since) / 1e6);
			drop(st, d);
		}
		return;
	}
	if (!down && alone && n > 1)
		st->singles = n;
	for (int i = n - 1; i >= 0; i--)
	{
		if (ds[i]->gen != st->gen)
			free(ds[i]);		/* its connection is gone: the broker gives it again */
		else
			push_front(st, ds[i]);
	}
}

/* What fetch() and fetch_sql() do first: connect, read, retries due. */
static void
amqp_prepare(AmqpState *st)
{
	if (!st->up && hw_now() >= st->next_connect)
		try_connect(st);
	if (st->up)
		(void) drain(st);		/* also sends the heartbeats due */
	retry_due(st);
}

/* The start of up to max deliveries, as a statement to send with the reports. */
static char *
amqp_fetch_sql(HwSource *src, int max)
{
	AmqpState  *st = src->state;
	char	   *ids;
	char	   *toks;
	char	   *w;
	char	   *sql = NULL;
	int			n;

	amqp_prepare(st);
	if (max > st->cycle_cap)
	{
		Delivery  **p = realloc(st->cycle, sizeof(Delivery *) * (size_t) max);

		if (p == NULL)
			return NULL;
		st->cycle = p;
		st->cycle_cap = max;
	}
	n = take_deliveries(st, st->cycle, max);
	if (n == 0)
		return strdup("");
	w = hw_db_literal(hw_cfg.name, strlen(hw_cfg.name));
	if (w != NULL && start_arrays(st->cycle, n, &ids, &toks))
	{
		size_t		len = strlen(START_COLUMNS) + strlen(ids) + strlen(toks) + strlen(w) + 80;

		if ((sql = malloc(len)) != NULL)
			snprintf(sql, len, START_COLUMNS " FROM hasched.start('%s'::bigint[], '%s'::text[], %s) s",
					 ids, toks, w);
		free(ids);
		free(toks);
	}
	free(w);
	if (sql == NULL)
		start_failed(st, st->cycle, n, false, true);
	else
		st->ncycle = n;
	return sql;
}

static int
amqp_fetch_take(HwSource *src, PGresult *res, HwJob **jobs, int max, bool *more)
{
	AmqpState  *st = src->state;
	int			got = take_started(st, res, st->cycle, st->ncycle, jobs, max);

	st->ncycle = 0;
	*more = st->npending > 0;
	return got;
}

static void
amqp_fetch_failed(HwSource *src, bool alone, bool down)
{
	AmqpState  *st = src->state;

	start_failed(st, st->cycle, st->ncycle, alone, down);
	st->ncycle = 0;
}

/*
 * fetch(): the same start, waited for (the loop's way while the database
 * is down, which also reconnects it); max 0: only the broker's reads,
 * heartbeats and reconnects.
 */
static int
amqp_fetch(HwSource *src, HwJob **jobs, int max)
{
	AmqpState  *st = src->state;
	Delivery  **ds;
	char	   *ids;
	char	   *toks;
	const char *v[3];
	PGresult   *res = NULL;
	char	   *err = NULL;
	HwDbResult	r;
	int			n;
	int			got;

	amqp_prepare(st);
	if (max <= 0 || st->npending == 0)
		return 0;
	if ((ds = malloc(sizeof(Delivery *) * (size_t) max)) == NULL)
	{
		hw_log("FATAL", "out of memory");
		exit(70);
	}
	n = take_deliveries(st, ds, max);
	if (n == 0)
	{
		free(ds);
		return 0;
	}
	if (!start_arrays(ds, n, &ids, &toks))
	{
		hw_log("FATAL", "out of memory");
		exit(70);
	}
	v[0] = ids;
	v[1] = toks;
	v[2] = hw_cfg.name;
	r = hw_db_call(START_COLUMNS " FROM hasched.start($1::bigint[], $2::text[], $3) s",
				   3, v, &res, &err);
	free(ids);
	free(toks);
	if (r != HW_DB_OK)
	{
		bool		down = r == HW_DB_DOWN || hw_db_fatal_config();

		if (!down)
			hw_log("WARNING", "start() of %d deliveries refused: %s", n, err ? err : "");
		start_failed(st, ds, n, true, down);
		free(err);
		free(ds);
		return down ? -1 : 0;
	}
	got = take_started(st, res, ds, n, jobs, max);
	PQclear(res);
	free(ds);
	return got;
}

static void
amqp_settle(HwSource *src, HwJob *job, bool recorded)
{
	AmqpState  *st = src->state;
	Delivery   *d = job->source_data;
	Delivery  **pp;

	if (d == NULL)
		return;
	for (pp = &st->inflight; *pp; pp = &(*pp)->next)
		if (*pp == d)
		{
			*pp = d->next;
			break;
		}
	/*
	 * Recorded, or stale (another attempt owns the job): ack.  Not
	 * recorded for another reason (the report kept failing, the lease was
	 * lost): ack too; the job's row decides what happens next (it is
	 * dispatched again under a new token after its lease), a redelivery
	 * would only be dropped as stale.
	 */
	ack(st, d->gen, d->tag);
	job->source_data = NULL;
	free(d);
}

static int64_t
amqp_next_wake(HwSource *src)
{
	AmqpState  *st = src->state;

	int64_t		t;

	if (!st->up)
		return st->next_connect;
	/* heartbeats: the library sends them when it is called */
	t = st->last_drain + (AMQP_HEARTBEAT_S * 1000000LL) / 3;
	for (Delivery *d = st->retry; d; d = d->next)
		if (d->retry_at < t)
			t = d->retry_at;
	return t;
}

static bool
amqp_health(HwSource *src, char *out, size_t size)
{
	AmqpState  *st = src->state;
	char		err[600];
	size_t		j = 0;

	/* the error as a JSON string */
	for (const char *p = st->error; *p && j < sizeof(err) - 3; p++)
	{
		if (*p == '"' || *p == '\\')
			err[j++] = '\\';
		err[j++] = (*p >= 0 && *p < 0x20) ? ' ' : *p;
	}
	err[j] = '\0';
	if (st->up)
		snprintf(out, size, "\"broker\": {\"ok\": true, \"url\": \"%s\", \"waiting\": %d}",
				 st->urls[st->url].shown, st->npending);
	else
		snprintf(out, size, "\"broker\": {\"ok\": false, \"url\": \"%s\", \"error\": \"%s\","
				 " \"seconds_down\": %.3f}",
				 st->urls[st->url].shown, err,
				 st->down_since ? (double) (hw_now() - st->down_since) / 1e6 : 0.0);
	return st->up;
}

/* Stopping: cancel the consumers and give back the deliveries not started. */
static void
amqp_stop(HwSource *src)
{
	AmqpState  *st = src->state;
	int			given = 0;

	if (!st->up)
		return;
	(void) cancel_consumers(st);
	/* what arrived before the cancel took effect, and what waits for a retry */
	(void) drain(st);
	given = give_back(st);
	hw_log("INFO", "stopped consuming; %d deliveries not started given back to the broker", given);
}

/*
 * The loop allows n deliveries beyond --concurrency now (its --prefetch
 * rule).  A change of the prefetch count takes new consumers; when it
 * drops (the commands got long), the deliveries not started go back to the
 * broker rather than wait behind long commands (a message not started
 * within hasched.dispatch_lease is dispatched again under a new attempt).
 */
static void
amqp_ahead(HwSource *src, int n)
{
	AmqpState  *st = src->state;
	bool		config_error = false;
	int			given = 0;

	if (n == st->ahead)
		return;
	/* commands that take about 1 s: grow at most every 5 s (shrink at once) */
	if (n > st->ahead && st->qos_raised_at != 0 && hw_now() - st->qos_raised_at < 5000000)
		return;
	st->ahead = n;
	if (!st->up || st->prefetch + n == st->qos)
		return;
	if (st->prefetch + n > st->qos)
		st->qos_raised_at = hw_now();
	if (!cancel_consumers(st))
	{
		disconnect(st, true);
		return;
	}
	(void) drain(st);
	if (st->prefetch + n < st->qos)
		given = give_back(st);
	if (!consume(st, st->prefetch + n, &config_error))
	{
		disconnect(st, true);
		return;
	}
	hw_log("INFO", "prefetch count now %d (--concurrency %d + %d)%s", st->qos, st->prefetch, n,
		   given > 0 ? "; deliveries not started given back to the broker" : "");
}

static int
amqp_waiting(HwSource *src)
{
	AmqpState  *st = src->state;

	int			n = st->npending + st->ncycle;

	for (Delivery *d = st->retry; d; d = d->next)
		n++;
	return n;
}

HwSource *
hw_source_amqp(HwAmqpUrl *urls, int nurls, const char *queue, const char *queue_type,
			   int prefetch)
{
	HwSource   *src = calloc(1, sizeof(HwSource));
	AmqpState  *st = calloc(1, sizeof(AmqpState));

	if (src == NULL || st == NULL)
		return NULL;
	st->urls = urls;
	st->nurls = nurls;
	st->queue = queue;
	st->queue_type = queue_type;
	st->prefetch = prefetch > 65535 ? 65535 : prefetch;
	src->name = "amqp";
	src->fd = amqp_fd;
	src->readable = amqp_readable;
	src->fetch = amqp_fetch;
	src->fetch_sql = amqp_fetch_sql;
	src->fetch_take = amqp_fetch_take;
	src->fetch_failed = amqp_fetch_failed;
	src->settle = amqp_settle;
	src->settle_batch = amqp_settle_batch;
	src->reconnected = NULL;
	src->next_wake = amqp_next_wake;
	src->health = amqp_health;
	src->waiting = amqp_waiting;
	src->ahead = amqp_ahead;
	src->stop = amqp_stop;
	src->state = st;
	return src;
}
