/*-------------------------------------------------------------------------
 *
 * worker.h
 *		The background workers' layer: the one loop that every hasched
 *		background worker runs on, its transaction helpers, and the
 *		workers' entry points.
 *
 * Layers: this layer includes src/core/ (and through it src/common/);
 * nothing outside src/workers/ includes this header.
 *
 * IDENTIFICATION
 *		src/workers/worker.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef HS_WORKER_H
#define HS_WORKER_H

#include "core/hasched.h"
#include "postmaster/bgworker.h"

/*
 * A background worker's loop.  round() does one unit of the worker's work
 * (in transactions of its own, through hs_xact_begin/hs_xact_end) and
 * returns how many milliseconds to wait on the latch before the next round,
 * or -1 to exit.  An error that escapes a round is reported, its
 * transaction rolled back, after_error() (when set) repairs the worker's
 * own state, and the loop goes on after error_pause_ms: a bad row never
 * kills a worker.
 */
/* A socket a worker waits on besides its latch (WL_SOCKET_* events). */
typedef struct HsWaitSocket
{
	pgsocket	sock;
	uint32		events;
} HsWaitSocket;

#define HS_MAX_WAIT_SOCKETS	256

typedef struct HsWorkerLoop
{
	const char *name;
	long		(*round) (void);
	void		(*after_error) (void);
	long		error_pause_ms;

	/*
	 * Optional, for workers that serve sockets (the health listener, later
	 * the broker and ZooKeeper connections): sockets() lists what to wait
	 * for after each round; socket_ready() handles one that is ready.  Both
	 * run in the worker's main thread, like everything else here.
	 */
	int			(*sockets) (HsWaitSocket *socks, int max);
	void		(*socket_ready) (pgsocket sock, uint32 events);
} HsWorkerLoop;

extern void hs_register_static_worker(const char *what, const char *function,
									  bool database, BgWorkerStartTime start);
extern void hs_worker_signals(bool sigint_cancels);
extern void hs_worker_connect(const char *appname);
extern void hs_worker_run(const HsWorkerLoop *loop) pg_attribute_noreturn();
extern void hs_xact_begin(const char *activity);
extern void hs_xact_end(bool commit);
extern void hs_worker_blocking_socket(pgsocket sock);
extern void hs_worker_blocking_socket_within(pgsocket sock, int timeout_ms);
extern bool hs_worker_blocking_timed_out(void);
extern pgsocket hs_worker_tcp_connect(const char *host, int port, int timeout_ms,
									  char **error);

/* scheduler.c, health_listener.c, coordinator.c, dispatcher.c */
extern void hs_register_scheduler(void);
extern void hs_register_health_listener(void);
extern void hs_register_coordinator(void);
extern void hs_register_dispatcher(void);

/* entry points named in BackgroundWorker.bgw_function_name */
extern PGDLLEXPORT void hasched_scheduler_main(Datum main_arg);
extern PGDLLEXPORT void hasched_executor_main(Datum main_arg);
extern PGDLLEXPORT void hasched_health_listener_main(Datum main_arg);
extern PGDLLEXPORT void hasched_coordinator_main(Datum main_arg);
extern PGDLLEXPORT void hasched_dispatcher_main(Datum main_arg);

#endif							/* HS_WORKER_H */
