/*-------------------------------------------------------------------------
 *
 * scheduler.c
 *		The scheduler background worker: watches on a standby, takes over
 *		when its node is promoted, and on the primary fires schedules,
 *		requeues expired leases, recovers the jobs of dead executors, keeps
 *		the executor pool, prunes history.
 *
 * One static worker per server, started at consistent state so that it also
 * runs on standbys.  There it only polls RecoveryInProgress() (every 100
 * ms) and reports health.  On the first primary tick (after start, or after
 * a promotion) it opens an epoch if the timeline changed, writes a failover
 * event, and retries the SQL jobs that were running under older epochs: they
 * ran on a primary that is gone, so the attempt counts and the job runs
 * again.  Leases of external (pull) workers stay valid until they expire.
 *
 * With hasched.zookeeper set, a primary does all this only while the gate
 * of src/core/fencing.c is open (it holds hasched's ZooKeeper leadership,
 * within its own deadline): each leadership term opens an epoch that
 * records the leader's fencing token, and the leases of external workers
 * whose ZooKeeper session ended are requeued at once.
 *
 * Each step of a round (takeover, dropped roles, schedules, expired leases,
 * lost workers, orphans, the look for SQL work, pruning) runs in a
 * subtransaction of its own: a step
 * that fails, or a job row a step cannot handle, is skipped and reported
 * (see "Isolated steps"), and the others go on.  About once a second,
 * after the round, a transaction of its own (committed asynchronously)
 * decides the automatic read-only mode and the priority hold-back
 * (src/core/degrade.c) and writes the heartbeat that availability() infers
 * downtime from (src/core/availability.c).
 *
 * Wake-ups: a transaction that made jobs claimable wakes an idle executor
 * after it commits (never before: the job must be visible), and the
 * scheduler when no executor is idle or when it made a job due earlier than
 * the scheduler's next planned wake-up.  Otherwise the scheduler sleeps until
 * the next schedule is due, at most hasched.scheduler_naptime.
 *
 * IDENTIFICATION
 *		src/workers/scheduler.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/resource.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "workers/worker.h"

#define STANDBY_POLL_MS		100
#define FENCED_POLL_MS		1000	/* the coordinator wakes it sooner */
#define PRUNE_INTERVAL_US	(60 * USECS_PER_SEC)
#define PRUNE_BATCH			10000

/* CPU time (user + system) this process has used, in microseconds */
static int64
process_cpu_usec(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return 0;
	return (int64) (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * USECS_PER_SEC +
		ru.ru_utime.tv_usec + ru.ru_stime.tv_usec;
}

/* ------------------------------------------------------------------------
 * Shared state
 * ------------------------------------------------------------------------ */

static void
set_role(int role)
{
	SpinLockAcquire(&hs_shared->mutex);
	if (hs_shared->scheduler_role != role)
	{
		hs_shared->scheduler_role = role;
		hs_shared->role_since = GetCurrentTimestamp();
	}
	SpinLockRelease(&hs_shared->mutex);
}

static void
scheduler_detach(int code, Datum arg)
{
	SpinLockAcquire(&hs_shared->mutex);
	hs_shared->scheduler_pid = 0;
	hs_shared->scheduler_latch = NULL;
	hs_shared->scheduler_role = HS_ROLE_DOWN;
	SpinLockRelease(&hs_shared->mutex);
}

/* ------------------------------------------------------------------------
 * Executor pool
 * ------------------------------------------------------------------------ */

/* Start one executor in a free slot; false when none is free or it failed. */
static bool
start_executor(void)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	int			slot = -1;
	pid_t		pid;

	SpinLockAcquire(&hs_shared->mutex);
	for (int i = 0; i < hs_max_executors; i++)
		if (hs_executors[i].state == HS_EXEC_FREE)
		{
			slot = i;
			hs_executors[i].state = HS_EXEC_STARTING;
			hs_executors[i].pid = 0;
			hs_executors[i].since = GetCurrentTimestamp();
			break;
		}
	SpinLockRelease(&hs_shared->mutex);
	if (slot < 0)
		return false;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "hasched");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "hasched_executor_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "hasched executor %d", slot);
	snprintf(worker.bgw_type, BGW_MAXLEN, "hasched executor");
	worker.bgw_main_arg = Int32GetDatum(slot);
	worker.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&worker, &handle) ||
		WaitForBackgroundWorkerStartup(handle, &pid) != BGWH_STARTED)
	{
		SpinLockAcquire(&hs_shared->mutex);
		if (hs_executors[slot].state == HS_EXEC_STARTING)
			hs_executors[slot].state = HS_EXEC_FREE;
		SpinLockRelease(&hs_shared->mutex);
		hs_executor_start_failed();
		ereport(WARNING,
				(errmsg("hasched: could not start an executor"),
				 errhint("Raise max_worker_processes (hasched.max_executors is %d).",
						 hs_max_executors)));
		return false;
	}
	return true;
}

/*
 * Keep the pool: wake the idle executors when SQL jobs are due, start more
 * while none is idle and the pool is below hasched.max_executors, and keep
 * hasched.min_executors alive while sql queues exist.
 */
static void
manage_executors(bool work_due, bool sql_queues)
{
	int			live = 0;
	int			idle = 0;
	Latch	   *wake[64];
	int			nwake = 0;

	SpinLockAcquire(&hs_shared->mutex);
	for (int i = 0; i < hs_max_executors; i++)
	{
		HsExecutorSlot *s = &hs_executors[i];

		if (s->state == HS_EXEC_FREE)
			continue;
		live++;
		if (s->state == HS_EXEC_IDLE || s->state == HS_EXEC_STARTING ||
			s->state == HS_EXEC_WOKEN)
		{
			idle++;
			if (work_due && s->latch && nwake < 64)
				wake[nwake++] = s->latch;
		}
	}
	SpinLockRelease(&hs_shared->mutex);

	for (int i = 0; i < nwake; i++)
		SetLatch(wake[i]);

	if (!sql_queues)
		return;
	if (work_due && idle == 0 && live < hs_max_executors)
		(void) start_executor();
	else if (live < Min(hs_min_executors, hs_max_executors))
		(void) start_executor();
}

/* Is an executor with this pid alive in this slot? */
static bool
executor_alive(int slot, int pid)
{
	bool		alive;

	if (slot < 0 || slot >= hs_max_executors)
		return false;
	SpinLockAcquire(&hs_shared->mutex);
	alive = hs_executors[slot].pid == pid && hs_executors[slot].state != HS_EXEC_FREE;
	SpinLockRelease(&hs_shared->mutex);
	return alive;
}

/* ------------------------------------------------------------------------
 * The primary's duties
 * ------------------------------------------------------------------------ */

/*
 * Running jobs of the SQL queues.  The queues come first, as an array the
 * index scan of job_active_idx takes as its condition: one range per SQL
 * queue, none without one.  (As "queue IN (SELECT ...)" the planner walked
 * the whole index every round, and under an old snapshot that index keeps
 * a dead entry for every job claimed since: the round grew with them.)
 */
#define SQL_RUNNING \
	"j.queue = ANY (ARRAY(SELECT q.name FROM hasched.queue q WHERE q.transport = 'sql'))" \
	" AND j.state = 'running'"

/* ------------------------------------------------------------------------
 * Isolated steps
 *
 * Each step of a round (and, when a step that handles many jobs at once
 * fails, each of its jobs) runs in a subtransaction of the round's
 * transaction: a step that fails is rolled back alone and the others go
 * on; a job that fails is skipped and the others handled.  A failure is
 * reported as a warning in the server log and an event of kind
 * scheduler_error (step, job, SQLSTATE, message) -- once per
 * REPORT_AGAIN_US for the same step and job, however many rounds it fails.
 * ------------------------------------------------------------------------ */

#define MAX_REPORTED		64
#define REPORT_AGAIN_US		(10 * 60 * USECS_PER_SEC)

typedef struct Reported
{
	const char *step;			/* a string constant */
	int64		job_id;			/* 0: the step as a whole */
	TimestampTz at;
} Reported;

static Reported reported[MAX_REPORTED];

typedef struct Failure
{
	const char *step;
	int64		job_id;
	ErrorData  *edata;
} Failure;

static void
insert_failure_event(void *arg)
{
	Failure    *f = arg;
	char	   *sql;

	sql = psprintf("INSERT INTO hasched.event (kind, detail) VALUES ('scheduler_error',"
				   " jsonb_strip_nulls(jsonb_build_object('step', %s, 'job_id', %s,"
				   " 'sqlstate', %s, 'error', %s, 'scheduler_pid', %d)))",
				   quote_literal_cstr(f->step),
				   f->job_id != 0 ? psprintf(INT64_FORMAT, f->job_id) : "NULL",
				   quote_literal_cstr(unpack_sql_state(f->edata->sqlerrcode)),
				   quote_literal_cstr(f->edata->message ? f->edata->message : ""),
				   MyProcPid);
	if (SPI_execute(sql, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "hasched: writing a scheduler_error event failed");
}

/* A step (job_id 0) or one of its jobs failed: say so, unless said lately. */
static void
report_failure(const char *step, int64 job_id, ErrorData *edata)
{
	TimestampTz now = GetCurrentTimestamp();
	int			slot = 0;
	Failure		f;
	ErrorData  *event_error;

	for (int i = 0; i < MAX_REPORTED; i++)
	{
		if (reported[i].step != NULL && strcmp(reported[i].step, step) == 0 &&
			reported[i].job_id == job_id)
		{
			if (now - reported[i].at < REPORT_AGAIN_US)
			{
				elog(DEBUG1, "hasched: scheduler step %s failed again (job " INT64_FORMAT "): %s",
					 step, job_id, edata->message);
				return;
			}
			slot = i;
			break;
		}
		if (reported[i].at < reported[slot].at)
			slot = i;
	}
	reported[slot].step = step;
	reported[slot].job_id = job_id;
	reported[slot].at = now;

	if (job_id != 0)
		ereport(WARNING,
				(errmsg("hasched: scheduler step %s skipped job %lld: %s",
						step, (long long) job_id, edata->message),
				 errdetail("SQLSTATE %s. The round's other jobs and steps went on; this job is tried again in later rounds.",
						   unpack_sql_state(edata->sqlerrcode)),
				 errhint("See the event of kind scheduler_error in hasched.event; fix or remove the job's row.")));
	else
		ereport(WARNING,
				(errmsg("hasched: scheduler step %s failed: %s", step, edata->message),
				 errdetail("SQLSTATE %s. The round's other steps went on; this one is tried again in the next round.",
						   unpack_sql_state(edata->sqlerrcode)),
				 errhint("See the event of kind scheduler_error in hasched.event.")));
	f.step = step;
	f.job_id = job_id;
	f.edata = edata;
	event_error = hs_run_isolated(insert_failure_event, &f);
	if (event_error != NULL)
		elog(LOG, "hasched: could not record the failure of step %s: %s",
			 step, event_error->message);
}

/* A step of the round: isolated, reported when it fails. */
static bool
run_step(const char *step, HsIsolatedFn fn, void *arg)
{
	ErrorData  *edata = hs_run_isolated(fn, arg);

	if (edata == NULL)
		return true;
	report_failure(step, 0, edata);
	return false;
}

/* The job ids a query returns (its first column), at most 10000. */
static int64 *
select_ids(const char *sql, int *n)
{
	int64	   *ids;

	if (SPI_execute(sql, true, 10000) != SPI_OK_SELECT)
		elog(ERROR, "hasched: reading job ids failed");
	*n = (int) SPI_processed;
	ids = palloc(sizeof(int64) * (*n + 1));
	for (int i = 0; i < *n; i++)
	{
		bool		isnull;

		ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
	}
	return ids;
}

/*
 * End the attempts of these running jobs as failed and make them due now
 * (hs_end_attempts_now): all in one statement; if that fails, job by job,
 * skipping and reporting the jobs that fail.  Returns how many ended.
 */
typedef struct EndArgs
{
	const char *filter;
	const char *why;
	const char *outcome;
	uint64		done;
} EndArgs;

static void
end_attempts(void *arg)
{
	EndArgs    *a = arg;

	a->done += hs_end_attempts_now(a->filter, a->why, a->outcome);
}

static uint64
end_attempts_of(const char *step, const int64 *ids, int n, const char *why,
				const char *outcome)
{
	StringInfoData list;
	EndArgs		a;

	if (n == 0)
		return 0;
	initStringInfo(&list);
	for (int i = 0; i < n; i++)
		appendStringInfo(&list, "%s" INT64_FORMAT, i ? "," : "", ids[i]);
	a.filter = psprintf("j.id IN (%s) AND j.state = 'running'", list.data);
	a.why = why;
	a.outcome = outcome;
	a.done = 0;
	if (hs_run_isolated(end_attempts, &a) == NULL)
		return a.done;
	a.done = 0;
	for (int i = 0; i < n; i++)
	{
		ErrorData  *edata;

		a.filter = psprintf("j.id = " INT64_FORMAT " AND j.state = 'running'", ids[i]);
		edata = hs_run_isolated(end_attempts, &a);
		if (edata != NULL)
			report_failure(step, ids[i], edata);
	}
	return a.done;
}


/*
 * First tick as primary: open an epoch if this timeline has none, and
 * retry the SQL jobs of older epochs.
 */
/* The newest epoch and its timeline; false (and both left) when none. */
static bool
latest_epoch(int32 *epoch, int32 *timeline)
{
	bool		isnull;

	if (SPI_execute("SELECT epoch, timeline FROM hasched.epoch ORDER BY epoch DESC LIMIT 1",
					true, 1) != SPI_OK_SELECT)
		elog(ERROR, "hasched: reading epochs failed");
	if (SPI_processed != 1)
		return false;
	*epoch = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	*timeline = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	return true;
}

static void
become_primary(void)
{
	TimeLineID	tli = GetWALInsertionTimeLine();
	int32		epoch = 0;
	int32		timeline = 0;

	if (!latest_epoch(&epoch, &timeline) || (TimeLineID) timeline != tli)
	{
		char	   *sql;
		char	   *filter;
		uint64		retried;
		int64	   *ids;
		int			nids;

		epoch++;
		sql = psprintf("INSERT INTO hasched.epoch (epoch, timeline, reason)"
					   " VALUES (%d, %u, 'promoted: timeline %u')", epoch, tli, tli);
		if (SPI_execute(sql, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "hasched: opening epoch %d failed", epoch);
		filter = psprintf("SELECT j.id FROM hasched.job j WHERE " SQL_RUNNING " AND j.epoch < %d",
						  epoch);
		ids = select_ids(filter, &nids);
		retried = end_attempts_of("takeover", ids, nids,
								  "the primary failed over during the attempt", "failover");
		sql = psprintf("INSERT INTO hasched.event (kind, detail) VALUES ('failover',"
					   " jsonb_build_object('epoch', %d, 'timeline', %u, 'previous_timeline', %d,"
					   " 'sql_jobs_retried', " UINT64_FORMAT ", 'scheduler_pid', %d))",
					   epoch, tli, timeline, retried, MyProcPid);
		if (SPI_execute(sql, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "hasched: writing the failover event failed");
		hs_metrics_count(HS_CTR_FAILOVERS, 1);
		ereport(LOG,
				(errmsg("hasched: scheduler active on timeline %u, epoch %d; %llu SQL jobs of the old primary retried",
						tli, epoch, (unsigned long long) retried)));
	}
	else
		ereport(LOG,
				(errmsg("hasched: scheduler active on timeline %u, epoch %d", tli, epoch)));

	SpinLockAcquire(&hs_shared->mutex);
	hs_shared->epoch = epoch;
	SpinLockRelease(&hs_shared->mutex);
}

/*
 * With ZooKeeper: the first round of a leadership term opens an epoch that
 * records the leader's fencing token (the sequence number of its election
 * znode); the gate opens only after it committed, so every lease of the
 * term names it.  SQL jobs still running under older epochs ran under
 * another term (here, or on a server that led before): they run again.
 */
static void
open_term_epoch(void)
{
	uint64		term;
	int64		token;
	int32		epoch = 0;
	int32		timeline = 0;
	TimeLineID	tli = GetWALInsertionTimeLine();
	bool		opened = false;
	uint64		retried = 0;

	if (!hs_fencing_term_pending(&term, &token))
		return;

	hs_xact_begin("hasched scheduler: opening an epoch");
	/* the epoch commits only while this server still leads */
	hs_fencing_guard_xact(false);
	if (hs_extension_usable())
	{
		char	   *sql;
		int64	   *ids;
		int			nids;

		(void) latest_epoch(&epoch, &timeline);
		epoch++;
		sql = psprintf("INSERT INTO hasched.epoch (epoch, timeline, reason, fencing_token)"
					   " VALUES (%d, %u, 'ZooKeeper leadership, fencing token %lld', %lld)",
					   epoch, tli, (long long) token, (long long) token);
		if (SPI_execute(sql, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "hasched: opening epoch %d failed", epoch);
		ids = select_ids(psprintf("SELECT j.id FROM hasched.job j WHERE " SQL_RUNNING
								  " AND j.epoch < %d", epoch), &nids);
		retried = end_attempts_of("term_epoch", ids, nids,
								  "the attempt began in an earlier leadership term", "failover");
		sql = psprintf("INSERT INTO hasched.event (kind, detail) VALUES ('leadership',"
					   " jsonb_build_object('epoch', %d, 'fencing_token', %lld, 'timeline', %u,"
					   " 'previous_timeline', %d, 'sql_jobs_retried', " UINT64_FORMAT
					   ", 'scheduler_pid', %d))",
					   epoch, (long long) token, tli, timeline, retried, MyProcPid);
		if (SPI_execute(sql, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "hasched: writing the leadership event failed");
		hs_metrics_count(HS_CTR_FAILOVERS, 1);
		opened = true;
	}
	hs_xact_end(true);
	if (!opened)
		return;

	SpinLockAcquire(&hs_shared->mutex);
	hs_shared->epoch = epoch;
	SpinLockRelease(&hs_shared->mutex);
	hs_fencing_epoch_opened(term, epoch);
	ereport(LOG,
			(errmsg("hasched: scheduler active on timeline %u, epoch %d (ZooKeeper fencing token %lld); %llu SQL jobs of earlier terms retried",
					tli, epoch, (long long) token, (unsigned long long) retried)));
}

/*
 * Requeue the leases of external workers whose ZooKeeper session ended
 * (their ephemeral znode vanished): the attempts they began before that
 * moment run again at once, without waiting for the leases to expire.
 */
static void
requeue_lost_workers(void)
{
	char		name[HS_WORKER_NAME_MAX + 1];
	TimestampTz at;

	while (hs_fencing_next_lost_worker(name, &at))
	{
		const char *qname = quote_literal_cstr(name);
		const char *qat = quote_literal_cstr(timestamptz_to_str(at));
		uint64		n;

		n = hs_end_attempts_now(psprintf("j.state = 'running' AND j.worker = %s"
										 " AND j.started_at < %s::timestamptz", qname, qat),
								psprintf("worker %s lost its ZooKeeper session", name),
								"worker_lost");
		if (SPI_execute(psprintf("INSERT INTO hasched.event (kind, detail) VALUES ('worker_lost',"
								 " jsonb_build_object('worker', %s, 'at', %s::timestamptz,"
								 " 'jobs_requeued', " UINT64_FORMAT "))", qname, qat, n),
						false, 0) != SPI_OK_INSERT)
			elog(ERROR, "hasched: writing the worker_lost event failed");
		ereport(LOG,
				(errmsg("hasched: worker \"%s\" lost its ZooKeeper session; %llu of its jobs requeued",
						name, (unsigned long long) n)));
	}
}

/* SQL jobs running under this epoch whose executor is gone: run again. */
static void
recover_orphans(void *arg)
{
	uint64		n;
	int64	   *ids;
	int			norphans = 0;
	uint64		retried;

	if (SPI_execute("SELECT j.id, j.worker FROM hasched.job j WHERE " SQL_RUNNING,
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "hasched: reading running SQL jobs failed");
	n = SPI_processed;
	ids = palloc(sizeof(int64) * (n + 1));
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		char	   *worker = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		int			slot = -1;
		int			pid = 0;

		if (worker == NULL || sscanf(worker, "executor/%d/%d", &slot, &pid) != 2 ||
			!executor_alive(slot, pid))
			ids[norphans++] = id;
	}
	retried = end_attempts_of("orphans", ids, norphans,
							  "the executor running the attempt exited", "executor_exited");
	if (retried > 0)
		ereport(LOG,
				(errmsg("hasched: %llu SQL jobs whose executor exited will run again",
						(unsigned long long) retried)));
}

/*
 * Expired leases.  Each round requeues the leases that ended since the
 * last round: lease_until in [requeue_from, now), requeue_from being the
 * "now" of the last round's scan, so that under an old snapshot a round
 * walks the dead index entries of the leases that ended since the last
 * round, not of every lease that ended since the snapshot (seen: 30,000
 * buffers a round after a minute of claims; the figure kept growing).
 *
 * A round's scan requeues every running job whose lease ended in its range
 * and that its snapshot sees and it can lock.  What it can miss stays
 * behind requeue_from: a job that became running (or whose lease was moved
 * back) in a transaction committed after that round's snapshot, with its
 * lease already over (a claim whose transaction lasted longer than its
 * lease), and a job that another transaction held locked (SKIP LOCKED) and
 * then left running with its lease over (a heartbeat rolled back).  For
 * them, a scan from the beginning (every lease that ended before now) runs
 * at least every REQUEUE_RESCAN_US, or ten times the CPU time the last one
 * used when that is longer (so that it takes at most a tenth of the
 * scheduler's time however many dead entries it walks); and on the first
 * round, after the server was fenced or the extension unusable, and after
 * a backward step of the clock.  hasched.requeue_expired() always scans
 * from the beginning.
 */
#define REQUEUE_RESCAN_US	(10 * USECS_PER_SEC)

static TimestampTz requeue_from = DT_NOBEGIN;	/* DT_NOBEGIN: rescan next */
static TimestampTz requeue_rescan_at = 0;	/* the last rescan began */
static int64 requeue_rescan_cpu = 0;	/* CPU time the last rescan used */

static void
requeue_rescan_next(void)
{
	TIMESTAMP_NOBEGIN(requeue_from);
}

typedef struct RequeueRange
{
	TimestampTz from;
	TimestampTz upto;
} RequeueRange;

static void
requeue_all(void *arg)
{
	RequeueRange *r = arg;

	(void) hs_requeue_expired(r->from, r->upto);
}

static void
requeue_one(void *arg)
{
	(void) hs_requeue_expired_job(*(int64 *) arg);
}

static void
requeue_expired_leases(void *arg)
{
	int64	   *ids;
	int			n;
	ErrorData  *all_error;
	bool		job_failed = false;
	RequeueRange r;
	bool		rescan;
	int64		cpu0 = 0;

	r.upto = GetCurrentTimestamp();
	rescan = TIMESTAMP_IS_NOBEGIN(requeue_from) || r.upto < requeue_from ||
		r.upto - requeue_rescan_at >= Max(REQUEUE_RESCAN_US, 10 * requeue_rescan_cpu);
	if (rescan)
	{
		TIMESTAMP_NOBEGIN(r.from);
		cpu0 = process_cpu_usec();
	}
	else
		r.from = requeue_from;
	all_error = hs_run_isolated(requeue_all, &r);
	if (all_error == NULL)
	{
		/* the next round starts where this one ended */
		requeue_from = r.upto;
		if (rescan)
		{
			requeue_rescan_at = r.upto;
			requeue_rescan_cpu = Max(process_cpu_usec() - cpu0, 0);
		}
		return;
	}
	/* job by job, every expired lease; requeue_from stays (retried next round) */
	ids = select_ids("SELECT id FROM hasched.job WHERE state = 'running'"
					 " AND lease_until < clock_timestamp() ORDER BY lease_until, id", &n);
	for (int i = 0; i < n; i++)
	{
		ErrorData  *edata = hs_run_isolated(requeue_one, &ids[i]);

		if (edata != NULL)
		{
			report_failure("requeue_expired", ids[i], edata);
			job_failed = true;
		}
	}
	if (!job_failed)
		report_failure("requeue_expired", 0, all_error);
}

/*
 * Delete history older than hasched.history_retention, a batch at a time.
 * The cutoff is a constant of the statement (now(): the round's start), so
 * that it bounds the scan of each finished_at (at) index: with
 * clock_timestamp(), which is volatile, it was only a filter, and every
 * prune read the whole index and its rows (0.5 s a minute over 3 million
 * finished jobs, none to delete).
 */
static void
prune_one(void *arg)
{
	(void) SPI_execute((const char *) arg, false, 0);
}

static void
prune_history(void)
{
	char	   *cutoff = psprintf("now() - interval '%d seconds'", hs_history_retention);
	char	   *sql[4];

	sql[0] = psprintf("DELETE FROM hasched.job_run WHERE ctid = ANY (ARRAY("
					  "SELECT ctid FROM hasched.job_run WHERE finished_at < %s LIMIT %d))",
					  cutoff, PRUNE_BATCH);
	sql[1] = psprintf("DELETE FROM hasched.job WHERE ctid = ANY (ARRAY("
					  "SELECT ctid FROM hasched.job WHERE state IN ('succeeded', 'dead', 'cancelled')"
					  " AND finished_at < %s LIMIT %d))", cutoff, PRUNE_BATCH);
	sql[2] = psprintf("DELETE FROM hasched.event WHERE ctid = ANY (ARRAY("
					  "SELECT ctid FROM hasched.event WHERE at < %s LIMIT %d))", cutoff, PRUNE_BATCH);
	sql[3] = "DELETE FROM hasched.quota_use WHERE day < (now() AT TIME ZONE 'UTC')::date - 1";
	for (int i = 0; i < lengthof(sql); i++)
		(void) run_step("prune", prune_one, sql[i]);
}

/* Are SQL jobs due now; and when is the next one due (DT_NOEND: none)? */
static bool
sql_work(bool *any_sql_queue, TimestampTz *next_due)
{
	bool		isnull;
	Datum		v;
	bool		due;

	/* paused queues have no work; held-back jobs are due after their delay */
	if (SPI_execute(psprintf("SELECT count(*) > 0,"
							 " bool_or(q.paused_at IS NULL AND EXISTS (SELECT 1 FROM hasched.job j"
							 "   WHERE j.queue = q.name AND j.priority = d.p"
							 "   AND j.state IN ('scheduled', 'pending', 'failed')"
							 "   AND j.run_at <= now() - d.hold)),"
							 " min((SELECT min(j.run_at) FROM hasched.job j WHERE j.queue = q.name"
							 "   AND j.priority = d.p AND j.state IN ('scheduled', 'pending', 'failed')"
							 "   AND j.run_at > now() - d.hold) + d.hold) FILTER (WHERE q.paused_at IS NULL)"
							 " FROM hasched.queue q CROSS JOIN (SELECT p, (%s)[p + 1] * interval '1 microsecond'"
							 "   AS hold FROM generate_series(0, 9) p) d"
							 " WHERE q.transport = 'sql'", hs_degrade_holdback_sql()),
					true, 1) != SPI_OK_SELECT)
		elog(ERROR, "hasched: looking for SQL jobs failed");
	*any_sql_queue = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	v = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	due = !isnull && DatumGetBool(v);
	v = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
	*next_due = isnull ? DT_NOEND : DatumGetTimestampTz(v);
	return due;
}

/* The steps of a round, as run_step() takes them */
static void
step_takeover(void *arg)
{
	requeue_rescan_next();
	become_primary();
}

static void
step_dropped_roles(void *arg)
{
	hs_forget_dropped_roles();
}

static void
step_lost_workers(void *arg)
{
	requeue_lost_workers();
}

static void
step_schedules(void *arg)
{
	*(TimestampTz *) arg = hs_fire_due_schedules(GetCurrentTimestamp());
}

static void
step_degrade(void *arg)
{
	hs_degrade_round();
}

static void
step_heartbeat(void *arg)
{
	int32		epoch;

	SpinLockAcquire(&hs_shared->mutex);
	epoch = hs_shared->epoch;
	SpinLockRelease(&hs_shared->mutex);
	hs_heartbeat(epoch);
}

typedef struct SqlWork
{
	bool		due;
	bool		any_sql_queue;
	TimestampTz next_due;
} SqlWork;

static void
step_sql_work(void *arg)
{
	SqlWork    *w = arg;

	w->due = sql_work(&w->any_sql_queue, &w->next_due);
}

/*
 * One round of the primary's work, in one transaction, each step isolated
 * from the others ("Isolated steps" above).  Returns the milliseconds to
 * sleep.
 */
static long
primary_tick(bool *became_primary)
{
	static TimestampTz last_prune = 0;
	TimestampTz now;
	TimestampTz next = DT_NOEND;
	bool		sql_queues = false;
	bool		due = false;
	bool		ready;
	long		delay;

	/* with ZooKeeper, only the leader acts, and each term has its epoch */
	if (hs_zookeeper_enabled())
	{
		open_term_epoch();
		*became_primary = true;
		if (!hs_node_may_act())
		{
			requeue_rescan_next();
			now = GetCurrentTimestamp();
			SpinLockAcquire(&hs_shared->mutex);
			hs_shared->last_tick = now;
			hs_shared->scheduler_next_wake = now + (int64) FENCED_POLL_MS * 1000;
			SpinLockRelease(&hs_shared->mutex);
			return FENCED_POLL_MS;
		}
	}

	hs_xact_begin("hasched scheduler");
	/* nothing of the round commits if the server lost the right to act */
	hs_fencing_guard_xact(true);

	ready = hs_extension_usable();
	if (!ready)
	{
		/*
		 * Not usable (no extension yet, an update or a restore under way):
		 * when it is again, take over anew, as after a promotion, so that
		 * a restored database gets its epoch check and its jobs' recovery.
		 */
		*became_primary = false;
		requeue_rescan_next();
	}
	/* the takeover first: until it has succeeded, nothing else runs */
	else if (*became_primary || run_step("takeover", step_takeover, NULL))
	{
		SqlWork		w;

		*became_primary = true;
		/* rows of roles dropped since the last round name no role */
		(void) run_step("dropped_roles", step_dropped_roles, NULL);
		if (!run_step("schedules", step_schedules, &next))
			next = DT_NOEND;
		(void) run_step("requeue_expired", requeue_expired_leases, NULL);
		(void) run_step("lost_workers", step_lost_workers, NULL);
		(void) run_step("orphans", recover_orphans, NULL);
		if (run_step("sql_work", step_sql_work, &w))
		{
			due = w.due;
			sql_queues = w.any_sql_queue;
			SpinLockAcquire(&hs_shared->mutex);
			hs_shared->sql_queues = sql_queues ? 1 : 0;
			SpinLockRelease(&hs_shared->mutex);
			next = Min(next, w.next_due);
		}
		else
		{
			/* as far as the last round knew */
			SpinLockAcquire(&hs_shared->mutex);
			sql_queues = hs_shared->sql_queues != 0;
			SpinLockRelease(&hs_shared->mutex);
			due = sql_queues;
		}
	}

	hs_xact_end(true);

	/*
	 * About once a second, in a transaction of their own that commits
	 * asynchronously (never waiting for a synchronous standby, whose
	 * absence is one of the signals): the automatic read-only mode and the
	 * hold-back (degrade.c), and the heartbeat (availability.c).
	 */
	if (ready && *became_primary && (hs_degrade_due() || hs_heartbeat_due()))
	{
		hs_xact_begin("hasched scheduler: degradation and heartbeat");
		hs_fencing_guard_xact(true);
		hs_commit_async();
		if (hs_degrade_due())
			(void) run_step("degrade", step_degrade, NULL);
		if (hs_heartbeat_due())
			(void) run_step("heartbeat", step_heartbeat, NULL);
		hs_xact_end(true);
	}

	/* pruning in a transaction of its own, after the round's work committed */
	if (ready && GetCurrentTimestamp() - last_prune >= PRUNE_INTERVAL_US)
	{
		hs_xact_begin("hasched scheduler: pruning history");
		prune_history();
		hs_xact_end(true);
		last_prune = GetCurrentTimestamp();
	}

	if (!ready)
		return 5000;

	manage_executors(due, sql_queues);

	now = GetCurrentTimestamp();
	delay = hs_scheduler_naptime;
	if (!TIMESTAMP_IS_NOEND(next))
	{
		int64		until = next - now;

		/* wake at the due microsecond, rounded up to the next millisecond */
		delay = until <= 0 ? 0 : Min((int64) delay, (until + 999) / 1000);
	}
	SpinLockAcquire(&hs_shared->mutex);
	hs_shared->last_tick = now;
	hs_shared->scheduler_next_wake = now + (int64) delay * 1000;
	SpinLockRelease(&hs_shared->mutex);
	return delay;
}

/* ------------------------------------------------------------------------
 * The figures of health() and /metrics (metrics.c)
 * ------------------------------------------------------------------------ */

/*
 * Microseconds from one count of the figures to the next: stats_interval,
 * or ten times the CPU time the last count used when that is longer (a
 * deep backlog, dead rows kept by an old snapshot), so that counting takes
 * at most a tenth of the scheduler's time however slow it gets.  CPU time,
 * not the time the count took: a count that waited on a lock (LOCK TABLE)
 * or for a CPU on a busy machine was not slow itself.  (Spacing by the
 * time taken, capped at ten intervals for the lock waits' sake, let a
 * count of seconds run every ten intervals: under an old snapshot the
 * scheduler then spent a growing part of a core counting.)
 */
static int64
figures_spacing(int64 last_cpu)
{
	int64		interval = (int64) hs_stats_interval * 1000;

	return Max(interval, 10 * last_cpu);
}

/* the CPU time a count uses in one go before its steps are paced */
#define FIGURES_BURST_USEC	500000

typedef struct FiguresStep
{
	HsFigures  *f;
	bool		restart;
	bool		done;
} FiguresStep;

static void
step_figures(void *arg)
{
	FiguresStep *st = (FiguresStep *) arg;

	st->done = hs_figures_count_step(st->f, st->restart);
}

/*
 * Every hasched.stats_interval, on the primary and on a standby, count the
 * unfinished jobs by queue and state and read the mode, and publish them
 * for the health listener.  The count goes a step at a time, each in a
 * transaction of its own (hs_figures_count_step: a chunk of the waiting
 * jobs), with the rest of the scheduler's work in between: a deep backlog
 * no longer holds up the NOTIFYs, rounds and firings for the length of a
 * whole count.  A count that uses much CPU (a deep backlog, dead rows kept
 * by an old snapshot) is spaced out to at most a tenth of the scheduler's
 * time, and so are its steps once it has used FIGURES_BURST_USEC: each
 * waits nine times the CPU time the one before used, so that a long count
 * is not a burst of a whole CPU for its length (bench step 4, claims under
 * an old snapshot, whose count of the backlog grows: last 10 s / first 10
 * s 0.81 with the counts in bursts, 0.89 with no count), while a shorter
 * one (the degradation's signal; a count of 1.5 million waiting jobs used
 * 0.52-0.63 s in TAP 073) is over at once.  Returns the milliseconds until
 * the next step is due.
 */
static long
count_figures(void)
{
	static TimestampTz last_count = 0;
	static int64 last_cpu = 0;
	static bool counting = false;
	static int64 count_cpu = 0;
	static TimestampTz next_step_at = 0;
	static HsFigures *figures = NULL;
	TimestampTz now = GetCurrentTimestamp();
	int64		interval;
	int64		cpu0;
	int64		step_cpu;
	FiguresStep st;

	interval = figures_spacing(last_cpu);
	if (!counting && last_count != 0 && now - last_count < interval)
		return (long) ((last_count + interval - now + 999) / 1000);
	if (counting && now < next_step_at)
		return (long) ((next_step_at - now + 999) / 1000);
	if (figures == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		figures = hs_figures_alloc();
		MemoryContextSwitchTo(old);
	}
	st.f = figures;
	st.restart = !counting;
	st.done = false;
	if (!counting)
	{
		last_count = now;
		count_cpu = 0;
	}
	cpu0 = process_cpu_usec();
	hs_xact_begin("hasched scheduler: counting jobs");
	counting = hs_extension_usable() && run_step("figures", step_figures, &st) && !st.done;
	hs_xact_end(true);
	step_cpu = Max(process_cpu_usec() - cpu0, 0);
	count_cpu += step_cpu;
	/* past its first FIGURES_BURST_USEC, a count's steps are paced as the counts are */
	next_step_at = GetCurrentTimestamp() + (count_cpu > FIGURES_BURST_USEC ? 9 * step_cpu : 0);
	if (st.done)
	{
		last_cpu = count_cpu;
		figures->cpu_usec = last_cpu;
		figures->spacing_usec = figures_spacing(last_cpu);
		hs_figures_publish(figures);
	}
	if (counting)
		return (long) Max((next_step_at - GetCurrentTimestamp() + 999) / 1000, 0);
	return (long) (figures_spacing(last_cpu) / 1000);
}

/* A round began: health tells its age on every server (primary or standby). */
static void
note_round(void)
{
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&hs_shared->mutex);
	hs_shared->last_round = now;
	SpinLockRelease(&hs_shared->mutex);
}

/* Is this server the primary, with the takeover done (become_primary)? */
static bool primary = false;

/* when the next round of the primary's work is due */
static TimestampTz next_round_at = 0;

/*
 * One round: on a standby, watch for the promotion; on the primary, send
 * the NOTIFYs that commits asked for (wakeup.c), then the primary's work
 * when it is due or a commit asked for it.  Returns the milliseconds to
 * sleep.
 */
static long
scheduler_round(void)
{
	long		delay;
	long		figures_due;
	TimestampTz now;

	note_round();
	if (RecoveryInProgress())
	{
		set_role(HS_ROLE_STANDBY);
		primary = false;
		figures_due = count_figures();
		return Min(STANDBY_POLL_MS, figures_due);
	}
	if (primary && hs_notify_pending())
	{
		hs_xact_begin("hasched scheduler: notifying pull workers");
		hs_send_notifies();
		hs_xact_end(true);
	}
	now = GetCurrentTimestamp();
	if (primary && now < next_round_at &&
		pg_atomic_exchange_u32(&hs_shared->round_requested, 0) == 0)
	{
		figures_due = count_figures();
		now = GetCurrentTimestamp();
		return Max(Min((long) ((next_round_at - now + 999) / 1000), figures_due), 0);
	}

	pg_atomic_write_u32(&hs_shared->round_requested, 0);
	delay = primary_tick(&primary);
	next_round_at = GetCurrentTimestamp() + (int64) delay * 1000;
	if (primary)
		set_role(HS_ROLE_PRIMARY);
	/* the takeover and the round first: counting can wait for them */
	figures_due = count_figures();
	return Min(delay, figures_due);
}

/* After an error in a round: redo the takeover checks. */
static void
scheduler_after_error(void)
{
	primary = false;
}

void
hasched_scheduler_main(Datum main_arg)
{
	static const HsWorkerLoop loop = {
		.name = "scheduler",
		.round = scheduler_round,
		.after_error = scheduler_after_error,
		.error_pause_ms = 1000,
	};

	hs_worker_signals(false);

	SpinLockAcquire(&hs_shared->mutex);
	hs_shared->scheduler_pid = MyProcPid;
	hs_shared->scheduler_latch = MyLatch;
	hs_shared->scheduler_role = HS_ROLE_STARTING;
	hs_shared->role_since = GetCurrentTimestamp();
	SpinLockRelease(&hs_shared->mutex);
	on_shmem_exit(scheduler_detach, (Datum) 0);

	hs_worker_connect("hasched scheduler");
	hs_worker_run(&loop);
}

/* Register the scheduler; called from _PG_init. */
void
hs_register_scheduler(void)
{
	/* a database connection; started at consistent state, so it also watches on a standby */
	hs_register_static_worker("scheduler", "hasched_scheduler_main", true,
							  BgWorkerStart_ConsistentState);
}
