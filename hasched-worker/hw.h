/*-------------------------------------------------------------------------
 *
 * hw.h
 *		hasched-worker: runs a command for each job of a hasched queue.
 *		Declarations shared by its files.
 *
 * The program is one thread and one poll() loop (main.c) over: a self-pipe
 * for signals, the database connection's socket (LISTEN/NOTIFY), the pipes
 * of the running commands, the health endpoint's sockets and, with
 * --zookeeper, the ZooKeeper client's socket.  The reports of successes
 * (and, in pull mode, the next claim, in the same transaction) are sent
 * without waiting: commands start and finish while the server commits;
 * other database calls are synchronous and short (each waits for a
 * statement sent first); connect_timeout, TCP keepalives and
 * tcp_user_timeout bound them when a server goes away.
 *
 *   main.c        arguments, the loop, signals, the log, a job's life
 *   db.c          the database connection and its circuit breaker, and the
 *                 reports every job source shares (heartbeat, complete, fail)
 *   source_pull.c the pull job source: claim() woken by NOTIFY, polling as
 *                 the fallback
 *   source_amqp.c the AMQP job source: deliveries from RabbitMQ, start()ed
 *                 with their lease token, acked after the report
 *   run.c         a command per job: process group, pipes, timeouts
 *   health.c      GET /health on 127.0.0.1
 *   json.c        JSON syntax check and UTF-8 clean-up of command output
 *   zk.c          --zookeeper: the worker's ephemeral znode (its liveness),
 *                 the single-threaded ZooKeeper client in the same loop
 *
 * IDENTIFICATION
 *		hasched-worker/hw.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef HW_H
#define HW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <amqp.h>

#include "libpq-fe.h"

#include "hs_common.h"

#define HW_MAX_CONCURRENCY	1024
#define HW_STDERR_TAIL		4096	/* bytes of a command's stderr kept for fail() */

/* ------------------------------------------------------------------------
 * Configuration (main.c parses it)
 * ------------------------------------------------------------------------ */
typedef struct HwConfig
{
	const char *db;				/* libpq connection string */
	const char *queue;
	const char *name;			/* worker name given to claim() */
	int			concurrency;
	int			prefetch;		/* jobs taken beyond --concurrency (see take_room) */
	int64_t		poll_usec;		/* polling fallback interval */
	int			health_port;	/* 0: no health endpoint */
	const char *log_path;		/* NULL: stderr */
	int64_t		kill_grace_usec;	/* SIGTERM -> SIGKILL on timeout */
	size_t		max_output;		/* bytes of stdout kept as the result */
	int64_t		stall_usec;		/* health: no job finished this long while saturated */
	bool		listen;			/* use LISTEN/NOTIFY (false: poll only) */
	const char *amqp;			/* --amqp URL list; NULL: pull mode */
	const char *amqp_queue_type;	/* quorum or classic */
	const char *amqp_ca_file;	/* amqps: CA certificates (PEM); NULL: the system's */
	bool		amqp_no_verify;	/* amqps: do not verify the broker's certificate */
	const char *zookeeper;		/* ZooKeeper connection string; NULL: none */
	const char *zk_path;		/* hasched's root znode (hasched.zookeeper_path) */
	int			zk_timeout_ms;	/* the session timeout asked for */
	char	  **argv;			/* the command */
	char	   *exec_path;		/* argv[0] as found in PATH at start (malloc'd) */
} HwConfig;

extern HwConfig hw_cfg;

/* ------------------------------------------------------------------------
 * Time and log (main.c)
 * ------------------------------------------------------------------------ */
extern int64_t hw_now(void);	/* monotonic microseconds */
extern void hw_log(const char *level, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));
extern void hw_log_flush(void);	/* INFO lines are buffered until then */

/* ------------------------------------------------------------------------
 * A job and the run of its command (run.c)
 * ------------------------------------------------------------------------ */
typedef enum HwPhase
{
	HW_FREE = 0,
	HW_QUEUED,					/* claimed, waits for room under --concurrency */
	HW_RUNNING,					/* the command runs (or its pipes drain) */
	HW_REPORTING,				/* its outcome waits to be recorded */
} HwPhase;

typedef struct HwBuf
{
	char	   *data;
	size_t		len;
	size_t		cap;
} HwBuf;

typedef struct HwJob
{
	HwPhase		phase;

	/* from the job source */
	int64_t		id;
	char		token[HS_TOKEN_BUFSZ];
	int			attempt;
	char	   *payload;		/* JSON text */
	char		tenant[128];
	int			priority;
	double		timeout_s;
	double		lease_s;
	void	   *source_data;	/* the source's own (an AMQP delivery, later) */
	int64_t		taken;			/* when it was taken (queued jobs start oldest first) */

	/* the command */
	pid_t		pid;			/* also its process group; 0 once reaped */
	int			fd_in;			/* payload to its stdin; -1 when done */
	int			fd_out;
	int			fd_err;
	size_t		in_off;
	HwBuf		out;			/* first max_output bytes of stdout */
	bool		out_truncated;
	char		err[HW_STDERR_TAIL];	/* ring: the last bytes of stderr */
	size_t		err_total;
	int			exec_errno;		/* the command could not be started */
	int			status;			/* waitpid status */
	bool		exited;
	bool		timed_out;
	bool		abandoned;		/* the lease is gone: kill, report nothing */
	bool		stopping;		/* killed because the worker stops */
	int64_t		started;
	int64_t		deadline;		/* timeout: SIGTERM the group */
	int64_t		kill_at;		/* then SIGKILL, 0 until SIGTERM was sent */
	int64_t		exited_at;
	int64_t		next_heartbeat;

	/* the report */
	bool		sending;		/* its success is in the statement sent */
	char	   *failure;		/* why the attempt failed; NULL: it succeeded */
	int64_t		reporting_since;
	int64_t		next_report;
	int			report_tries;
	bool		report_alone;	/* a batch was refused: report it by itself */
} HwJob;

extern bool hw_run_start(HwJob *job);
extern int	hw_run_fd(void);
extern void hw_run_spawned(void);
extern void hw_run_read(HwJob *job, int fd);
extern void hw_run_write_stdin(HwJob *job);
extern void hw_run_kill(HwJob *job, int sig);
extern void hw_run_reap(HwJob *jobs, int njobs);
extern bool hw_run_done(HwJob *job, int64_t now);
extern void hw_run_close(HwJob *job);
extern char *hw_run_failure(const HwJob *job);
extern void hw_buf_free(HwBuf *b);

/* ------------------------------------------------------------------------
 * The database connection, its circuit breaker, and the reports (db.c)
 * ------------------------------------------------------------------------ */
typedef enum HwDbResult
{
	HW_DB_OK,
	HW_DB_STALE,				/* JQ006: this lease is no longer the job's */
	HW_DB_ERROR,				/* an error of this call; the connection is fine */
	HW_DB_DOWN,					/* no usable connection (breaker open, lost) */
} HwDbResult;

typedef enum HwBreakerState
{
	HW_BREAKER_CLOSED,
	HW_BREAKER_OPEN,
	HW_BREAKER_HALF_OPEN,
} HwBreakerState;

extern PGconn *hw_db_get(void);
extern bool hw_db_up(void);
extern HwBreakerState hw_db_breaker(int64_t *open_until);
extern int	hw_db_socket(void);
extern bool hw_db_consume_notifies(void);
extern HwDbResult hw_db_call(const char *sql, int nparams, const char *const *values,
							 PGresult **res, char **errmsg);
extern HwDbResult hw_db_send(const char *sql);
extern bool hw_db_sent_busy(void);
extern void hw_db_wait(void);
extern bool hw_db_sent_result(HwDbResult *r, PGresult **res, char **errmsg);
extern char *hw_db_literal(const char *s, size_t len);
extern const char *hw_db_fatal_config(void);
extern void hw_set_fatal_config(const char *why);
extern void hw_db_close(void);

extern HwDbResult hw_report_heartbeat(HwJob *job);
extern HwDbResult hw_report_complete(HwJob *job);
extern HwDbResult hw_report_send(HwJob **jobs, int n, const char *then);
extern HwDbResult hw_report_fail(HwJob *job, const char *error, bool retry);

/* ------------------------------------------------------------------------
 * Job sources: where jobs come from.  The pull source claims them with
 * hasched.claim(); an AMQP source (later) would take deliveries from the
 * broker.  Either way the reports go to the database with the lease token
 * (db.c), and the source settles the job afterwards (AMQP: ack).
 * ------------------------------------------------------------------------ */
typedef struct HwSource HwSource;
struct HwSource
{
	const char *name;
	/* fd for poll() (POLLIN), or -1 */
	int			(*fd) (HwSource *src);
	/* that fd is readable: consume; true when jobs may be waiting */
	bool		(*readable) (HwSource *src);
	/* take up to max jobs into jobs[0..]; the count, or -1 (see hw_db_up) */
	int			(*fetch) (HwSource *src, HwJob **jobs, int max);
	/*
	 * optional, instead of fetch() while the database is up: the statement
	 * that takes up to max jobs (malloc'd; "" when there is nothing to
	 * take now; sent with the reports of the successes, without waiting),
	 * and the jobs from its result (*more: others are known to wait)
	 */
	char	   *(*fetch_sql) (HwSource *src, int max);
	int			(*fetch_take) (HwSource *src, PGresult *res, HwJob **jobs, int max, bool *more);
	/*
	 * optional: that statement was not committed (alone: without reports
	 * in its transaction, so the statement itself was refused; down: the
	 * database went away)
	 */
	void		(*fetch_failed) (HwSource *src, bool alone, bool down);
	/* the job's outcome is recorded (or its lease was stale): let it go */
	void		(*settle) (HwSource *src, HwJob *job, bool recorded);
	/* optional: the settles of a batch of reports begin (true), or end */
	void		(*settle_batch) (HwSource *src, bool begin);
	/* the connection came back: redo subscriptions (LISTEN); may be NULL */
	void		(*reconnected) (HwSource *src, PGconn *conn);
	/* optional: when fetch() wants to be called at the latest (reconnects, heartbeats) */
	int64_t		(*next_wake) (HwSource *src);
	/* optional: its /health check as a JSON member ("name": {...}); false: failing */
	bool		(*health) (HwSource *src, char *out, size_t size);
	/* optional: the worker stops: take no more, give back what is not started */
	void		(*stop) (HwSource *src);
	/* optional: jobs known to wait for a free slot */
	int			(*waiting) (HwSource *src);
	/* optional: how many jobs the source may hand over beyond --concurrency now */
	void		(*ahead) (HwSource *src, int n);
	void	   *state;
};

extern HwSource *hw_source_pull(const char *queue, const char *worker, bool listen);

#define HW_AMQP_BANDS	3		/* high, medium, low */

typedef struct HwAmqpUrl
{
	struct amqp_connection_info info;
	char		shown[300];		/* without the password */
} HwAmqpUrl;

extern const char *hw_amqp_parse_urls(const char *list, HwAmqpUrl **urls, int *nurls);
extern bool hw_amqp_any_tls(const HwAmqpUrl *urls, int nurls);
extern HwSource *hw_source_amqp(HwAmqpUrl *urls, int nurls, const char *queue,
								const char *queue_type, int prefetch);

/* ------------------------------------------------------------------------
 * Health endpoint (health.c)
 * ------------------------------------------------------------------------ */
#define HW_HEALTH_MAX_CLIENTS	8

typedef struct HwHealth
{
	int			listen_fd;
	int			client_fd[HW_HEALTH_MAX_CLIENTS];
	int64_t		client_deadline[HW_HEALTH_MAX_CLIENTS];
	char		client_buf[HW_HEALTH_MAX_CLIENTS][1024];
	size_t		client_len[HW_HEALTH_MAX_CLIENTS];
} HwHealth;

/* fills body (JSON) and returns the HTTP status: 200 or 503 */
typedef int (*HwHealthReport) (char *body, size_t size);

extern int	hw_health_open(HwHealth *h, int port, char **errmsg);
extern void hw_health_accept(HwHealth *h);
extern void hw_health_io(HwHealth *h, int slot, HwHealthReport report);
extern void hw_health_expire(HwHealth *h, int64_t now);

/* ------------------------------------------------------------------------
 * ZooKeeper registration (zk.c)
 * ------------------------------------------------------------------------ */
extern const char *hw_zk_check_connect(const char *s);
extern const char *hw_zk_check_path(const char *p);
extern char *hw_zk_encode_name(const char *name);
extern bool hw_zk_enabled(void);
extern bool hw_zk_start(void);
extern bool hw_zk_may_claim(void);
extern bool hw_zk_process(void);
extern int	hw_zk_poll(short *events, int64_t *wake_at);
extern void hw_zk_ready(short revents);
extern bool hw_zk_health(char *out, size_t size);
extern void hw_zk_close(void);

/* ------------------------------------------------------------------------
 * Output handling (json.c)
 * ------------------------------------------------------------------------ */
extern bool hw_json_valid(const char *s, size_t len);
extern bool hw_json_member(const char *s, size_t len, const char *key, const char **val,
						   size_t *vlen);
extern bool hw_json_string_value(const char *val, size_t vlen, char *out, size_t size);
extern void hw_utf8_clean(char *s, size_t len);

#endif							/* HW_H */
