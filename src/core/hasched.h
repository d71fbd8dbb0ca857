/*-------------------------------------------------------------------------
 *
 * hasched.h
 *		The core layer's declarations: SQLSTATEs, settings, shared memory,
 *		the job state machine, submit, claim, quotas, schedules and the
 *		commit-time wake-ups.
 *
 * Layers: src/workers/ and src/api/ include this header; src/core/ includes
 * only it and src/common/.  Nothing here names a worker's function: a
 * backend reaches the background workers through shared memory (their
 * latches and slots), never by calling into a worker's file.
 *
 * IDENTIFICATION
 *		src/core/hasched.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef HASCHED_H
#define HASCHED_H

#include "postgres.h"

#include "access/xact.h"
#include "datatype/timestamp.h"
#include "executor/spi.h"
#include "nodes/execnodes.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/spin.h"
#include "utils/array.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

#include "common/hs_common.h"

/*
 * SQLSTATEs of class JQ (implementation-defined, "job queue").  The README
 * lists them; keep the two in step.
 */
#define HS_ERRCODE_QUOTA_EXCEEDED		MAKE_SQLSTATE('J','Q','0','0','1')
#define HS_ERRCODE_RATE_LIMITED			MAKE_SQLSTATE('J','Q','0','0','2')
#define HS_ERRCODE_READ_ONLY_MODE		MAKE_SQLSTATE('J','Q','0','0','3')
#define HS_ERRCODE_NOT_PRIMARY			MAKE_SQLSTATE('J','Q','0','0','4')
#define HS_ERRCODE_STALE_LEASE			MAKE_SQLSTATE('J','Q','0','0','6')
#define HS_ERRCODE_INVALID_TRANSITION	MAKE_SQLSTATE('J','Q','0','0','7')
#define HS_ERRCODE_UNKNOWN_QUEUE		MAKE_SQLSTATE('J','Q','0','1','0')
#define HS_ERRCODE_INVALID_PRIORITY		MAKE_SQLSTATE('J','Q','0','1','1')
#define HS_ERRCODE_PAYLOAD_TOO_LARGE	MAKE_SQLSTATE('J','Q','0','1','2')
#define HS_ERRCODE_INVALID_ARGUMENT		MAKE_SQLSTATE('J','Q','0','1','3')
#define HS_ERRCODE_UNKNOWN_JOB			MAKE_SQLSTATE('J','Q','0','1','4')
#define HS_ERRCODE_UNKNOWN_TENANT		MAKE_SQLSTATE('J','Q','0','1','5')
#define HS_ERRCODE_WRONG_TRANSPORT		MAKE_SQLSTATE('J','Q','0','1','6')
#define HS_ERRCODE_UNKNOWN_MODE			MAKE_SQLSTATE('J','Q','0','1','7')
#define HS_ERRCODE_INVALID_SQL			MAKE_SQLSTATE('J','Q','0','1','8')
#define HS_ERRCODE_INVALID_SCHEDULE		MAKE_SQLSTATE('J','Q','0','1','9')
#define HS_ERRCODE_UNKNOWN_TIMEZONE		MAKE_SQLSTATE('J','Q','0','2','0')
#define HS_ERRCODE_DUPLICATE_SCHEDULE	MAKE_SQLSTATE('J','Q','0','2','1')
#define HS_ERRCODE_UNKNOWN_SCHEDULE		MAKE_SQLSTATE('J','Q','0','2','2')
/* raised by the upgrade script (SQL): not hasched.database, or not preloaded */
#define HS_ERRCODE_WRONG_DATABASE		MAKE_SQLSTATE('J','Q','0','2','3')
#define HS_ERRCODE_NOT_LEADER			MAKE_SQLSTATE('J','Q','0','2','4')
/* raised by availability() (SQL): a NULL bound, until not after since, ... */
#define HS_ERRCODE_INVALID_WINDOW		MAKE_SQLSTATE('J','Q','0','2','5')

/* Priorities: 0 is the most urgent. */
#define HS_PRIORITY_MIN		0
#define HS_PRIORITY_MAX		9
#define HS_NUM_PRIORITIES	(HS_PRIORITY_MAX - HS_PRIORITY_MIN + 1)
#define HS_PRIORITY_HIGH	0
#define HS_PRIORITY_MEDIUM	5
#define HS_PRIORITY_LOW		9

#define HS_QUEUE_NAME_MAX	64		/* queue.name is at most 63 bytes */

/* Job states, in the order of the hasched.job_state enum. */
typedef enum HsJobState
{
	HS_STATE_SCHEDULED = 0,
	HS_STATE_PENDING,
	HS_STATE_RUNNING,
	HS_STATE_DISPATCHED,
	HS_STATE_SUCCEEDED,
	HS_STATE_FAILED,
	HS_STATE_DEAD,
	HS_STATE_CANCELLED,
	HS_NUM_STATES
} HsJobState;

/* settings.c: the hasched.* settings */
extern int	hs_submit_synchronous_commit;
extern int	hs_max_payload_bytes;
extern char *hs_default_tier;
extern bool hs_enforce_quotas;
extern char *hs_tenant;
extern int	hs_max_queues;
extern int	hs_max_tenants;
extern int	hs_claim_rewind_interval;
extern int	hs_quota_shards;
extern char *hs_database;
extern int	hs_max_executors;
extern int	hs_min_executors;
extern int	hs_executor_idle_timeout;
extern int	hs_executor_group_ms;
extern int	hs_scheduler_naptime;
extern int	hs_misfire_threshold;
extern int	hs_history_retention;
extern int	hs_health_port;
extern char *hs_health_listen_addresses;
extern char *hs_zookeeper;
extern char *hs_zookeeper_path;
extern int	hs_zookeeper_session_timeout;
extern int	hs_zookeeper_fence_margin;
extern int	hs_max_timeout;
extern int	hs_job_grace;
extern int	hs_max_result_bytes;
extern int	hs_max_error_bytes;
extern int	hs_readonly_backlog;
extern int	hs_readonly_sync_lag;
extern int	hs_holdback_backlog;
extern int	hs_holdback_medium;
extern int	hs_holdback_low;
extern int	hs_degrade_min_dwell;
extern double hs_degrade_exit_ratio;
extern double hs_slo_target;
extern char *hs_amqp_url;
extern char *hs_amqp_tls_ca_file;
extern bool hs_amqp_tls_verify;
extern char *hs_amqp_queue_type;
extern int	hs_dispatch_batch;
extern int	hs_dispatch_lease;
extern int	hs_amqp_confirm_timeout;
extern int	hs_amqp_connect_timeout;
extern int	hs_amqp_reconnect_interval;
extern int	hs_circuit_failure_percent;
extern int	hs_circuit_window;
extern int	hs_circuit_min_calls;
extern int	hs_circuit_open_duration;
extern int	hs_stats_interval;
extern int	hs_metrics_max_queues;
extern int	hs_health_due_age;

extern void hs_define_settings(void);
extern void hs_force_submit_commit_level(void);

/* The scheduler's view of its server. */
#define HS_ROLE_DOWN		0
#define HS_ROLE_STARTING	1
#define HS_ROLE_STANDBY		2
#define HS_ROLE_PRIMARY		3

/* One executor slot per possible executor (hasched.max_executors). */
typedef enum HsExecState
{
	HS_EXEC_FREE = 0,
	HS_EXEC_STARTING,			/* registered, not attached yet */
	HS_EXEC_IDLE,				/* waiting on its latch */
	HS_EXEC_WOKEN,				/* latch set by a committing submit */
	HS_EXEC_BUSY				/* claiming or running a job */
} HsExecState;

typedef struct HsExecutorSlot
{
	pid_t		pid;
	Latch	   *latch;
	HsExecState state;
	int64		job_id;			/* the job being run, when busy */
	TimestampTz since;
	/* stop this job's SQL (the fencing gate closed), though not cancelled */
	pg_atomic_uint64 stop_job_id;
} HsExecutorSlot;

/*
 * shmem.c: shared memory, one struct.  The scheduler's fields are written
 * by the scheduler and read by everyone (health, wake-ups); the executor
 * slots (hs_executors) are written by their executor and by the scheduler
 * that starts them.  The claim cursor table and the rate-limit buckets are
 * shared hash tables beside it (claim.c, quota.c).
 */
typedef struct HaschedShared
{
	LWLock	   *cursor_lock;	/* guards the claim cursor hash table */
	LWLock	   *bucket_lock;	/* guards the rate-limit bucket hash table */
	LWLock	   *listen_lock;	/* guards the pull listener hash table */

	/*
	 * Sessions that called hasched.listen(), summed over queues (each
	 * session counted once per queue); 0 lets commits skip the NOTIFY work.
	 */
	pg_atomic_uint32 pull_listeners;
	pg_atomic_uint32 notify_pending;	/* queues are marked for a NOTIFY */
	pg_atomic_uint32 round_requested;	/* a commit asked the scheduler for a round */

	/* the scheduler and executor fields, under mutex */
	slock_t		mutex;
	pid_t		scheduler_pid;
	Latch	   *scheduler_latch;
	int			scheduler_role; /* HS_ROLE_* */
	TimestampTz role_since;
	int32		epoch;
	TimestampTz last_tick;		/* the last round of the primary's work */
	TimestampTz last_round;		/* the last round, on any server */
	TimestampTz scheduler_next_wake;
	int			sql_queues;		/* 1 when any sql queue exists (per the scheduler) */

	/* the HTTP health listener: its pid, and why it does not listen ("" if it does) */
	pid_t		listener_pid;
	char		listener_error[128];

	/*
	 * The leases (lease_id) of the running jobs that cancel() stopped most
	 * recently, 0 in an empty entry: a ring written without a lock
	 * (wakeup.c).  An executor starts a job's SQL, and lets it go on, only
	 * while its lease is not here; the cancel signal is just the prompt to
	 * look.  Lease ids are never reused, so an entry cannot stop a later
	 * attempt of the same job.
	 */
#define HS_CANCEL_RING		64
	pg_atomic_uint32 cancel_next;
	pg_atomic_uint64 cancelled[HS_CANCEL_RING];

	int			n_writer_slots;

	/*
	 * Per PGPROC: when the backend's open transaction first made a job
	 * claimable (0 when it has not).  Claims never move a cursor past the
	 * earliest of these, so a job committed late is not skipped.
	 */
	pg_atomic_uint64 writer_since[FLEXIBLE_ARRAY_MEMBER];
} HaschedShared;

extern HaschedShared *hs_shared;
extern HsExecutorSlot *hs_executors;

extern void hs_shmem_install_hooks(void);
extern HTAB *hs_shmem_hash(const char *name, long max, Size keysize, Size entrysize);
extern void *hs_shmem_hash_enter(HTAB *h, const char *key, long max,
								 int64 (*last_used) (const void *entry), bool *found);

/* util.c: running SQL as the extension owner with a pinned search_path */
typedef struct HsPrivileged
{
	Oid			save_userid;
	int			save_sec_context;
} HsPrivileged;

extern void hs_plan_for_queues(GucAction action);
extern void hs_privileged_enter(HsPrivileged *priv);
extern void hs_privileged_leave(HsPrivileged *priv);
extern void hs_require_primary(const char *what);

/* util.c: small helpers */
extern int	hs_parse_priority(const char *name);
extern int16 hs_priority_arg(const char *name);
extern void hs_unknown_queue(const char *queue) pg_attribute_noreturn();
extern char *hs_payload_sql(Datum payload);
extern int64 hs_interval_usec(const Interval *iv);
extern int64 hs_max_timeout_usec(void);
extern char *hs_interval_text(const Interval *iv);
extern bool hs_interval_ok(const char *what, const Interval *iv, char **why);
extern void hs_check_interval_arg(const char *what, const Interval *iv);
extern char *hs_clip_error(const char *error);

/*
 * The longest timeout any setting allows (hasched.max_timeout is at most
 * INT_MAX ms), as SQL: claims clamp a job's timeout to it, so that a row
 * with an absurd timeout cannot make the claim's timestamp arithmetic fail
 * (the executor then refuses to run that job, saying why).
 */
#define HS_TIMEOUT_CAP_SQL	"interval '2147483647 milliseconds'"

extern char *hs_format_token(int32 epoch, int32 attempt, int64 lease_id);
extern SPIPlanPtr hs_prepare(const char *sql, int nargs, Oid *argtypes);
extern void hs_plan(SPIPlanPtr *slot, const char *sql, int nargs,...);
extern int	hs_execute_in_index_order(SPIPlanPtr plan, Datum *args, long count);
extern Datum hs_int8_array(Datum *elems, int n);
extern Datum hs_int4_array(Datum *elems, int n);
extern void hs_check_text_arg(const char *what, const char *value, int maxlen);

typedef void (*HsIsolatedFn) (void *arg);
extern ErrorData *hs_run_isolated(HsIsolatedFn fn, void *arg);

/*
 * roles.c: what may be a tenant, who sees a tenant's jobs, whose rights a
 * job runs with (and the owner trigger of hasched.job and hasched.schedule)
 */
extern Oid	hs_tenant_role(const char *name);
extern bool hs_tenant_visible(Oid roleid, Oid tenant);
extern bool hs_role_visible(Oid roleid, const char *tenant);
extern char *hs_role_name(Oid roleid);
extern char *hs_owner_refusal(Oid owner, Oid submitted_by);
extern char *hs_schedule_roles_refusal(Oid owner, Oid tenant);
extern void hs_forget_dropped_roles(void);

/*
 * job_state.c: the state machine, its trigger, and every statement that
 * changes a job's state.
 */
typedef struct HsLease
{
	int64		job_id;
	int32		epoch;
	int32		attempt;
	int64		lease_id;
	char	   *token;
} HsLease;

/* What start() of one message in many came to (hs_start_dispatched_many) */
typedef enum HsStartOutcome
{
	HS_START_RUN,				/* started: run it */
	HS_START_FINISHED,			/* that attempt's outcome is recorded: drop it */
	HS_START_STALE				/* not the job's lease: drop it */
} HsStartOutcome;

typedef struct HsStartResult
{
	HsStartOutcome outcome;
	char	   *state;			/* the job's state now; NULL: no such job */
	Datum		payload;		/* HS_START_RUN: */
	bool		payload_null;
	Datum		timeout;
	Datum		lease_until;
} HsStartResult;

extern const char *hs_state_name(HsJobState state);
extern HsJobState hs_state_from_name(const char *name);
extern bool hs_transition_allowed(HsJobState from, HsJobState to);
extern bool hs_state_is_waiting(HsJobState state);
extern const char *hs_lease_update_sql(void);
extern bool hs_report_complete(const HsLease *lease, Datum result, bool result_null);
extern uint64 hs_report_complete_many(int n, Datum *ids, Datum *epochs, Datum *attempts,
									  Datum *leases, Datum results, bool results_null);
extern uint64 hs_completed_already_many(int n, Datum *ids, Datum *epochs, Datum *attempts,
										Datum *leases);
extern void hs_check_result_size(int64 job_id, Datum result);
extern Datum hs_report_fail(const HsLease *lease, const char *error, bool retry);
extern bool hs_restamp_lease(const HsLease *lease);
extern bool hs_start_dispatched(const HsLease *lease, const char *worker);
extern void hs_start_dispatched_many(const HsLease *leases, int n, const char *worker,
									 HsStartResult *out, MemoryContext outcxt);
extern uint64 hs_release_leases(const HsLease *leases, int n);
extern uint64 hs_requeue_expired_job(int64 job_id);
extern TimestampTz hs_report_heartbeat(const HsLease *lease, Datum lease_iv, bool lease_null);
extern void hs_stale_lease(const HsLease *lease, const char *what) pg_attribute_noreturn();
extern uint64 hs_requeue_expired(TimestampTz from, TimestampTz upto);
extern uint64 hs_end_attempts_now(const char *filter, const char *why, const char *outcome);
extern bool hs_cancel_job(int64 job_id, Oid caller);
extern void hs_retry_job(int64 job_id, Oid caller);

/* claim.c: the claim path, its cursors and the writer registry */
extern uint64 hs_claim_jobs(const char *queue, const char *worker, int max_jobs,
							Interval *lease, const char *transport,
							bool lease_plus_timeout);
extern TimestampTz hs_writer_note(void);
extern void hs_claim_note_locked(const char *queue);
extern void hs_claim_note_reset_at_end(const char *queue);
extern void hs_claim_xact_end(bool committed);
extern void hs_claim_xact_pre_prepare(void);
extern void hs_claim_xact_prepare(void);
extern void hs_claim_subxact_abort(SubTransactionId mySubid);
extern Size hs_cursor_shmem_size(void);
extern void hs_cursor_shmem_init(void);
extern void hs_claim_cursors_report(ReturnSetInfo *rsinfo);

/* submit.c: the submit path, shared by submit(), submit_many() and schedules */
typedef struct HsSubmit
{
	char	   *queue;
	int16		priority;
	TimestampTz run_at;
	int32		max_attempts;	/* 0: the queue's default */
	Interval   *timeout;		/* NULL: the queue's default */
	char	   *tenant;			/* the tenant's name (quotas, messages) */
	Oid			tenant_oid;		/* and its role */
	Oid			owner;			/* whose rights the job runs with */
	Oid			submitted_by;	/* who submitted it: owner, or the owner of a schedule */
	const char *schedule;		/* the schedule of a scheduled run, else NULL */
	TimestampTz fire_at;		/* when that run was due */
} HsSubmit;

#define HS_MAX_KEY_BYTES		255
#define HS_MAX_SUBMIT_BATCH		100000

extern void hs_check_payload(Datum payload, int index);
extern int64 hs_submit_one(const HsSubmit *a, Datum payload, const char *key);
extern Datum *hs_submit_many(const HsSubmit *a, ArrayType *payloads, Datum *pay_elems,
							 int n, ArrayType *keys, Datum *key_elems, bool *key_nulls);
extern void hs_check_schedule_target(const char *queue, Datum payload);

/* schedule.c: schedules' times and the scheduler's firing of them */
struct CronSpec;
struct pg_tz;
extern void hs_parse_spec(const char *spec, struct CronSpec *cs);
extern struct pg_tz *hs_find_timezone(const char *name);
extern TimestampTz hs_schedule_next_time(const struct CronSpec *cs, struct pg_tz *tz,
										 TimestampTz after);
extern TimestampTz hs_schedule_save(const char *name, const char *spec, const char *zone,
									const char *queue, Datum payload, int16 priority,
									Oid tenant, const char *misfire,
									const char *overlap, bool replace, bool active,
									TimestampTz next, Oid caller);
extern void hs_schedule_delete(const char *name, Oid caller);
extern TimestampTz hs_schedule_set_active(const char *name, bool active, Oid caller);
extern TimestampTz hs_fire_due_schedules(TimestampTz now);

/*
 * metrics.c: what /metrics and health() show of the jobs, in shared memory.
 *
 * Counters: each backend counts the transitions its transaction makes (the
 * job state trigger sees every one) and adds them to shared atomics when
 * it commits; a subtransaction that aborts takes its counts back.
 * Refusals (quota, rate, read-only) are counted at once: the refused
 * transaction does not commit.  They count since the server started.
 */
typedef enum HsCounter
{
	HS_CTR_SUBMITTED = 0,		/* jobs inserted (submit, submit_many, schedules) */
	HS_CTR_STARTED,				/* attempts started (leased to an executor or worker) */
	HS_CTR_SUCCEEDED,			/* attempts that completed */
	HS_CTR_FAILED,				/* attempts that failed and will be retried */
	HS_CTR_DEAD,				/* jobs whose attempts are spent (or not retried) */
	HS_CTR_CANCELLED,			/* jobs cancelled */
	HS_CTR_REFUSED_QUOTA,		/* submits refused: quota (JQ001) */
	HS_CTR_REFUSED_RATE,		/* submits refused: rate limit (JQ002) */
	HS_CTR_REFUSED_READ_ONLY,	/* submits refused: read-only mode (JQ003) */
	HS_CTR_FAILOVERS,			/* epochs this server's scheduler opened */
	HS_NUM_COUNTERS
} HsCounter;

/* the submit -> start histogram: upper bounds in seconds, then +Inf */
#define HS_LATENCY_BUCKETS	15
extern const double hs_latency_bounds[HS_LATENCY_BUCKETS];

/* the modes of hasched.state, as the scheduler last read them */
#define HS_MODE_UNKNOWN		0	/* not read yet */
#define HS_MODE_NORMAL		1
#define HS_MODE_READ_ONLY	2
#define HS_MODE_PAUSED		3

/* One queue's jobs that are not finished, by state (HS_STATE_*). */
typedef struct HsQueueFigures
{
	char		queue[HS_QUEUE_NAME_MAX];
	int64		jobs[HS_NUM_STATES];
	TimestampTz oldest_due;		/* run_at of its oldest due waiting job; 0: none */
} HsQueueFigures;

/*
 * The scheduler's figures of its last count: per queue (at most
 * hasched.metrics_max_queues, the deepest; the others summed into the row
 * "(other)" with has_other set), the totals, the mode.
 */
typedef struct HsFigures
{
	TimestampTz counted_at;		/* 0: never counted */
	int64		spacing_usec;	/* until the next count: stats_interval, or
								 * more when counting is slow */
	int64		cpu_usec;		/* CPU time the count used */
	int			n_queues;		/* rows in queues[] */
	int			queues_total;	/* queues with unfinished jobs */
	bool		has_other;		/* the last row sums the queues past the bound */
	HsQueueFigures total;		/* every queue */
	int64		backlog;		/* due waiting jobs of the queues not paused */
	TimestampTz backlog_oldest; /* run_at of the oldest of them; 0: none */
	char		oldest_due_queue[HS_QUEUE_NAME_MAX];
	int			mode;			/* HS_MODE_* */
	char		mode_reason[128];
	TimestampTz mode_since;
	HsQueueFigures queues[FLEXIBLE_ARRAY_MEMBER];
} HsFigures;

extern Size hs_metrics_shmem_size(void);
extern void hs_metrics_shmem_init(void);
extern void hs_metrics_count(HsCounter counter, uint64 n);
extern void hs_metrics_count_now(HsCounter counter);
extern void hs_metrics_start_delay(TimestampTz due, TimestampTz started);
extern void hs_metrics_xact_end(bool committed);
extern void hs_metrics_subxact_end(bool committed);
extern void hs_metrics_read_counters(uint64 *counters, uint64 *buckets, uint64 *sum_us);
extern HsFigures *hs_figures_alloc(void);
extern bool hs_figures_read(HsFigures *f);
extern bool hs_figures_read_totals(HsFigures *f);
extern void hs_figures_publish(const HsFigures *f);
extern bool hs_figures_count_step(HsFigures *f, bool restart);
extern void hs_executor_start_failed(void);
extern TimestampTz hs_executor_start_failed_at(void);
extern const char *hs_mode_name(int mode);

/* health.c: component health from shared memory only */
typedef struct HsHealthRow
{
	const char *component;
	const char *status;			/* ok, degraded or failed */
	bool		healthy;		/* status is not failed */
	char	   *detail;
} HsHealthRow;

#define HS_HEALTH_MAX_ROWS	16

extern int	hs_health_report(HsHealthRow *rows);
extern bool hs_health_active_primary(void);
extern bool hs_health_streaming(void);
extern void hs_health_set_listener(pid_t pid, const char *error);

/*
 * extension.c: may the workers act on their database's hasched (there, at
 * this library's version, not being restored)?
 */
extern bool hs_extension_usable(void);

/*
 * fencing.c: the gate (may this server act?), and the ZooKeeper
 * coordinator's shared state behind it.
 */
#define HS_WORKER_NAME_MAX	200		/* claim()'s worker argument */
#define HS_ZK_INFO_MAX		256

/* the coordinator's states, as health shows them */
#define HS_ZK_DOWN			0
#define HS_ZK_STARTING		1
#define HS_ZK_CONNECTING	2
#define HS_ZK_ERROR			3
#define HS_ZK_STANDBY		4
#define HS_ZK_ELECTING		5
#define HS_ZK_LEADER		6
#define HS_ZK_CLOSING		7

extern Size hs_fencing_shmem_size(void);
extern void hs_fencing_shmem_init(void);
extern bool hs_zookeeper_enabled(void);
extern int64 hs_clock_usec(void);
extern bool hs_node_may_act(void);
extern bool hs_fencing_leader_ok(void);
extern char *hs_fencing_why(void);
extern void hs_require_leader(const char *what);
extern void hs_fencing_guard_xact(bool with_epoch);
extern void hs_fencing_xact_event(XactEvent event);
extern void hs_fencing_attach(pid_t pid);
extern void hs_fencing_set_session(int state, bool connected, int64 session_id,
								   int timeout_ms, const char *server, const char *error);
extern void hs_fencing_set_leader(bool leader, int64 token, int64 sent,
								  const char *leader_info);
extern int64 hs_fencing_confirm(int64 sent);
extern void hs_fencing_close(int wait_ms);
extern void hs_fencing_stop_executors(void);
extern bool hs_fencing_term_pending(uint64 *term, int64 *token);
extern void hs_fencing_epoch_opened(uint64 term, int32 epoch);
extern void hs_fencing_worker_lost(const char *name, TimestampTz at);
extern bool hs_fencing_next_lost_worker(char *name, TimestampTz *at);
extern void hs_fencing_health(const char **status, char **detail);

/*
 * degrade.c: graceful degradation (the automatic read-only mode and the
 * priority hold-back), decided by the scheduler, read from shared memory
 * by submits, claims, health and metrics.  availability.c: the heartbeat
 * that hasched.availability() infers downtime from.
 */
#define HS_DEGRADE_REASON_MAX	256

typedef struct HsDegradeStatus
{
	bool		read_only;		/* the automatic read-only mode is in force */
	TimestampTz read_only_since;	/* when it began (or last ended; 0: never) */
	char		read_only_why[HS_DEGRADE_REASON_MAX];	/* the signal, its value
														 * and threshold */
	bool		overridden;		/* ended by set_mode(): off until every signal
								 * is below its exit threshold */
	bool		holdback;		/* lower priorities are held back */
	TimestampTz holdback_since; /* when it began (or last ended; 0: never) */
	int64		holdback_us[HS_NUM_PRIORITIES]; /* how long a due job of each
												 * priority waits while it is */
	int64		backlog;		/* due waiting jobs of unpaused queues; -1: not
								 * counted yet */
	TimestampTz oldest_due;		/* run_at of the oldest of them; 0: none */
	int64		sync_lag_us;	/* synchronous standby lag, or how long none was
								 * connected; -1: synchronous_standby_names
								 * empty */
	int			sync_standbys;	/* standbys with sync_state sync or quorum */
	TimestampTz measured_at;	/* 0: never (a standby, or no round yet) */
	char		manual_mode[16];	/* hasched.state's mode (set_mode()) as the
									 * scheduler last read it; "" before */
	TimestampTz manual_since;	/* and its changed_at */
} HsDegradeStatus;

extern Size hs_degrade_shmem_size(void);
extern void hs_degrade_shmem_init(void);
extern void hs_degrade_status(HsDegradeStatus *out);
extern void hs_degrade_check_submit(TimestampTz mode_changed_at);
extern bool hs_degrade_claim_bounds(TimestampTz now, TimestampTz *upto);
extern bool hs_degrade_due(void);
extern void hs_degrade_round(void);
extern char *hs_degrade_holdback_sql(void);
extern int64 hs_heartbeat_gap_usec(void);
extern bool hs_heartbeat_due(void);
extern void hs_heartbeat(int32 epoch);
extern void hs_commit_async(void);

/*
 * circuit.c: circuit breakers of the RabbitMQ dispatcher (per broker, per
 * queue) in shared memory, and the dispatcher's status for health.
 */
#define HS_MAX_CIRCUITS			128
#define HS_CIRCUIT_NAME_MAX		192
#define HS_CIRCUIT_ERROR_MAX	256

#define HS_CIRCUIT_BROKER		0
#define HS_CIRCUIT_QUEUE		1

#define HS_CIRCUIT_CLOSED		0
#define HS_CIRCUIT_OPEN			1
#define HS_CIRCUIT_HALF_OPEN	2

typedef struct HsCircuitInfo
{
	char		name[HS_CIRCUIT_NAME_MAX];
	int			kind;
	int			state;
	TimestampTz since;
	int64		window_calls;
	int64		window_failures;
	int64		total_calls;
	int64		total_failures;
	char		last_error[HS_CIRCUIT_ERROR_MAX];
} HsCircuitInfo;

extern Size hs_circuit_shmem_size(void);
extern void hs_circuit_shmem_init(void);
extern const char *hs_circuit_state_name(int state);
extern const char *hs_circuit_kind_name(int kind);
extern int	hs_circuit_get(int kind, const char *name);
extern bool hs_circuit_allow(int idx);
extern bool hs_circuit_is_closed(int idx);
extern void hs_circuit_release_probe(int idx);
extern void hs_circuit_record(int idx, bool success, const char *error);
extern void hs_circuit_write_events(void);
extern bool hs_circuit_events_pending(void);
extern int	hs_circuit_snapshot(HsCircuitInfo *out, int max);
extern void hs_dispatcher_set_status(pid_t pid, const char *status, const char *detail);
extern void hs_dispatcher_count(int64 dispatched, int64 failed);
extern void hs_dispatcher_attach(Latch *latch);
extern void hs_dispatcher_wake(void);
extern void hs_circuit_health(HsHealthRow *rows, int *n, bool standby);

/* job_state.c, for the dispatcher */
extern uint64 hs_mark_dispatched(int n, Datum *ids, Datum *attempts, Datum *lease_ids,
								 int32 epoch);
extern void hs_note_publish_failed(int n, Datum *ids, Datum *errors);
/* most dispatched jobs hs_redispatch_expired() ends in one call */
#define HS_REDISPATCH_LIMIT 10000
extern uint64 hs_redispatch_expired(int32 epoch);

/* quota.c */
extern Size hs_bucket_shmem_size(void);
extern void hs_bucket_shmem_init(void);
extern void hs_quota_prepare(const char *tenant, Oid tenant_oid, bool has_day_limit);
extern void hs_quota_charge(const char *tenant, Oid tenant_oid, const char *tier,
							int64 njobs, bool has_day_limit, int64 jobs_per_day,
							bool has_rate, double rate_per_second, int32 burst);
extern void hs_quota_xact_end(bool committed);
extern void hs_quota_subxact_end(bool committed);

/*
 * wakeup.c: what a transaction asks of the background workers when it
 * commits (wake the scheduler, wake an executor, stop a cancelled job),
 * delivered through shared memory and latches; the transaction callbacks.
 */
extern void hs_note_claimable(Datum queue, TimestampTz run_at);
extern char *hs_listen_queue(const char *queue);
extern bool hs_notify_pending(void);
extern void hs_send_notifies(void);
extern Size hs_listen_shmem_size(void);
extern void hs_listen_shmem_init(void);
extern void hs_wake_scheduler_at_commit(void);
extern void hs_executor_cancel_at_commit(int64 job_id, int64 lease_id);
extern bool hs_lease_cancelled(int64 lease_id);
extern void hs_xact_callbacks_init(void);

#endif							/* HASCHED_H */
