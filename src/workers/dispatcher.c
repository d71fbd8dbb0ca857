/*-------------------------------------------------------------------------
 *
 * dispatcher.c
 *		The RabbitMQ dispatcher: a background worker on the primary (only
 *		while the node may act) that publishes the due jobs of amqp queues
 *		to a broker of hasched.amqp_url with publisher confirms, behind
 *		circuit breakers per broker and per queue (core/circuit.c); amqps://
 *		brokers over TLS.
 *
 * An outbox.  The job row is the truth, the message a copy.  A round reads
 * a batch of due jobs (no lock), gives each a new attempt and lease id (its
 * token, in the message), publishes them (persistent, mandatory, to the
 * per-band queue of its queue), and waits for the broker's basic.ack,
 * basic.nack and basic.return frames on the frame API (librabbitmq 0.11 has
 * no confirm-wait helper).  Only then does one transaction mark the
 * confirmed jobs dispatched with the token their message carries
 * (job_state.c: hs_mark_dispatched, which matches only rows still waiting
 * with the attempt read).  A nack, a return, a lost connection or a
 * confirm that does not come in time leaves the job waiting with the error
 * in last_error; the next round publishes it again, through the next
 * broker if this one is gone.
 *
 * Crash between the confirm and the commit: the message is in the broker
 * while the row is still waiting; it is published again under a new token,
 * and the first message's token is refused by start() (JQ006): the worker
 * drops it.  A job cancelled or re-dispatched meanwhile does not match the
 * mark, so its message is stale in the same way.
 *
 * A dispatched job that no worker starts within hasched.dispatch_lease, or
 * one dispatched under an older epoch (by the primary before a failover),
 * ends that attempt and is due again (hs_redispatch_expired), so a message
 * lost with a broker never strands its job.
 *
 * The broker's socket is in the shared loop's wait set between rounds (a
 * closed connection is noticed at once); the wait for confirms inside a
 * round waits on that socket and the latch.  No threads.
 *
 * IDENTIFICATION
 *		src/workers/dispatcher.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"

#include "workers/worker.h"

#define IDLE_MS				1000	/* longest sleep with nothing due */
#define FENCED_MS			500
#define NO_EPOCH_MS			200
#define EXPIRY_EVERY_MS		1000
#define USABLE_EVERY_MS		1000
#define CHANNEL_MAX			2047

/* a broker of hasched.amqp_url */
typedef struct Broker
{
	char	   *display;		/* the URL without its password */
	char	   *error;			/* why it is unusable, or NULL */
	struct amqp_connection_info info;	/* points into its own copy */
	int			circuit;
	char		last_error[HS_CIRCUIT_ERROR_MAX];	/* of the last failed attempt */
} Broker;

/* one message of a batch */
typedef struct Msg
{
	int64		job_id;
	int32		attempt;		/* the new attempt */
	int64		lease_id;
	char	   *queue;
	int			qcircuit;
	uint64		tag;			/* its delivery tag; 0: not published */
	int			gen;			/* the channel it was published on */
	bool		settled;		/* ack or nack came, or it failed */
	bool		failed;
	bool		conn_failed;	/* failed with the connection (the broker's fault) */
	char		error[HS_CIRCUIT_ERROR_MAX];
} Msg;

/*
 * A published batch.  Batches are pipelined: while the broker confirms one,
 * the next ones are read and published (up to PIPELINE_DEPTH batches in
 * flight); then the oldest is marked.  Each lives in a memory context of
 * its own.
 */
typedef struct Batch
{
	MemoryContext cxt;
	int			n;
	Msg		   *msgs;
	int32		epoch;
	int			broker;
	TimestampTz published_at;
	int			nprobes;		/* queue circuits whose probe it carries */
	int		   *probes;
} Batch;

/* batches published and not yet finished, oldest first */
#define PIPELINE_DEPTH	3
static Batch *inflight[PIPELINE_DEPTH];
static int	ninflight = 0;
static int	channel_gen = 0;	/* a new one for every channel opened */

/* the brokers, parsed from the setting in TopMemoryContext */
static char *parsed_url = NULL;
static Broker *brokers = NULL;
static int	nbrokers = 0;
static int	nusable = 0;

/* the connection */
static amqp_connection_state_t conn = NULL;
static int	cur_broker = -1;
static amqp_channel_t channel = 0;
static uint64 next_tag = 1;
static char **declared = NULL;	/* broker queues declared on this connection */
static int	ndeclared = 0;
static int	declared_cap = 0;
static bool lost = false;		/* the socket said the connection is gone */
static bool nacked = false;		/* the broker nacked a message on this channel */

static TimestampTz last_expiry = 0;
static TimestampTz usable_at = 0;	/* the extension was found usable then */
static TimestampTz next_connect_at = 0;	/* no connection attempt before */
static bool unreachable = false;	/* the last pass found no broker */

/* queue circuits whose probe the batch being read took */
static int	probes[HS_MAX_CIRCUITS];
static int	nprobes = 0;

static void disconnect(const char *why);

/* A message that failed, unless it is settled already. */
static void
fail_msg(Msg *m, const char *why)
{
	if (m->settled)
		return;
	m->settled = m->failed = true;
	strlcpy(m->error, why, sizeof(m->error));
}

/* ... because the connection or channel went away */
static void
fail_conn(Msg *m, const char *why)
{
	if (m->settled)
		return;
	fail_msg(m, why);
	m->conn_failed = true;
}

/* Every unsettled message of the batch in flight failed (connection gone). */
static void
fail_inflight(const char *why)
{
	for (int b = 0; b < ninflight; b++)
		for (int i = 0; i < inflight[b]->n; i++)
			fail_conn(&inflight[b]->msgs[i], why);
}

/* ------------------------------------------------------------------------
 * Brokers
 * ------------------------------------------------------------------------ */

/* Parse hasched.amqp_url again when it changed (after a reload). */
static void
load_brokers(void)
{
	MemoryContext old;
	char	   *list;
	char	   *tok;
	char	   *save = NULL;
	int			cap = 4;

	if (parsed_url != NULL && strcmp(parsed_url, hs_amqp_url) == 0)
		return;
	if (conn != NULL)
		disconnect("hasched.amqp_url changed");
	old = MemoryContextSwitchTo(TopMemoryContext);
	if (parsed_url)
		pfree(parsed_url);
	parsed_url = pstrdup(hs_amqp_url);
	brokers = palloc0(sizeof(Broker) * cap);
	nbrokers = nusable = 0;
	list = pstrdup(hs_amqp_url);
	for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
	{
		Broker	   *b;
		char	   *url;
		char	   *at;
		int			rc;

		while (*tok == ' ' || *tok == '\t')
			tok++;
		for (char *e = tok + strlen(tok); e > tok && (e[-1] == ' ' || e[-1] == '\t'); e--)
			e[-1] = '\0';
		if (*tok == '\0')
			continue;
		if (nbrokers == cap)
		{
			brokers = repalloc(brokers, sizeof(Broker) * cap * 2);
			memset(brokers + cap, 0, sizeof(Broker) * cap);
			cap *= 2;
		}
		b = &brokers[nbrokers++];
		/* shown without its password: user@host... */
		at = strrchr(tok, '@');
		{
			int			skip = strncmp(tok, "amqp://", 7) == 0 ? 7 :
				strncmp(tok, "amqps://", 8) == 0 ? 8 : 0;
			char	   *colon = skip ? strchr(tok + skip, ':') : NULL;

			if (at != NULL && colon != NULL && colon < at)
				b->display = psprintf("%.*s%.*s:***%s", skip, tok,
									  (int) (colon - (tok + skip)), tok + skip, at);
			else
				b->display = pstrdup(tok);
		}
		url = pstrdup(tok);
		amqp_default_connection_info(&b->info);
		rc = amqp_parse_url(url, &b->info);
		if (rc != AMQP_STATUS_OK)
			b->error = psprintf("malformed broker URL (%s); expected amqp://user:password@host:port/vhost or amqps://...",
								amqp_error_string2(rc));
		if (b->error)
		{
			ereport(LOG,
					(errmsg("hasched dispatcher: broker %d of hasched.amqp_url, \"%s\", is unusable: %s",
							nbrokers, b->display, b->error),
					 errhint("Correct hasched.amqp_url and reload; the other brokers are used meanwhile.")));
			b->circuit = -1;
			continue;
		}
		b->circuit = hs_circuit_get(HS_CIRCUIT_BROKER,
									psprintf("%s:%d%s%s", b->info.host, b->info.port,
											 b->info.vhost[0] == '/' ? "" : "/", b->info.vhost));
		nusable++;
	}
	MemoryContextSwitchTo(old);
}

/* "broker 1 of 2, amqp://guest:***@127.0.0.1:5672/" */
static char *
broker_name(int i)
{
	return psprintf("broker %d of %d, %s", i + 1, nbrokers, brokers[i].display);
}

/* the reply of an RPC as an error text, or NULL when it succeeded */
static char *
reply_error(amqp_rpc_reply_t r)
{
	switch (r.reply_type)
	{
		case AMQP_RESPONSE_NORMAL:
			return NULL;
		case AMQP_RESPONSE_NONE:
			return pstrdup("no reply");
		case AMQP_RESPONSE_LIBRARY_EXCEPTION:
			return pstrdup(amqp_error_string2(r.library_error));
		case AMQP_RESPONSE_SERVER_EXCEPTION:
			if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD)
			{
				amqp_connection_close_t *c = r.reply.decoded;

				return psprintf("the broker closed the connection: %d %.*s", c->reply_code,
								(int) c->reply_text.len, (char *) c->reply_text.bytes);
			}
			if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD)
			{
				amqp_channel_close_t *c = r.reply.decoded;

				return psprintf("the broker closed the channel: %d %.*s", c->reply_code,
								(int) c->reply_text.len, (char *) c->reply_text.bytes);
			}
			return psprintf("unexpected broker method 0x%08x", r.reply.id);
	}
	return pstrdup("unknown reply");
}

/*
 * Around a librabbitmq call that may wait for the broker (its RPCs poll()
 * the socket until their own timeout, and restart after a signal): the
 * socket is named to the worker loop, whose SIGTERM handler shuts it down,
 * so the call returns at once and the process exits right after it.
 */
static void
blocking_begin(void)
{
	hs_worker_blocking_socket(amqp_get_sockfd(conn));
}

static void
blocking_end(void)
{
	hs_worker_blocking_socket(PGINVALID_SOCKET);
	CHECK_FOR_INTERRUPTS();
}

/* the error of an RPC; a timeout named with the setting that bounds it */
static char *
rpc_error(const char *what, amqp_rpc_reply_t r)
{
	if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
		r.library_error == AMQP_STATUS_TIMEOUT)
		return psprintf("the broker did not answer %s within hasched.amqp_confirm_timeout (%d ms)",
						what, hs_amqp_confirm_timeout);
	return reply_error(r);
}

static void
disconnect(const char *why)
{
	if (conn == NULL)
		return;
	if (why)
		ereport(LOG,
				(errmsg("hasched dispatcher: disconnected from %s: %s",
						broker_name(cur_broker), why)));
	fail_inflight("the connection to the broker was lost before the confirm");
	if (!lost)
	{
		blocking_begin();
		(void) amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
		blocking_end();
	}
	amqp_destroy_connection(conn);
	conn = NULL;
	cur_broker = -1;
	ndeclared = 0;
	lost = false;
}

/* Open a channel in confirm mode; NULL or the error. */
static char *
open_channel(void)
{
	amqp_rpc_reply_t r;

	channel = channel % CHANNEL_MAX + 1;
	blocking_begin();
	amqp_channel_open(conn, channel);
	blocking_end();
	r = amqp_get_rpc_reply(conn);
	if (r.reply_type != AMQP_RESPONSE_NORMAL)
		return rpc_error("channel.open", r);
	blocking_begin();
	amqp_confirm_select(conn, channel);
	blocking_end();
	r = amqp_get_rpc_reply(conn);
	if (r.reply_type != AMQP_RESPONSE_NORMAL)
		return rpc_error("confirm.select", r);
	next_tag = 1;
	channel_gen++;
	nacked = false;
	return NULL;
}

/*
 * After a basic.nack, publish on a new channel.  RabbitMQ 3.10 keeps, per
 * channel and quorum queue, the member it took for the leader when the
 * channel first published there; when that member's node is down, every
 * publish of the channel is nacked until the node is back, even though
 * another member leads the queue by then (the dispatcher moved to another
 * broker while the election was running).  A new channel asks the queue's
 * record again.  Only with no batch in flight: their confirms come on the
 * old channel.
 */
static void
renew_channel(void)
{
	amqp_rpc_reply_t r;
	char	   *err;

	blocking_begin();
	r = amqp_channel_close(conn, channel, AMQP_REPLY_SUCCESS);
	blocking_end();
	if (r.reply_type != AMQP_RESPONSE_NORMAL)
	{
		lost = true;
		return;
	}
	if ((err = open_channel()) != NULL)
	{
		lost = true;
		return;
	}
	ereport(LOG,
			(errmsg("hasched dispatcher: the broker refused messages (basic.nack); publishing on a new channel of %s",
					broker_name(cur_broker))));
}

/* the first certificate error of the TLS handshake under way ("" none) */
static char tls_verify_error[256];

/*
 * OpenSSL's verify callback: notes why the broker's certificate does not
 * verify.  librabbitmq sets no verify mode (it checks the result after the
 * handshake), so the return value changes nothing.
 */
static int
tls_verify(int ok, X509_STORE_CTX *store)
{
	if (!ok && tls_verify_error[0] == '\0')
		snprintf(tls_verify_error, sizeof(tls_verify_error), "%s",
				 X509_verify_cert_error_string(X509_STORE_CTX_get_error(store)));
	return ok;
}

/*
 * OpenSSL's info callback: the handshake starts on the socket that
 * librabbitmq connected; name it to the worker loop, so that a SIGTERM ends
 * a handshake with a broker that does not answer (see blocking_begin).
 */
static void
tls_info(const SSL *ssl, int where, int ret)
{
	if (where & SSL_CB_HANDSHAKE_START)
		hs_worker_blocking_socket(SSL_get_fd(ssl));
}

/*
 * The socket for broker b: TCP, or TLS for amqps:// (the certificate
 * checked against hasched.amqp_tls_ca_file or the system's CAs, and the
 * URL's host name, unless hasched.amqp_tls_verify is off).  NULL with *err.
 */
static amqp_socket_t *
new_socket(Broker *b, char **err)
{
	amqp_socket_t *sock;
	SSL_CTX    *ctx;
	int			rc;

	if (!b->info.ssl)
	{
		if ((sock = amqp_tcp_socket_new(conn)) == NULL)
			*err = pstrdup("cannot create a socket");
		return sock;
	}
	if ((sock = amqp_ssl_socket_new(conn)) == NULL)
	{
		*err = pstrdup("cannot set up TLS");
		return NULL;
	}
	amqp_ssl_socket_set_verify_peer(sock, hs_amqp_tls_verify);
	amqp_ssl_socket_set_verify_hostname(sock, hs_amqp_tls_verify);
	ctx = amqp_ssl_socket_get_context(sock);
	if (hs_amqp_tls_ca_file[0] != '\0')
	{
		if ((rc = amqp_ssl_socket_set_cacert(sock, hs_amqp_tls_ca_file)) != AMQP_STATUS_OK)
		{
			*err = psprintf("cannot load the CA certificates of hasched.amqp_tls_ca_file \"%s\": %s",
							hs_amqp_tls_ca_file, amqp_error_string2(rc));
			return NULL;
		}
	}
	else if (SSL_CTX_set_default_verify_paths(ctx) != 1)
	{
		*err = pstrdup("cannot load the system's CA certificates; set hasched.amqp_tls_ca_file");
		return NULL;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, tls_verify);
	SSL_CTX_set_info_callback(ctx, tls_info);
	return sock;
}

/*
 * Open the connection to broker b on sock; NULL or the error.  TCP: the
 * connect is made on the latch (hs_worker_tcp_connect).  TLS: librabbitmq
 * connects (within hasched.amqp_connect_timeout) and runs the handshake,
 * which a SIGTERM ends (tls_info).
 */
static char *
open_socket(Broker *b, amqp_socket_t *sock)
{
	char	   *err = NULL;
	struct timeval tv;
	pgsocket	fd;
	int			rc;

	if (!b->info.ssl)
	{
		fd = hs_worker_tcp_connect(b->info.host, b->info.port, hs_amqp_connect_timeout, &err);
		if (fd == PGINVALID_SOCKET)
			return err;
		amqp_tcp_socket_set_sockfd(sock, fd);
		return NULL;
	}
	tv.tv_sec = hs_amqp_connect_timeout / 1000;
	tv.tv_usec = (hs_amqp_connect_timeout % 1000) * 1000;
	tls_verify_error[0] = '\0';
	rc = amqp_socket_open_noblock(sock, b->info.host, b->info.port, &tv);
	blocking_end();
	if (rc == AMQP_STATUS_OK)
		return NULL;
	if (rc == AMQP_STATUS_SSL_PEER_VERIFY_FAILED)
		return psprintf("TLS: the broker's certificate does not verify (%s); check hasched.amqp_tls_ca_file",
						tls_verify_error[0] ? tls_verify_error : "no detail");
	if (rc == AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED)
		return psprintf("TLS: the broker's certificate is not for host \"%s\"", b->info.host);
	if (rc == AMQP_STATUS_TIMEOUT)
		return psprintf("TLS: no connection or handshake with %s:%d within hasched.amqp_connect_timeout (%d ms)",
						b->info.host, b->info.port, hs_amqp_connect_timeout);
	return psprintf("TLS: cannot connect to %s:%d: %s", b->info.host, b->info.port,
					amqp_error_string2(rc));
}

/*
 * Connect to broker i; NULL or the error.  The AMQP handshake and the RPCs
 * that follow wait in librabbitmq, bounded by hasched.amqp_connect_timeout
 * and hasched.amqp_confirm_timeout, and a SIGTERM ends them at once
 * (blocking_begin).
 */
static char *
connect_broker(int i)
{
	Broker	   *b = &brokers[i];
	amqp_socket_t *sock;
	struct timeval tv;
	amqp_rpc_reply_t r;
	char	   *err = NULL;

	conn = amqp_new_connection();
	if ((sock = new_socket(b, &err)) != NULL &&
		(err = open_socket(b, sock)) == NULL)
	{
		tv.tv_sec = hs_amqp_connect_timeout / 1000;
		tv.tv_usec = (hs_amqp_connect_timeout % 1000) * 1000;
		(void) amqp_set_handshake_timeout(conn, &tv);
		tv.tv_sec = hs_amqp_confirm_timeout / 1000;
		tv.tv_usec = (hs_amqp_confirm_timeout % 1000) * 1000;
		(void) amqp_set_rpc_timeout(conn, &tv);
		blocking_begin();
		r = amqp_login(conn, b->info.vhost, CHANNEL_MAX, 131072, 0,
					   AMQP_SASL_METHOD_PLAIN, b->info.user, b->info.password);
		blocking_end();
		if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
			r.library_error == AMQP_STATUS_TIMEOUT)
			err = psprintf("the broker accepted the connection but did not answer the AMQP handshake within hasched.amqp_connect_timeout (%d ms)",
						   hs_amqp_connect_timeout);
		else if ((err = reply_error(r)) != NULL)
			err = psprintf("login refused or failed: %s", err);
		else if ((err = open_channel()) != NULL)
			err = psprintf("cannot open a confirm channel: %s", err);
	}
	if (err)
	{
		amqp_destroy_connection(conn);
		conn = NULL;
		return err;
	}
	cur_broker = i;
	lost = false;
	ndeclared = 0;
	return NULL;
}

/*
 * Be connected to the first broker, in the order of hasched.amqp_url, that
 * accepts and whose circuit lets the attempt through.  False when none.
 */
static bool
ensure_connected(void)
{
	StringInfoData why;

	if (conn != NULL && !lost)
		return true;
	if (conn != NULL)
		disconnect("the connection was lost");
	/* woken early (a submit) after a pass that found none: not yet */
	if (GetCurrentTimestamp() < next_connect_at)
		return false;
	next_connect_at = GetCurrentTimestamp() + (int64) hs_amqp_reconnect_interval * 1000;
	initStringInfo(&why);
	for (int i = 0; i < nbrokers; i++)
	{
		Broker	   *b = &brokers[i];
		char	   *err;

		if (b->error)
		{
			appendStringInfo(&why, "%s%s: %s", why.len ? "; " : "", broker_name(i), b->error);
			continue;
		}
		if (!hs_circuit_allow(b->circuit))
		{
			appendStringInfo(&why, "%s%s: circuit open", why.len ? "; " : "", broker_name(i));
			if (b->last_error[0])
				appendStringInfo(&why, " after: %s", b->last_error);
			continue;
		}
		/* after a pass that found none, health keeps saying why */
		if (!unreachable)
			hs_dispatcher_set_status(MyProcPid, "connecting", broker_name(i));
		err = connect_broker(i);
		hs_circuit_record(b->circuit, err == NULL, err);
		if (err == NULL)
		{
			ereport(LOG,
					(errmsg("hasched dispatcher: connected to %s", broker_name(i))));
			unreachable = false;
			hs_dispatcher_set_status(MyProcPid, "ok",
									 psprintf("connected to %s", broker_name(i)));
			return true;
		}
		ereport(LOG,
				(errmsg("hasched dispatcher: %s: %s", broker_name(i), err)));
		strlcpy(b->last_error, err, sizeof(b->last_error));
		appendStringInfo(&why, "%s%s: %s", why.len ? "; " : "", broker_name(i), err);
	}
	unreachable = true;
	hs_dispatcher_set_status(MyProcPid, "no broker",
							 psprintf("no broker reachable (jobs of amqp queues wait): %s",
									  why.len ? why.data : "hasched.amqp_url lists none"));
	return false;
}

/* ------------------------------------------------------------------------
 * Broker queues: hasched.<queue>.<band>
 * ------------------------------------------------------------------------ */

static const char *
band_of(int priority)
{
	return priority <= 4 ? "high" : priority <= 8 ? "medium" : "low";
}

static bool
is_declared(const char *name)
{
	for (int i = 0; i < ndeclared; i++)
		if (strcmp(declared[i], name) == 0)
			return true;
	return false;
}

static void
forget_declared(const char *name)
{
	for (int i = 0; i < ndeclared; i++)
		if (strcmp(declared[i], name) == 0)
		{
			pfree(declared[i]);
			declared[i] = declared[--ndeclared];
			return;
		}
}

/*
 * Declare the broker queue (durable, of hasched.amqp_queue_type) unless
 * declared on this connection; NULL or the error.  A refused declaration
 * closes the channel: a new one is opened.
 */
static char *
declare(const char *name)
{
	amqp_table_entry_t arg;
	amqp_table_t args;
	amqp_rpc_reply_t r;
	char	   *err;

	if (is_declared(name))
		return NULL;
	arg.key = amqp_cstring_bytes("x-queue-type");
	arg.value.kind = AMQP_FIELD_KIND_UTF8;
	arg.value.value.bytes = amqp_cstring_bytes(hs_amqp_queue_type);
	args.num_entries = 1;
	args.entries = &arg;
	blocking_begin();
	amqp_queue_declare(conn, channel, amqp_cstring_bytes(name), 0, 1, 0, 0, args);
	blocking_end();
	r = amqp_get_rpc_reply(conn);
	err = rpc_error("queue.declare", r);
	if (err != NULL)
	{
		if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
			r.reply.id == AMQP_CHANNEL_CLOSE_METHOD)
		{
			amqp_channel_close_ok_t ok = {0};
			char	   *cerr;

			blocking_begin();
			(void) amqp_send_method(conn, channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
			blocking_end();
			if ((cerr = open_channel()) != NULL)
				lost = true;
		}
		else
			lost = true;
		return psprintf("declaring broker queue %s failed: %s", name, err);
	}
	if (ndeclared == declared_cap)
	{
		declared_cap = Max(16, declared_cap * 2);
		declared = declared ? repalloc(declared, sizeof(char *) * declared_cap) :
			MemoryContextAlloc(TopMemoryContext, sizeof(char *) * declared_cap);
	}
	declared[ndeclared++] = MemoryContextStrdup(TopMemoryContext, name);
	return NULL;
}

/* ------------------------------------------------------------------------
 * Publishing a batch and waiting for its confirms
 * ------------------------------------------------------------------------ */

static void
settle(Msg **msgs, int n, uint64 tag, bool multiple, const char *nack)
{
	for (int i = 0; i < n; i++)
	{
		Msg		   *m = msgs[i];

		if (m->settled || m->gen != channel_gen || m->tag > tag ||
			(!multiple && m->tag != tag))
			continue;
		if (nack)
		{
			fail_msg(m, nack);
			nacked = true;
		}
		m->settled = true;
	}
}

/* the message of a returned message's message_id "<job>:<attempt>" */
static void
mark_returned(Msg **msgs, int n, amqp_bytes_t id, const char *why)
{
	int64		job;
	int32		attempt;
	char	   *s = pnstrdup(id.bytes, id.len);

	if (sscanf(s, INT64_FORMAT ":%d", &job, &attempt) != 2)
		return;
	for (int i = 0; i < n; i++)
		if (msgs[i]->job_id == job && msgs[i]->attempt == attempt && !msgs[i]->settled)
		{
			/* its ack follows: the message stays failed */
			ereport(LOG,
					(errmsg("hasched dispatcher: the message of job " INT64_FORMAT " came back: %s",
							job, why)));
			msgs[i]->failed = true;
			strlcpy(msgs[i]->error, why, sizeof(msgs[i]->error));
			forget_declared(psprintf("hasched.%s.%s", msgs[i]->queue, "high"));
			forget_declared(psprintf("hasched.%s.%s", msgs[i]->queue, "medium"));
			forget_declared(psprintf("hasched.%s.%s", msgs[i]->queue, "low"));
		}
}

/*
 * Read frames (confirms of all n messages) until the first `need` messages
 * are settled, the connection is lost, or the deadline passes; then those
 * still unsettled fail (all n when the connection is lost).
 */
static void
wait_confirms(Msg **msgs, int n, int need, TimestampTz deadline)
{
	char	   *returned_why = NULL;
	uint64		body_left = 0;
	bool		want_header = false;
	const char *fail = NULL;

	for (int i = 0; i < n; i++)
		if (msgs[i]->gen != channel_gen)
			fail_conn(msgs[i], "the channel was closed before the confirm");

	for (;;)
	{
		amqp_frame_t frame;
		struct timeval zero = {0, 0};
		int			rc;
		int			unsettled = 0;

		for (int i = 0; i < need; i++)
			if (!msgs[i]->settled)
				unsettled++;
		if (unsettled == 0 && !want_header && body_left == 0)
			break;

		CHECK_FOR_INTERRUPTS();
		if (!amqp_frames_enqueued(conn) && !amqp_data_in_buffer(conn))
		{
			long		left = (long) ((deadline - GetCurrentTimestamp()) / 1000);
			int			ev;

			if (left <= 0)
			{
				fail = "no confirm from the broker within hasched.amqp_confirm_timeout";
				lost = true;	/* a broker that does not answer: reconnect */
				break;
			}
			ev = WaitLatchOrSocket(MyLatch,
								   WL_LATCH_SET | WL_SOCKET_READABLE | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								   amqp_get_sockfd(conn), left, PG_WAIT_EXTENSION);
			if (ev & WL_LATCH_SET)
				ResetLatch(MyLatch);
			if (!(ev & WL_SOCKET_READABLE))
				continue;
		}
		rc = amqp_simple_wait_frame_noblock(conn, &frame, &zero);
		if (rc == AMQP_STATUS_TIMEOUT)
			continue;
		if (rc != AMQP_STATUS_OK)
		{
			fail = psprintf("connection lost while waiting for confirms: %s", amqp_error_string2(rc));
			lost = true;
			break;
		}
		if (frame.frame_type == AMQP_FRAME_HEADER && want_header)
		{
			amqp_basic_properties_t *p = frame.payload.properties.decoded;

			want_header = false;
			body_left = frame.payload.properties.body_size;
			if (p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG)
				mark_returned(msgs, n, p->message_id, returned_why);
			continue;
		}
		if (frame.frame_type == AMQP_FRAME_BODY && body_left > 0)
		{
			body_left -= Min(body_left, frame.payload.body_fragment.len);
			continue;
		}
		if (frame.frame_type != AMQP_FRAME_METHOD)
			continue;
		switch (frame.payload.method.id)
		{
			case AMQP_BASIC_ACK_METHOD:
				{
					amqp_basic_ack_t *a = frame.payload.method.decoded;

					settle(msgs, n, a->delivery_tag, a->multiple, NULL);
					break;
				}
			case AMQP_BASIC_NACK_METHOD:
				{
					amqp_basic_nack_t *a = frame.payload.method.decoded;

					settle(msgs, n, a->delivery_tag, a->multiple,
						   "the broker refused the message (basic.nack)");
					break;
				}
			case AMQP_BASIC_RETURN_METHOD:
				{
					amqp_basic_return_t *r = frame.payload.method.decoded;

					returned_why = psprintf("the broker returned the message as unroutable: %d %.*s",
											r->reply_code, (int) r->reply_text.len,
											(char *) r->reply_text.bytes);
					want_header = true;
					break;
				}
			case AMQP_CHANNEL_CLOSE_METHOD:
			case AMQP_CONNECTION_CLOSE_METHOD:
				{
					amqp_channel_close_t *c = frame.payload.method.decoded;

					fail = psprintf("the broker closed the %s: %d %.*s",
									frame.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ?
									"channel" : "connection",
									c->reply_code, (int) c->reply_text.len,
									(char *) c->reply_text.bytes);
					lost = true;
					break;
				}
			default:
				break;
		}
		if (lost)
			break;
	}
	for (int i = 0; i < (lost ? n : need); i++)
		fail_conn(msgs[i], fail ? fail : "not confirmed");
}

/* ------------------------------------------------------------------------
 * The round
 * ------------------------------------------------------------------------ */

/* the epoch of this timeline (0 when the scheduler has not opened it) */
static int32
current_epoch(void)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[1];
	bool		isnull;

	hs_plan(&plan, "SELECT epoch FROM hasched.epoch WHERE timeline = $1"
			" ORDER BY epoch DESC LIMIT 1",
			1, INT4OID);
	values[0] = Int32GetDatum((int32) GetWALInsertionTimeLine());
	if (SPI_execute_plan(plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "hasched: reading the epoch failed");
	if (SPI_processed == 0)
		return 0;
	return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * The due jobs of the amqp queues whose circuit lets them through (a half
 * open one: its probe, one job), most urgent first; the new lease ids too.
 * A queue with a concurrency limit gets at most its room: the limit less
 * its jobs dispatched or running and those published and not yet marked
 * (0: unlimited).  This process alone makes jobs of amqp queues
 * dispatched, and start() only turns dispatched into running, so the room
 * can only grow between this read and the marks.  Leaves them in
 * SPI_tuptable; returns how many.
 */
static uint64
read_batch(int32 *epoch)
{
	static SPIPlanPtr qplan = NULL;
	static SPIPlanPtr plan = NULL;
	Datum	   *names;
	Datum	   *limits;
	int			nq = 0;
	uint64		nqueues;
	Datum		values[5];
	Datum		hold[HS_NUM_PRIORITIES];
	HsDegradeStatus st;
	Datum	   *busy;
	int			nbusy = 0;

	if (qplan == NULL)
	{
		Oid			types[5] = {TEXTARRAYOID, INT4ARRAYOID, INT4OID, INT8ARRAYOID, INT8ARRAYOID};

		/* the room under a concurrency limit: the jobs dispatched or running */
		qplan = hs_prepare("SELECT q.name, CASE WHEN q.concurrency > 0 THEN"
						   " q.concurrency - (SELECT count(*) FROM hasched.job a"
						   "   WHERE a.queue = q.name AND a.state IN ('running', 'dispatched'))"
						   " END"
						   " FROM hasched.queue q, hasched.state s"
						   " WHERE q.transport = 'amqp' AND q.paused_at IS NULL"
						   " AND s.mode <> 'paused' ORDER BY q.name",
						   0, NULL);
		plan = hs_prepare("SELECT j.id, j.queue, j.priority, j.attempt + 1,"
						  " nextval('hasched.lease_id_seq'),"
						  " (extract(epoch FROM j.timeout) * 1000)::bigint, j.payload::text,"
						  " pg_get_userbyid(j.tenant)"
						  " FROM unnest($1, $2) AS q (name, lim),"
						  " LATERAL (SELECT * FROM hasched.job j WHERE j.queue = q.name"
						  "   AND j.state IN ('scheduled', 'pending', 'failed')"
						  "   AND j.run_at <= clock_timestamp() AND j.id <> ALL ($4)"
						  "   AND j.run_at <= clock_timestamp() - $5[j.priority + 1] * interval '1 microsecond'"
						  "   ORDER BY j.priority, j.run_at, j.id LIMIT q.lim) j"
						  " ORDER BY j.priority, j.run_at, j.id LIMIT $3", 5, types);
	}
	*epoch = current_epoch();
	if (*epoch == 0)
		return 0;
	if (SPI_execute_plan(qplan, NULL, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "hasched: reading amqp queues failed");
	nqueues = SPI_processed;
	if (nqueues == 0)
		return 0;
	names = palloc(sizeof(Datum) * nqueues);
	limits = palloc(sizeof(Datum) * nqueues);
	for (uint64 i = 0; i < nqueues; i++)
	{
		char	   *name = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		bool		unlimited;
		int64		room = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
													   SPI_tuptable->tupdesc, 2, &unlimited));
		int			c;
		bool		closed;

		/*
		 * A concurrency limit: the jobs published and not yet marked take
		 * room too (their rows are still waiting).
		 */
		if (!unlimited)
		{
			for (int b = 0; b < ninflight; b++)
				for (int k = 0; k < inflight[b]->n; k++)
					if (strcmp(inflight[b]->msgs[k].queue, name) == 0)
						room--;
			if (room <= 0)
				continue;
		}
		c = hs_circuit_get(HS_CIRCUIT_QUEUE, name);
		closed = hs_circuit_is_closed(c);
		if (!closed)
		{
			if (!hs_circuit_allow(c))
				continue;
			if (nprobes < HS_MAX_CIRCUITS)
				probes[nprobes++] = c;
		}
		names[nq] = CStringGetTextDatum(name);
		limits[nq] = Int32GetDatum(!closed ? 1 :
								   unlimited ? hs_dispatch_batch : (int32) Min(room, hs_dispatch_batch));
		nq++;
	}
	if (nq == 0)
		return 0;
	values[0] = PointerGetDatum(construct_array(names, nq, TEXTOID, -1, false, TYPALIGN_INT));
	values[1] = hs_int4_array(limits, nq);
	values[2] = Int32GetDatum(hs_dispatch_batch);
	/* the jobs of the batch in flight are not read again */
	for (int b = 0; b < ninflight; b++)
		nbusy += inflight[b]->n;
	busy = palloc(sizeof(Datum) * Max(nbusy, 1));
	nbusy = 0;
	for (int b = 0; b < ninflight; b++)
		for (int i = 0; i < inflight[b]->n; i++)
			busy[nbusy++] = Int64GetDatum(inflight[b]->msgs[i].job_id);
	values[3] = hs_int8_array(busy, nbusy);
	/* the priority hold-back of graceful degradation, as claims apply it */
	hs_degrade_status(&st);
	for (int p = 0; p < HS_NUM_PRIORITIES; p++)
		hold[p] = Int64GetDatum(st.holdback ? st.holdback_us[p] : 0);
	values[4] = hs_int8_array(hold, HS_NUM_PRIORITIES);
	if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "hasched: reading due jobs failed");
	return SPI_processed;
}

/* probes that got no outcome (no job due, a lost connection) go back */
static void
release_probes(int *list, int n)
{
	for (int i = 0; i < n; i++)
		hs_circuit_release_probe(list[i]);
}

/* TCP_CORK on the broker's socket, or off (which sends what it held) */
static void
cork(bool on)
{
	hs_socket_cork(conn != NULL ? amqp_get_sockfd(conn) : -1, on);
}

/* the message body of the AMQP contract */
static char *
message_body(const Msg *m, int epoch, int priority, int64 timeout_ms, const char *payload,
			 const char *tenant)
{
	StringInfoData s;

	initStringInfo(&s);
	appendStringInfo(&s, "{\"job_id\": " INT64_FORMAT ", \"attempt\": %d, \"lease_token\": ",
					 m->job_id, m->attempt);
	escape_json(&s, hs_format_token(epoch, m->attempt, m->lease_id));
	appendStringInfoString(&s, ", \"queue\": ");
	escape_json(&s, m->queue);
	appendStringInfoString(&s, ", \"tenant\": ");
	escape_json(&s, tenant ? tenant : "");
	appendStringInfo(&s, ", \"priority\": %d, \"timeout_ms\": " INT64_FORMAT ", \"payload\": %s}",
					 priority, timeout_ms, payload);
	return s.data;
}

/*
 * Read the due jobs (those of the batch in flight excepted) and publish
 * them; NULL when none is due.  The batch lives in a memory context of its
 * own until finish_batch().
 */
static Batch *
read_and_publish(void)
{
	MemoryContext round = CurrentMemoryContext;
	MemoryContext cxt;
	Batch	   *b;
	int32		epoch;
	int			n;
	int		   *priorities;
	int64	   *timeouts;
	char	  **payloads;
	char	  **tenants;

	nprobes = 0;
	hs_xact_begin("hasched dispatcher: reading due jobs");
	n = (int) read_batch(&epoch);
	if (n == 0)
	{
		hs_xact_end(true);
		release_probes(probes, nprobes);
		return NULL;
	}
	cxt = AllocSetContextCreate(TopMemoryContext, "hasched dispatcher batch",
								ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(cxt);
	b = palloc0(sizeof(Batch));
	b->cxt = cxt;
	b->n = n;
	b->epoch = epoch;
	b->broker = cur_broker;
	b->msgs = palloc0(sizeof(Msg) * n);
	b->nprobes = nprobes;
	b->probes = palloc(sizeof(int) * Max(nprobes, 1));
	memcpy(b->probes, probes, sizeof(int) * nprobes);
	MemoryContextSwitchTo(round);
	priorities = palloc(sizeof(int) * n);
	timeouts = palloc(sizeof(int64) * n);
	payloads = palloc(sizeof(char *) * n);
	tenants = palloc(sizeof(char *) * n);
	for (int i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Msg		   *m = &b->msgs[i];

		m->job_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		m->queue = MemoryContextStrdup(cxt, SPI_getvalue(tup, desc, 2));
		priorities[i] = DatumGetInt16(SPI_getbinval(tup, desc, 3, &isnull));
		m->attempt = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
		m->lease_id = DatumGetInt64(SPI_getbinval(tup, desc, 5, &isnull));
		timeouts[i] = DatumGetInt64(SPI_getbinval(tup, desc, 6, &isnull));
		payloads[i] = SPI_getvalue(tup, desc, 7);
		tenants[i] = SPI_getvalue(tup, desc, 8);
		m->qcircuit = hs_circuit_get(HS_CIRCUIT_QUEUE, m->queue);
	}
	hs_xact_end(true);

	/*
	 * publish, outside any transaction; one delivery tag per publish.  The
	 * socket is corked meanwhile: librabbitmq sends each message with a
	 * send() of its own, and on loopback each would wake the broker for a
	 * segment of its own; corked, the kernel sends full segments and the
	 * rest at the uncork.
	 */
	cork(true);
	for (int i = 0; i < n; i++)
	{
		Msg		   *m = &b->msgs[i];
		char	   *rk;
		char	   *err;
		char	   *msgid;
		char	   *body;
		amqp_basic_properties_t props;
		int			rc;
		bool		timed_out;

		if (lost)
		{
			fail_conn(m, "the connection to the broker was lost while publishing");
			continue;
		}
		rk = psprintf("hasched.%s.%s", m->queue, band_of(priorities[i]));
		if ((err = declare(rk)) != NULL)
		{
			fail_msg(m, err);
			continue;
		}
		msgid = psprintf(INT64_FORMAT ":%d", m->job_id, m->attempt);
		memset(&props, 0, sizeof(props));
		props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
			AMQP_BASIC_MESSAGE_ID_FLAG;
		props.content_type = amqp_cstring_bytes("application/json");
		props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
		props.message_id = amqp_cstring_bytes(msgid);
		body = message_body(m, epoch, priorities[i], timeouts[i], payloads[i], tenants[i]);
		/*
		 * A broker that stops reading (a resource alarm, a hung broker)
		 * blocks the send once the socket buffers are full, and librabbitmq
		 * waits for it without a limit: hasched.amqp_confirm_timeout is the
		 * send's deadline too (the socket is shut down then).
		 */
		hs_worker_blocking_socket_within(amqp_get_sockfd(conn), hs_amqp_confirm_timeout);
		rc = amqp_basic_publish(conn, channel, amqp_empty_bytes, amqp_cstring_bytes(rk), 1, 0,
								&props, amqp_cstring_bytes(body));
		timed_out = hs_worker_blocking_timed_out();
		blocking_end();
		if (rc != AMQP_STATUS_OK)
		{
			fail_conn(m, timed_out ?
					  psprintf("the broker did not read a publish within hasched.amqp_confirm_timeout (%d ms)",
							   hs_amqp_confirm_timeout) :
					  psprintf("publish failed: %s", amqp_error_string2(rc)));
			lost = true;
			continue;
		}
		m->tag = next_tag++;
		m->gen = channel_gen;
	}
	cork(false);
	b->published_at = GetCurrentTimestamp();
	return b;
}

/*
 * A batch whose messages are all settled: record the outcomes in the
 * circuits, mark the confirmed jobs dispatched and note the failures, in
 * one transaction; then free it.  Returns how many failed.
 */
static int
finish_batch(Batch *b)
{
	Datum	   *ok_ids = palloc(sizeof(Datum) * b->n);
	Datum	   *ok_attempts = palloc(sizeof(Datum) * b->n);
	Datum	   *ok_leases = palloc(sizeof(Datum) * b->n);
	Datum	   *bad_ids = palloc(sizeof(Datum) * b->n);
	Datum	   *bad_errors = palloc(sizeof(Datum) * b->n);
	int			nok = 0;
	int			nbad = 0;
	bool		conn_failed = false;
	const char *broker = b->broker >= 0 && b->broker < nbrokers ?
		brokers[b->broker].display : "the broker";

	for (int i = 0; i < b->n; i++)
	{
		Msg		   *m = &b->msgs[i];

		/* a lost connection is the broker's failure, not the queue's */
		if (m->conn_failed)
			conn_failed = true;
		else
			hs_circuit_record(m->qcircuit, !m->failed, m->failed ? m->error : NULL);
		if (!m->failed)
		{
			ok_ids[nok] = Int64GetDatum(m->job_id);
			ok_attempts[nok] = Int32GetDatum(m->attempt);
			ok_leases[nok] = Int64GetDatum(m->lease_id);
			nok++;
		}
		else
		{
			bad_ids[nbad] = Int64GetDatum(m->job_id);
			bad_errors[nbad] = CStringGetTextDatum(psprintf("dispatch to %s failed: %s",
															broker, m->error));
			nbad++;
		}
	}
	release_probes(b->probes, b->nprobes);
	/* the broker's circuit counts batches: a lost connection fails one */
	if (b->broker >= 0 && b->broker < nbrokers)
		hs_circuit_record(brokers[b->broker].circuit, !conn_failed,
						  conn_failed ? "the connection was lost during a batch" : NULL);

	hs_xact_begin("hasched dispatcher: marking confirmed jobs dispatched");
	hs_fencing_guard_xact(true);
	(void) hs_mark_dispatched(nok, ok_ids, ok_attempts, ok_leases, b->epoch);
	hs_note_publish_failed(nbad, bad_ids, bad_errors);
	hs_circuit_write_events();
	hs_xact_end(true);

	hs_dispatcher_count(nok, nbad);
	MemoryContextDelete(b->cxt);
	return nbad;
}

/* Finish the oldest batch in flight (all its messages settled). */
static int
finish_oldest(void)
{
	Batch	   *b = inflight[0];

	memmove(inflight, inflight + 1, sizeof(Batch *) * (ninflight - 1));
	ninflight--;
	return finish_batch(b);
}

static bool
batch_settled(const Batch *b)
{
	for (int i = 0; i < b->n; i++)
		if (!b->msgs[i].settled)
			return false;
	return true;
}

/*
 * One step of the pipeline: read and publish a batch; when the pipeline is
 * full, or nothing more was due, wait until the oldest batch is confirmed
 * (the broker confirms the others meanwhile) and finish it, and any after
 * it that are settled too.  Returns how many jobs were read; *failed: how
 * many publishes of the finished batches failed.
 */
static int
dispatch_step(int *failed)
{
	Batch	   *cur = NULL;
	int			n = 0;

	*failed = 0;
	/* after a nack: no new batch until the channel is renewed */
	if (conn != NULL && !lost && !nacked && ninflight < PIPELINE_DEPTH)
		cur = read_and_publish();
	if (cur)
	{
		n = cur->n;
		inflight[ninflight++] = cur;
	}
	if (ninflight > 0 && (cur == NULL || ninflight == PIPELINE_DEPTH || lost || conn == NULL))
	{
		int			nall = 0;
		Msg		  **all;
		int			k = 0;

		for (int b = 0; b < ninflight; b++)
			nall += inflight[b]->n;
		all = palloc(sizeof(Msg *) * Max(nall, 1));
		for (int b = 0; b < ninflight; b++)
			for (int i = 0; i < inflight[b]->n; i++)
				all[k++] = &inflight[b]->msgs[i];
		if (conn != NULL && !lost)
			wait_confirms(all, nall, inflight[0]->n,
						  inflight[0]->published_at + (int64) hs_amqp_confirm_timeout * 1000);
		if (lost || conn == NULL)
			fail_inflight("the connection to the broker was lost before the confirm");
		*failed += finish_oldest();
		while (ninflight > 0 && batch_settled(inflight[0]))
			*failed += finish_oldest();
	}
	return n;
}

/*
 * Dispatched jobs never started (lease over, or an older epoch): due again.
 * An index range scan (job_dispatched_idx); up to HS_REDISPATCH_LIMIT jobs
 * a transaction, as many transactions as it takes (after a failover, every
 * job the old primary dispatched).
 */
static void
expire_dispatched(void)
{
	int32		epoch;
	uint64		n;
	uint64		total = 0;

	do
	{
		n = 0;
		hs_xact_begin("hasched dispatcher: re-dispatching unstarted jobs");
		hs_fencing_guard_xact(true);
		epoch = current_epoch();
		if (epoch > 0)
			n = hs_redispatch_expired(epoch);
		hs_circuit_write_events();
		hs_xact_end(true);
		total += n;
		CHECK_FOR_INTERRUPTS();
	} while (n >= HS_REDISPATCH_LIMIT);
	if (total > 0)
		ereport(LOG,
				(errmsg("hasched dispatcher: %llu dispatched jobs were not started in time or before a failover; they are dispatched again",
						(unsigned long long) total)));
}

static long
dispatcher_round(void)
{
	TimestampTz now;
	int			failed = 0;
	int			n;
	bool		usable;

	if (!hs_node_may_act())
	{
		hs_dispatcher_set_status(MyProcPid, "fenced", hs_fencing_why());
		disconnect(NULL);
		return FENCED_MS;
	}
	load_brokers();
	if (nusable == 0)
	{
		hs_dispatcher_set_status(MyProcPid, "failed",
								 nbrokers == 0 ? "hasched.amqp_url lists no broker" :
								 psprintf("no usable broker in hasched.amqp_url: %s", brokers[0].error));
		return IDLE_MS * 5;
	}

	/*
	 * Is the extension there at this library's version (not being
	 * restored)?  Asked every round while it is not; once it is, at most
	 * once a second: a batch takes a round, and the question (a query of
	 * pg_extension, parsed each time) cost a twentieth of the dispatcher's
	 * CPU at full speed.
	 */
	now = GetCurrentTimestamp();
	if (now - usable_at >= (int64) USABLE_EVERY_MS * 1000)
	{
		hs_xact_begin("hasched dispatcher");
		usable = hs_extension_usable();
		hs_xact_end(true);
		usable_at = usable ? now : 0;
		if (!usable)
		{
			hs_dispatcher_set_status(MyProcPid, "waiting", "the hasched extension is not usable in hasched.database yet");
			return IDLE_MS;
		}
	}

	if (now - last_expiry >= (int64) EXPIRY_EVERY_MS * 1000)
	{
		last_expiry = now;
		expire_dispatched();
	}

	if (ninflight > 0 && (conn == NULL || lost))
	{
		fail_inflight("the connection to the broker was lost before the confirm");
		while (ninflight > 0)
			(void) finish_oldest();
	}
	if (!ensure_connected())
	{
		/* the circuit transitions of the attempts: as events */
		if (hs_circuit_events_pending())
		{
			hs_xact_begin("hasched dispatcher: recording circuit events");
			hs_circuit_write_events();
			hs_xact_end(true);
		}
		return Max((long) ((next_connect_at - GetCurrentTimestamp()) / 1000), 1);
	}
	n = dispatch_step(&failed);
	if (nacked && ninflight == 0 && conn != NULL && !lost)
		renew_channel();
	if (lost)
		disconnect("the connection was lost");
	else if (conn != NULL)
		hs_dispatcher_set_status(MyProcPid, "ok",
								 psprintf("connected to %s", broker_name(cur_broker)));
	if (conn != NULL)
		amqp_maybe_release_buffers(conn);
	if (failed > 0)
		return 100;
	if (n > 0 || ninflight > 0)
		return 0;				/* more may be due, or a batch waits */
	return IDLE_MS;
}

/* between rounds: the broker's socket, for a closed connection */
static int
dispatcher_sockets(HsWaitSocket *socks, int max)
{
	/* a batch in flight: its confirms are read by the next round */
	if (conn == NULL || max < 1 || ninflight > 0)
		return 0;
	socks[0].sock = amqp_get_sockfd(conn);
	socks[0].events = WL_SOCKET_READABLE;
	return socks[0].sock >= 0 ? 1 : 0;
}

/*
 * The broker said something between batches: a close, or the end of the
 * connection.  Read what is there; anything but a heartbeat ends the
 * connection (this process publishes only inside rounds).
 */
static void
dispatcher_socket_ready(pgsocket sock, uint32 events)
{
	amqp_frame_t frame;
	struct timeval zero = {0, 0};
	int			rc;

	if (conn == NULL || ninflight > 0)
		return;
	rc = amqp_simple_wait_frame_noblock(conn, &frame, &zero);
	if (rc == AMQP_STATUS_TIMEOUT)
		return;
	if (rc != AMQP_STATUS_OK)
		lost = true;
	else if (frame.frame_type == AMQP_FRAME_METHOD &&
			 (frame.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD ||
			  frame.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD))
		lost = true;
	if (lost)
	{
		disconnect("the broker closed the connection");
		SetLatch(MyLatch);
	}
}

static void
dispatcher_after_error(void)
{
	hs_worker_blocking_socket(PGINVALID_SOCKET);
	usable_at = 0;				/* ask again: the extension may be gone */
	/* its jobs stay waiting; messages of it that reach the broker are stale */
	while (ninflight > 0)
		MemoryContextDelete(inflight[--ninflight]->cxt);
	/* a round that failed half way: start over on a fresh connection */
	if (conn != NULL)
	{
		lost = true;
		disconnect("an error interrupted a batch");
	}
}

static void
dispatcher_detach(int code, Datum arg)
{
	hs_dispatcher_attach(NULL);
	hs_dispatcher_set_status(0, "down", "exited");
	hs_worker_blocking_socket(PGINVALID_SOCKET);
	if (conn != NULL)
	{
		amqp_destroy_connection(conn);
		conn = NULL;
	}
}

void
hasched_dispatcher_main(Datum main_arg)
{
	static const HsWorkerLoop loop = {
		.name = "dispatcher",
		.round = dispatcher_round,
		.after_error = dispatcher_after_error,
		.error_pause_ms = 1000,
		.sockets = dispatcher_sockets,
		.socket_ready = dispatcher_socket_ready,
	};

	hs_worker_signals(false);
	hs_dispatcher_set_status(MyProcPid, "starting", "");
	hs_dispatcher_attach(MyLatch);
	on_shmem_exit(dispatcher_detach, (Datum) 0);
	hs_worker_connect("hasched dispatcher");
	hs_worker_run(&loop);
}

/* Register the dispatcher when hasched.amqp_url is set; from _PG_init. */
void
hs_register_dispatcher(void)
{
	/* on the primary only: started when recovery has finished (a promotion too) */
	hs_register_static_worker("dispatcher", "hasched_dispatcher_main", true,
							  BgWorkerStart_RecoveryFinished);
}
