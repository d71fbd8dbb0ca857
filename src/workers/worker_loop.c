/*-------------------------------------------------------------------------
 *
 * worker_loop.c
 *		The loop every hasched background worker runs on: signals, the
 *		database connection, the latch wait, interrupts, configuration
 *		reload, error recovery that keeps the process alive, activity
 *		reporting and the flush of table statistics.
 *
 * Statistics: a background worker that never exits must flush its table
 * statistics itself, or autovacuum never learns of the rows it updated
 * and deleted.  hs_xact_end() offers a flush after every transaction
 * (pgstat_report_stat(false) flushes at most once a second), and the loop
 * never sleeps past the moment a pending flush is due.
 *
 * Workers that serve sockets (the health listener) list them with
 * sockets(); the loop then waits on a WaitEventSet of the latch, the
 * postmaster and those sockets, and hands each ready one to
 * socket_ready(), in this same thread.
 *
 * Libraries that block: a call into a client library that waits for its
 * peer in a poll() of its own (librabbitmq's RPCs restart their poll()
 * after a signal) would not see a SIGTERM until its own timeout.  Around
 * such a call the worker names the socket (hs_worker_blocking_socket());
 * SIGTERM then shuts that socket down, the call returns at once with a
 * closed connection, and the process exits at its next
 * CHECK_FOR_INTERRUPTS.  hs_worker_tcp_connect() connects a TCP socket on
 * the latch, so that the connect itself is interruptible too.
 *
 * IDENTIFICATION
 *		src/workers/worker_loop.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"

#include "workers/worker.h"

/* what a round allocates outside its transactions; reset after each round */
static MemoryContext round_cxt = NULL;

/* the wait set of a worker with sockets, rebuilt for every wait */
static WaitEventSet *wait_set = NULL;

/*
 * Wait for the latch, postmaster death, the timeout, or one of the
 * worker's sockets, and hand the ready sockets to the worker.
 */
static void
wait_with_sockets(const HsWorkerLoop *loop, long delay)
{
	HsWaitSocket socks[HS_MAX_WAIT_SOCKETS];
	WaitEvent	events[HS_MAX_WAIT_SOCKETS];
	int			nsocks;
	int			nready;

	/* a set left behind by an error in socket_ready() is freed here */
	if (wait_set != NULL)
	{
		FreeWaitEventSet(wait_set);
		wait_set = NULL;
	}
	nsocks = loop->sockets(socks, HS_MAX_WAIT_SOCKETS);
	wait_set = CreateWaitEventSet(TopMemoryContext, nsocks + 2);
	AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (int i = 0; i < nsocks; i++)
		AddWaitEventToSet(wait_set, socks[i].events, socks[i].sock, NULL, NULL);

	nready = WaitEventSetWait(wait_set, delay, events, lengthof(events), PG_WAIT_EXTENSION);
	for (int i = 0; i < nready; i++)
	{
		if (events[i].events & WL_LATCH_SET)
			ResetLatch(MyLatch);
		else if (events[i].events & WL_SOCKET_MASK)
			loop->socket_ready(events[i].fd, events[i].events);
	}
	FreeWaitEventSet(wait_set);
	wait_set = NULL;
}

/* the socket a library call blocks on now, or -1 (see the file header) */
static volatile sig_atomic_t blocking_socket = -1;
/* hs_worker_blocking_socket_within(): its timeout, and whether it fired */
static TimeoutId blocking_timeout_id;
static bool blocking_timeout_registered = false;
static bool blocking_timeout_on = false;
static volatile sig_atomic_t blocking_timed_out = false;

/*
 * Name the socket that the library calls from now on may block on (-1:
 * none).  Leaving it named after the call is harmless until the socket is
 * closed: name -1 before closing it.
 */
void
hs_worker_blocking_socket(pgsocket sock)
{
	if (blocking_timeout_on)
	{
		disable_timeout(blocking_timeout_id, false);
		blocking_timeout_on = false;
	}
	blocking_timed_out = false;
	blocking_socket = sock;
}

/* the deadline passed: the call blocked on the socket returns (shut down) */
static void
blocking_deadline(void)
{
	int			sock = blocking_socket;

	if (sock >= 0)
	{
		(void) shutdown(sock, SHUT_RDWR);
		blocking_timed_out = true;
	}
}

/*
 * hs_worker_blocking_socket(), with a deadline: a call still blocked on
 * the socket timeout_ms from now returns with the socket shut down (the
 * connection is lost; hs_worker_blocking_timed_out() says why).  For
 * librabbitmq's sends, which wait for the socket to take data with no time
 * limit of their own.
 */
void
hs_worker_blocking_socket_within(pgsocket sock, int timeout_ms)
{
	hs_worker_blocking_socket(sock);
	if (sock < 0 || timeout_ms <= 0)
		return;
	if (!blocking_timeout_registered)
	{
		blocking_timeout_id = RegisterTimeout(USER_TIMEOUT, blocking_deadline);
		blocking_timeout_registered = true;
	}
	enable_timeout_after(blocking_timeout_id, timeout_ms);
	blocking_timeout_on = true;
}

/* Did the deadline of hs_worker_blocking_socket_within() end the call? */
bool
hs_worker_blocking_timed_out(void)
{
	return blocking_timed_out;
}

/* SIGTERM: die(), and end the wait of a library call blocked on a socket */
static void
worker_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;
	int			sock = blocking_socket;

	if (sock >= 0)
		(void) shutdown(sock, SHUT_RDWR);
	errno = save_errno;
	die(postgres_signal_arg);
}

/*
 * Signal handlers: SIGHUP reloads the configuration at the next round,
 * SIGTERM ends the process (at the next CHECK_FOR_INTERRUPTS; a library
 * call blocked on the socket named by hs_worker_blocking_socket() returns
 * first), and with sigint_cancels SIGINT cancels the running statement
 * (the executors: a cancel() of a running job).
 */
void
hs_worker_signals(bool sigint_cancels)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, worker_sigterm);
	if (sigint_cancels)
		pqsignal(SIGINT, StatementCancelHandler);
	BackgroundWorkerUnblockSignals();
}

/*
 * Connect to hasched.database.  hasched's own writes in a worker (events,
 * history, job outcomes) commit asynchronously: a lost one means a job runs
 * again, never that a result is recorded twice.  Its statements plan as
 * the API's do (hs_plan_for_queues).
 */
void
hs_worker_connect(const char *appname)
{
	BackgroundWorkerInitializeConnection(hs_database, NULL, 0);
	pgstat_report_appname(appname);
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);
	hs_plan_for_queues(GUC_ACTION_SET);
}

/*
 * A non-blocking TCP connection to host:port (each address of the name in
 * turn) within timeout_ms, waiting on the latch: a SIGTERM or postmaster
 * death ends the wait at once.  TCP_NODELAY and keepalives are on, the
 * socket closes on exec.  Returns the socket, or PGINVALID_SOCKET with
 * *error set.  The name is resolved by getaddrinfo(), which may block on
 * a DNS server: give brokers as addresses, or names in /etc/hosts, where
 * that matters.
 */
pgsocket
hs_worker_tcp_connect(const char *host, int port, int timeout_ms, char **error)
{
	struct addrinfo hint;
	struct addrinfo *list;
	char		portstr[16];
	TimestampTz deadline = GetCurrentTimestamp() + (int64) timeout_ms * 1000;
	int			rc;

	*error = NULL;
	memset(&hint, 0, sizeof(hint));
	hint.ai_family = AF_UNSPEC;
	hint.ai_socktype = SOCK_STREAM;
	hint.ai_protocol = IPPROTO_TCP;
	snprintf(portstr, sizeof(portstr), "%d", port);
	rc = getaddrinfo(host, portstr, &hint, &list);
	if (rc != 0)
	{
		*error = psprintf("cannot resolve host \"%s\": %s", host, gai_strerror(rc));
		return PGINVALID_SOCKET;
	}
	for (struct addrinfo *a = list; a != NULL; a = a->ai_next)
	{
		pgsocket	sock;
		int			one = 1;
		int			soerr = 0;
		socklen_t	len = sizeof(soerr);

		sock = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
					  a->ai_protocol);
		if (sock < 0)
		{
			*error = psprintf("cannot create a socket: %m");
			continue;
		}
		(void) setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		(void) setsockopt(sock, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
		if (connect(sock, a->ai_addr, a->ai_addrlen) == 0)
		{
			freeaddrinfo(list);
			return sock;
		}
		if (errno == EINPROGRESS)
		{
			for (;;)
			{
				long		left = (long) ((deadline - GetCurrentTimestamp()) / 1000);
				int			ev;

				if (left <= 0)
				{
					soerr = ETIMEDOUT;
					break;
				}
				ev = WaitLatchOrSocket(MyLatch,
									   WL_LATCH_SET | WL_SOCKET_CONNECTED | WL_TIMEOUT |
									   WL_EXIT_ON_PM_DEATH,
									   sock, left, PG_WAIT_EXTENSION);
				if (ev & WL_LATCH_SET)
				{
					ResetLatch(MyLatch);
					CHECK_FOR_INTERRUPTS();
				}
				if (ev & WL_SOCKET_CONNECTED)
				{
					if (getsockopt(sock, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0)
						soerr = errno;
					break;
				}
			}
		}
		else
			soerr = errno;
		if (soerr == 0)
		{
			freeaddrinfo(list);
			return sock;
		}
		closesocket(sock);
		errno = soerr;
		*error = soerr == ETIMEDOUT ?
			psprintf("cannot connect to %s:%d: no answer within %d ms", host, port, timeout_ms) :
			psprintf("cannot connect to %s:%d: %m", host, port);
		/* the time is up for every address */
		if (soerr == ETIMEDOUT)
			break;
	}
	freeaddrinfo(list);
	return PGINVALID_SOCKET;
}

/*
 * Register one of hasched's static background workers ("hasched <what>",
 * entry point function): restarted one second after it exits or crashes;
 * with a database connection (to hasched.database) or shared memory only.
 * Called from _PG_init.
 */
void
hs_register_static_worker(const char *what, const char *function, bool database,
						  BgWorkerStartTime start)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS |
		(database ? BGWORKER_BACKEND_DATABASE_CONNECTION : 0);
	worker.bgw_start_time = start;
	worker.bgw_restart_time = 1;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "hasched");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(worker.bgw_name, BGW_MAXLEN, "hasched %s", what);
	snprintf(worker.bgw_type, BGW_MAXLEN, "hasched %s", what);
	RegisterBackgroundWorker(&worker);
}

/* Start a transaction with a snapshot and SPI, reporting the activity. */
void
hs_xact_begin(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

/*
 * End it (commit or roll back), then offer the statistics for a flush.
 * The transaction's end leaves TopMemoryContext current: go back to the
 * round's context, so that nothing the round allocates later outlives it.
 */
void
hs_xact_end(bool commit)
{
	SPI_finish();
	PopActiveSnapshot();
	if (commit)
		CommitTransactionCommand();
	else
		AbortCurrentTransaction();
	if (round_cxt != NULL)
		MemoryContextSwitchTo(round_cxt);
	(void) pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

void
hs_worker_run(const HsWorkerLoop *loop)
{
	sigjmp_buf	local_sigjmp_buf;

	/* whatever a round allocates outside its transactions lives until the next */
	round_cxt = AllocSetContextCreate(TopMemoryContext, "hasched worker round",
									  ALLOCSET_DEFAULT_SIZES);

	if (sigsetjmp(local_sigjmp_buf, 1) != 0)
	{
		/* an error escaped the round: report it, clean up, go on */
		error_context_stack = NULL;
		HOLD_INTERRUPTS();
		disable_all_timeouts(false);
		QueryCancelPending = false;
		EmitErrorReport();
		AbortCurrentTransaction();
		FlushErrorState();
		MemoryContextSwitchTo(TopMemoryContext);
		RESUME_INTERRUPTS();
		pgstat_report_activity(STATE_IDLE, NULL);
		if (loop->after_error)
			loop->after_error();
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 loop->error_pause_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	PG_exception_stack = &local_sigjmp_buf;

	for (;;)
	{
		long		delay;
		long		stats_due;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		MemoryContextSwitchTo(round_cxt);
		delay = loop->round();
		if (delay < 0)
			proc_exit(0);

		/* statistics still pending: wake when their flush is due */
		stats_due = pgstat_report_stat(false);
		if (stats_due > 0 && stats_due < delay)
			delay = stats_due;

		if (loop->sockets != NULL)
			wait_with_sockets(loop, delay);
		else
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 delay, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(round_cxt);
	}
}
