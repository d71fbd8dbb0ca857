/*-------------------------------------------------------------------------
 *
 * hasched.h
 *		Declarations shared by the hasched source files: SQLSTATEs, GUCs,
 *		shared memory, the job state machine and small helpers.
 *
 * IDENTIFICATION
 *		src/hasched.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef HASCHED_H
#define HASCHED_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "executor/spi.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/spin.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

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

/* GUCs (hasched.c) */
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
extern int	hs_scheduler_naptime;
extern int	hs_misfire_threshold;
extern int	hs_history_retention;

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
	int64		cancel_job_id;	/* cancel() asked to stop this job */
	TimestampTz since;
} HsExecutorSlot;

extern HsExecutorSlot *hs_executors;

/*
 * Shared memory: one struct, initialised by hasched.c.  The claim cursor
 * table and the rate-limit buckets are shared hash tables beside it.
 */
typedef struct HaschedShared
{
	LWLock	   *cursor_lock;	/* guards the claim cursor hash table */
	LWLock	   *bucket_lock;	/* guards the rate-limit bucket hash table */

	/* the scheduler and executor fields, under mutex */
	slock_t		mutex;
	pid_t		scheduler_pid;
	Latch	   *scheduler_latch;
	int			scheduler_role; /* HS_ROLE_* */
	TimestampTz role_since;
	int32		epoch;
	TimestampTz last_tick;
	TimestampTz scheduler_next_wake;
	int			sql_queues;		/* 1 when any sql queue exists (per the scheduler) */

	int			n_writer_slots;

	/*
	 * Per PGPROC: when the backend's open transaction first made a job
	 * claimable (0 when it has not).  Claims never move a cursor past the
	 * earliest of these, so a job committed late is not skipped.
	 */
	pg_atomic_uint64 writer_since[FLEXIBLE_ARRAY_MEMBER];
} HaschedShared;

extern HaschedShared *hs_shared;

/* hasched.c: running SQL as the extension owner with a pinned search_path */
typedef struct HsPrivileged
{
	Oid			save_userid;
	int			save_sec_context;
	int			guc_nest_level;
} HsPrivileged;

extern void hs_plan_for_queues(GucAction action);
extern void hs_privileged_enter(HsPrivileged *priv);
extern void hs_privileged_leave(HsPrivileged *priv);
extern void hs_require_primary(const char *what);
extern void hs_force_submit_commit_level(void);

/* util.c */
extern int	hs_parse_priority(const char *name);
extern int16 hs_priority_arg(const char *name);
extern void hs_unknown_queue(const char *queue) pg_attribute_noreturn();
extern char *hs_payload_sql(Datum payload);
extern const char *hs_state_name(HsJobState state);
extern HsJobState hs_state_from_name(const char *name);
extern bool hs_transition_allowed(HsJobState from, HsJobState to);
extern bool hs_state_is_waiting(HsJobState state);
extern int64 hs_backoff_usec(int attempt, int64 base_usec, int64 cap_usec, double jitter);
extern int64 hs_interval_usec(const Interval *iv);
extern char *hs_format_token(int32 epoch, int32 attempt, int64 lease_id);
extern bool hs_parse_token(const char *token, int32 *epoch, int32 *attempt, int64 *lease_id);
extern bool hs_role_visible(Oid roleid, const char *tenant);
extern SPIPlanPtr hs_prepare(const char *sql, int nargs, Oid *argtypes);
extern void hs_check_text_arg(const char *what, const char *value, int maxlen);

/* claim.c: the claim path and worker reports, shared with the executors */
typedef struct HsLease
{
	int64		job_id;
	int32		epoch;
	int32		attempt;
	int64		lease_id;
	char	   *token;
} HsLease;

extern uint64 hs_claim_jobs(const char *queue, const char *worker, int max_jobs,
							Interval *lease, const char *transport,
							bool lease_plus_timeout);
extern bool hs_report_complete(const HsLease *lease, Datum result, bool result_null);
extern Datum hs_report_fail(const HsLease *lease, const char *error, bool retry);

/* claim.c: cursors and the writer registry */
extern void hs_writer_note(void);
extern void hs_claim_note_locked(const char *queue);
extern void hs_claim_xact_callback_init(void);
extern Size hs_cursor_shmem_size(void);
extern void hs_cursor_shmem_init(void);

/* job.c: the submit path, shared with the scheduler's schedule runs */
typedef struct HsSubmit
{
	char	   *queue;
	int16		priority;
	TimestampTz run_at;
	int32		max_attempts;	/* 0: the queue's default */
	Interval   *timeout;		/* NULL: the queue's default */
	char	   *tenant;
	char	   *owner;
	const char *schedule;		/* the schedule of a scheduled run, else NULL */
	TimestampTz fire_at;		/* when that run was due */
} HsSubmit;

extern int64 hs_submit_one(const HsSubmit *a, Datum payload, const char *key);

extern void hs_check_schedule_target(const char *queue, Datum payload);

/* scheduler.c, executor.c, schedule.c */
extern Size hs_executor_shmem_size(void);
extern void hs_executor_shmem_init(void);
extern void hs_register_scheduler(void);
extern void hs_note_claimable(TimestampTz run_at);
extern void hs_wake_scheduler_at_commit(void);
extern void hs_wake_after_commit(bool committed);
extern void hs_executor_cancel(int64 job_id);
extern void hs_executor_cancel_at_commit(int64 job_id);
extern void hs_executor_cancels_at_end(bool committed);
extern TimestampTz hs_fire_due_schedules(TimestampTz now);

/* quota.c */
extern Size hs_bucket_shmem_size(void);
extern void hs_bucket_shmem_init(void);
extern void hs_quota_charge(const char *tenant, const char *tier, int64 njobs,
							bool has_day_limit, int64 jobs_per_day,
							bool has_rate, double rate_per_second, int32 burst);

#endif							/* HASCHED_H */
