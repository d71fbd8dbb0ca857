/*-------------------------------------------------------------------------
 *
 * executor.c
 *		Executors: dynamic background workers that run the jobs of sql
 *		queues inside the database, as the job's owner, within the job's
 *		timeout.
 *
 * A round claims a batch of due SQL jobs (through the same claim path as
 * pull workers, so priorities, concurrency and cursors apply) and commits
 * the claim, so that the jobs show as running and cancel() can find them.
 * Then each job's SQL runs in a subtransaction, as the owner role, with
 * statement_timeout set to the job's timeout, and its outcome is recorded
 * (complete, or a failed attempt retried per the job's policy) in the same
 * transaction.  So the database effects of a job and the record of its
 * success commit together.  Consecutive quick jobs of one owner share a
 * transaction (a group, see may_join), their successes recorded in one
 * statement just before it commits; any other job has one of its own.
 *
 * An attempt starts when its job starts.  The claim stamps started_at and a
 * lease that covers lease + timeout.  A job that starts RESTAMP_AFTER_US or
 * more after its claim is stamped again as it starts (and skipped if it is
 * no longer ours: cancelled or requeued meanwhile).  Before a job starts,
 * the jobs of its batch behind it are given back unless their leases
 * outlast the job's worst case (its timeout plus hasched.job_grace, and a
 * margin), the batch is younger than BATCH_HOLD_US and no other executor
 * is idle: so no job's lease ends while it waits, and no job waits while an
 * executor could run it.  (While all executors are busy, a job may wait
 * behind the one job that runs before it in its batch.)  A queue whose lease is not
 * longer than the grace and margin is claimed from one job at a time.
 * Whatever ends a batch early (an error outside a job's own SQL, the
 * executor exiting) gives the jobs not started back at once.  Given back
 * means pending again, the attempt not counted.  The job whose transaction
 * an error broke is recorded as a failed attempt.  A queue whose claim
 * fails is left alone for BAD_QUEUE_PAUSE_US at a time and reported (a
 * warning, an event of kind executor_error; again after
 * BAD_QUEUE_REPORT_US); the other queues go on.
 *
 * A job's SQL runs with the owner's rights and no more: the user id is
 * switched as for a security-restricted operation (like VACUUM running an
 * index function): no SET ROLE or SET SESSION AUTHORIZATION, no temporary
 * objects, no holdable cursors, no LISTEN.  After each job the session is
 * reset, so that nothing the job left acts in a later job of another role:
 * its settings (undone with the job's GUC nest level), prepared statements,
 * advisory locks, sequences' currval()/lastval() and the random() seed.  A
 * job whose owner role was dropped, or that was written for its owner by a
 * role that is not a superuser (see hs_owner_refusal in src/core/roles.c),
 * or whose timeout is beyond hasched.max_timeout (a row from before the
 * bound), is not run: it goes dead saying why.  The rows a job's SQL returns are counted and dropped as
 * they come, never kept: the result is the row count of the last statement.
 *
 * Stopping a job.  cancel() of a running job notes the attempt's lease in a
 * ring in shared memory and signals the executor running it (SIGINT).  The
 * executor acts on a SIGINT only while a job's SQL runs, and only if that
 * job's lease is in the ring or the job's own statement or lock timeout
 * fired: a signal that arrives after its job ended stops nothing.  A job
 * whose SQL swallows the cancel (a PL/pgSQL block that catches
 * query_canceled) gets hasched.job_grace more; then the watchdog timer
 * makes the executor exit (FATAL, which no SQL can catch).  On its way out
 * the executor records the timed-out attempt as failed (a cancelled job
 * stays cancelled) and gives back the jobs it had not started.  An executor
 * that dies otherwise leaves its job running under its name; the scheduler
 * sees the executor gone and runs the job again (an attempt that counts).
 *
 * IDENTIFICATION
 *		src/workers/executor.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>
#include <signal.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "commands/prepare.h"
#include "commands/sequence.h"
#include "common/hashfn.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "storage/spin.h"
#include "tcop/dest.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/resowner.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "workers/worker.h"

#define CLAIM_BATCH			100
/* jobs run in one transaction at most (see may_join) */
#define GROUP_MAX_JOBS		32
/* a job that starts longer than this after its claim is stamped again */
#define RESTAMP_AFTER_US	(100 * 1000)
/* jobs not started are given back once their batch is this old */
#define BATCH_HOLD_US		USECS_PER_SEC
/* ... or when their lease would not outlast the job to run + this */
#define HOLD_MARGIN_US		(2 * USECS_PER_SEC)
/* ... or when another executor has been idle this long */
#define IDLE_PEER_US		(10 * 1000)
/* how often the watchdog looks at a running job */
#define WATCHDOG_MS			100
/* a queue whose claim failed is left alone this long ... */
#define BAD_QUEUE_PAUSE_US	(10 * USECS_PER_SEC)
/* ... and its failure reported at most this often */
#define BAD_QUEUE_REPORT_US	(10 * 60 * USECS_PER_SEC)
#define MAX_BAD_QUEUES		8

typedef struct ExecJob
{
	HsLease		lease;
	char	   *sql;
	Oid			owner;			/* runs with this role's rights */
	Oid			submitted_by;	/* if hs_owner_refusal() allows it */
	Interval	timeout;
	TimestampTz lease_until;	/* as claimed */
	uint32		queue_hash;		/* of its queue's name, for known_fast() */
} ExecJob;

/*
 * The batch: jobs[0 .. nclaimed - 1] were claimed, jobs[0 .. nstarted - 1]
 * started (or skipped); current is the job whose transaction is open.
 */
static ExecJob jobs[CLAIM_BATCH];
static int	nclaimed = 0;
static int	nstarted = 0;
static ExecJob *current = NULL;
static TimestampTz claimed_at = 0;
static MemoryContext batch_cxt = NULL;
static MemoryContext round_mcxt = NULL;

/*
 * The group (see may_join): jobs[group_first .. nstarted - 1] ran (or were
 * skipped) in the transaction that is open (group_open), and commit with
 * it; current, when set, is the last of them and still runs.  Jobs before
 * solo_until run one per transaction: they are a group that rolled back,
 * run again.
 */
static bool group_open = false;
static bool group_solo = false;	/* a group of one, recorded as it ends */
static int	group_first = 0;
static int	group_nok = 0;		/* its jobs that succeeded: */
static int	group_ok[GROUP_MAX_JOBS];	/* their index in jobs[] */
static uint64 group_rows[GROUP_MAX_JOBS];	/* and their row counts */
static Oid	group_owner = InvalidOid;
static TimestampTz group_started = 0;
static int	solo_until = 0;

/*
 * SET CONSTRAINTS in a group (see sets_constraints), seen by the
 * executor's ProcessUtility hook: in the group's first job it seals the
 * group (no other job joins it); in a later one it is refused and sets
 * constraints_set, the job's failure is not recorded, and the group rolls
 * back and runs again, one job per transaction.
 */
static enum
{
	CONSTRAINTS_ANY,			/* a solo group, or no job runs */
	CONSTRAINTS_SEAL,			/* the first job of a group runs */
	CONSTRAINTS_REFUSE			/* a later job of a group runs */
}			constraints_rule = CONSTRAINTS_ANY;
static bool group_sealed = false;
static bool constraints_set = false;
static ProcessUtility_hook_type prev_process_utility = NULL;

/* Shared with the signal handlers (SIGINT, the watchdog's SIGALRM) */
#define END_TIMEOUT		1
#define END_CANCEL		2
static volatile int64 running_lease = 0;	/* lease of the job whose SQL runs */
static volatile int64 running_job = 0;	/* and its id */
static volatile TimestampTz hard_deadline = 0;	/* its timeout + grace */
static volatile TimestampTz cancel_seen = 0;
static volatile int64 grace_usec = 0;
static volatile sig_atomic_t end_reason = 0;
static TimeoutId watchdog_timeout;

/* queues whose claim failed, and until when they are left alone */
typedef struct BadQueue
{
	char		name[HS_QUEUE_NAME_MAX];
	TimestampTz until;
	TimestampTz reported_at;
} BadQueue;
static BadQueue bad_queues[MAX_BAD_QUEUES];
static const char *claiming_queue = NULL;

static int	my_slot = -1;
static char *my_name = NULL;
static TimestampTz idle_since = 0;

/* ------------------------------------------------------------------------
 * The slot and the signal handlers
 * ------------------------------------------------------------------------ */

static void
executor_detach(int code, Datum arg)
{
	SpinLockAcquire(&hs_shared->mutex);
	hs_executors[my_slot].state = HS_EXEC_FREE;
	hs_executors[my_slot].pid = 0;
	hs_executors[my_slot].latch = NULL;
	hs_executors[my_slot].job_id = 0;
	SpinLockRelease(&hs_shared->mutex);
}

static void
set_state(HsExecState state, int64 job_id)
{
	SpinLockAcquire(&hs_shared->mutex);
	hs_executors[my_slot].state = state;
	hs_executors[my_slot].job_id = job_id;
	hs_executors[my_slot].since = GetCurrentTimestamp();
	SpinLockRelease(&hs_shared->mutex);
}

/*
 * Must the SQL of the running job stop: cancel() stopped it (its lease is
 * in the ring), or the fencing gate closed (src/core/fencing.c names the
 * job in the slot)?  Plain reads of shared atomics: safe in a handler.
 */
static bool
stop_asked(int64 lease, int64 job)
{
	return hs_lease_cancelled(lease) ||
		(job != 0 && (int64) pg_atomic_read_u64(&hs_executors[my_slot].stop_job_id) == job);
}

/*
 * SIGINT: a query cancel only while a job's SQL runs, and only if that job
 * must stop (stop_asked) or its own statement or lock timeout fired (those
 * signal this process themselves).  Any other SIGINT -- the late signal of
 * a cancel whose job has ended, pg_cancel_backend() -- stops nothing.
 */
static void
executor_sigint(SIGNAL_ARGS)
{
	int			save_errno = errno;
	int64		lease = running_lease;

	if (lease != 0 &&
		(stop_asked(lease, running_job) ||
		 get_timeout_indicator(STATEMENT_TIMEOUT, false) ||
		 get_timeout_indicator(LOCK_TIMEOUT, false)))
	{
		InterruptPending = true;
		QueryCancelPending = true;
	}
	SetLatch(MyLatch);
	errno = save_errno;
}

/*
 * Every WATCHDOG_MS while a job's SQL runs (in the SIGALRM handler):
 * deliver a cancel that came before the SQL started, and end the job for
 * good -- by making this process exit, which no SQL can catch -- once it
 * went on for hasched.job_grace after its cancel, or past its timeout plus
 * that grace.
 */
static void
watchdog(void)
{
	int64		lease = running_lease;
	TimestampTz now;

	if (lease == 0 || end_reason != 0)
		return;
	now = GetCurrentTimestamp();
	if (stop_asked(lease, running_job))
	{
		if (cancel_seen == 0)
		{
			cancel_seen = now;
			InterruptPending = true;
			QueryCancelPending = true;
		}
		else if (now - cancel_seen >= grace_usec)
			end_reason = END_CANCEL;
	}
	else if (hard_deadline != 0 && now >= hard_deadline)
		end_reason = END_TIMEOUT;
	if (end_reason != 0)
	{
		InterruptPending = true;
		ProcDiePending = true;
	}
	SetLatch(MyLatch);
}

/* ------------------------------------------------------------------------
 * Claims
 * ------------------------------------------------------------------------ */

static bool
queue_is_bad(const char *queue, TimestampTz now)
{
	for (int i = 0; i < MAX_BAD_QUEUES; i++)
		if (bad_queues[i].until > now && strcmp(bad_queues[i].name, queue) == 0)
			return true;
	return false;
}

/*
 * Leave a queue alone for a while: claiming from it failed.  True when the
 * failure should be reported (not reported for this queue lately).
 */
static bool
note_bad_queue(const char *queue)
{
	TimestampTz now = GetCurrentTimestamp();
	int			slot = 0;
	bool		report;

	for (int i = 0; i < MAX_BAD_QUEUES; i++)
	{
		if (strcmp(bad_queues[i].name, queue) == 0)
		{
			slot = i;
			break;
		}
		if (bad_queues[i].until < bad_queues[slot].until)
			slot = i;
	}
	if (strcmp(bad_queues[slot].name, queue) != 0)
	{
		strlcpy(bad_queues[slot].name, queue, HS_QUEUE_NAME_MAX);
		bad_queues[slot].reported_at = 0;
	}
	bad_queues[slot].until = now + BAD_QUEUE_PAUSE_US;
	report = now - bad_queues[slot].reported_at >= BAD_QUEUE_REPORT_US;
	if (report)
		bad_queues[slot].reported_at = now;
	return report;
}

/* Claim up to CLAIM_BATCH due SQL jobs into jobs[], copied into batch_cxt. */
static void
claim_batch(void)
{
	static SPIPlanPtr list_plan = NULL;
	int			n = 0;
	uint64		nqueues;
	char	  **queues;
	bool	   *batchable;
	TimestampTz now = GetCurrentTimestamp();

	hs_xact_begin("hasched executor: claiming");
	hs_fencing_guard_xact(true);

	hs_plan(&list_plan, "SELECT name, lease FROM hasched.queue WHERE transport = 'sql' ORDER BY name", 0);
	if (SPI_execute_plan(list_plan, NULL, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "hasched: listing sql queues failed");
	nqueues = SPI_processed;
	queues = palloc(sizeof(char *) * (nqueues + 1));
	batchable = palloc(sizeof(bool) * (nqueues + 1));
	for (uint64 i = 0; i < nqueues; i++)
	{
		bool		isnull;
		Datum		lease = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull);

		queues[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		/* jobs wait in a batch only if their lease outlasts a job's grace */
		batchable[i] = !isnull && hs_interval_usec(DatumGetIntervalP(lease)) >
			(int64) hs_job_grace * 1000 + HOLD_MARGIN_US;
	}

	for (uint64 q = 0; q < nqueues && n < CLAIM_BATCH; q++)
	{
		uint64		got;
		uint32		queue_hash;

		if (queue_is_bad(queues[q], now))
			continue;
		queue_hash = hash_bytes((const unsigned char *) queues[q], strlen(queues[q]));
		claiming_queue = queues[q];
		got = hs_claim_jobs(queues[q], my_name, batchable[q] ? CLAIM_BATCH - n : 1,
							NULL, "sql", true);
		claiming_queue = NULL;
		for (uint64 i = 0; i < got; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			ExecJob    *job = &jobs[n++];
			MemoryContext old;
			bool		isnull;
			char	   *sql;

			sql = hs_payload_sql(SPI_getbinval(tup, desc, 5, &isnull));
			old = MemoryContextSwitchTo(batch_cxt);
			job->lease.job_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
			job->lease.epoch = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
			job->lease.attempt = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
			job->lease.lease_id = DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull));
			job->lease.token = NULL;
			job->sql = sql ? pstrdup(sql) : NULL;
			job->queue_hash = queue_hash;
			job->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 11, &isnull));
			job->submitted_by = DatumGetObjectId(SPI_getbinval(tup, desc, 12, &isnull));
			job->timeout = *DatumGetIntervalP(SPI_getbinval(tup, desc, 8, &isnull));
			job->lease_until = DatumGetTimestampTz(SPI_getbinval(tup, desc, 9, &isnull));
			MemoryContextSwitchTo(old);
		}
	}

	hs_xact_end(true);
	nclaimed = n;
	nstarted = 0;
	solo_until = 0;
	claimed_at = now;
}

/* Has another executor been idle for IDLE_PEER_US, free to take jobs? */
static bool
idle_peer(TimestampTz now)
{
	bool		found = false;

	SpinLockAcquire(&hs_shared->mutex);
	for (int i = 0; i < hs_max_executors && !found; i++)
		found = i != my_slot &&
			(hs_executors[i].state == HS_EXEC_IDLE || hs_executors[i].state == HS_EXEC_WOKEN) &&
			now - hs_executors[i].since >= IDLE_PEER_US;
	SpinLockRelease(&hs_shared->mutex);
	return found;
}

/*
 * Before job k of the batch starts.  The jobs after it wait while it runs,
 * which may last its timeout plus hasched.job_grace: they are given back
 * now (pending, their attempt not counted) unless all their leases outlast
 * that, with HOLD_MARGIN_US to spare, the batch is younger than
 * BATCH_HOLD_US, and no other executor is idle (it can run them at once).
 * Job k itself, if it starts RESTAMP_AFTER_US or more after its claim, has
 * its start and lease stamped now.  start_work() says which of the two job
 * k needs; before_start() does it, in a transaction of its own (so that
 * cancel() never waits on it; the group is committed first).  False when
 * job k is no longer ours (cancelled or requeued meanwhile): skip it.
 */
static void
start_work(int k, bool *restamp, bool *give_back)
{
	ExecJob    *job = &jobs[k];
	TimestampTz now = GetCurrentTimestamp();

	*restamp = k > 0 && now - claimed_at >= RESTAMP_AFTER_US;
	*give_back = false;
	if (k + 1 < nclaimed)
	{
		int64		worst = hs_interval_usec(&job->timeout);
		TimestampTz must_outlast;

		worst = Min(worst, hs_max_timeout_usec());
		must_outlast = now + worst + (int64) hs_job_grace * 1000 + HOLD_MARGIN_US;
		*give_back = now - claimed_at >= BATCH_HOLD_US;
		for (int j = k + 1; j < nclaimed && !*give_back; j++)
			*give_back = jobs[j].lease_until < must_outlast;
		*give_back = *give_back || idle_peer(now);
	}
}

static bool
before_start(int k, bool restamp, bool give_back)
{
	ExecJob    *job = &jobs[k];
	bool		ours = true;

	if (!restamp && !give_back)
		return true;

	Assert(!group_open);
	hs_xact_begin("hasched executor: starting a job");
	hs_fencing_guard_xact(true);
	if (give_back)
	{
		HsLease		rest[CLAIM_BATCH];
		int			n = 0;

		for (int j = k + 1; j < nclaimed; j++)
			rest[n++] = jobs[j].lease;
		(void) hs_release_leases(rest, n);
	}
	if (restamp)
		ours = hs_restamp_lease(&job->lease);
	hs_xact_end(true);
	if (give_back)
		nclaimed = k + 1;
	return ours;
}

/* An event of kind executor_error: a queue whose claim failed. */
static void
report_bad_queue(const char *queue, const char *error)
{
	char	   *sql;

	ereport(WARNING,
			(errmsg("hasched: executor %s leaves queue \"%s\" alone for %d s at a time: claiming from it failed: %s",
					my_name, queue, (int) (BAD_QUEUE_PAUSE_US / USECS_PER_SEC), error),
			 errdetail("The other queues go on. This is reported again after %d minutes if the claims still fail.",
					   (int) (BAD_QUEUE_REPORT_US / USECS_PER_SEC / 60)),
			 errhint("See the event of kind executor_error in hasched.event; fix the queue's row or its jobs.")));
	sql = psprintf("INSERT INTO hasched.event (kind, detail) VALUES ('executor_error',"
				   " jsonb_build_object('step', 'claim', 'queue', %s, 'error', %s, 'executor', %s))",
				   quote_literal_cstr(queue), quote_literal_cstr(error),
				   quote_literal_cstr(my_name));
	hs_xact_begin("hasched executor: reporting");
	if (SPI_execute(sql, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "hasched: writing an executor_error event failed");
	hs_xact_end(true);
}

/* ------------------------------------------------------------------------
 * Ending a batch early
 * ------------------------------------------------------------------------ */

typedef struct SettleStep
{
	const HsLease *unstarted;
	int			n;
	const HsLease *cur;
	const char *why;
} SettleStep;

static void
settle_step_body(void *arg)
{
	SettleStep *st = arg;

	if (st->cur == NULL)
	{
		uint64		back = hs_release_leases(st->unstarted, st->n);

		if (back > 0)
			ereport(LOG,
					(errmsg("hasched: executor %s gave back %llu jobs it had not started or whose work rolled back",
							my_name, (unsigned long long) back)));
	}
	else
		(void) hs_report_fail(st->cur, st->why, true);
}

/* One step of settle_batch, in a subtransaction: an error in it is logged. */
static void
settle_step(const HsLease *unstarted, int n, const HsLease *cur, const char *why)
{
	SettleStep	st = {unstarted, n, cur, why};
	ErrorData  *edata = hs_run_isolated(settle_step_body, &st);

	if (edata != NULL)
		ereport(LOG,
				(errmsg("hasched: executor %s could not settle its batch: %s",
						my_name, edata->message)));
}

/*
 * Settle a batch that ends early, in a transaction of its own, after the
 * transaction that was open rolled back: give back the jobs not started
 * and those of the open group (their work rolled back with it), and record
 * the attempt of the job under way as failed (why) unless why is NULL.  The
 * batch is forgotten first: what fails here is left to the scheduler
 * (lease expiry, orphan recovery).
 */
static void
settle_batch(const char *why)
{
	HsLease		unstarted[CLAIM_BATCH];
	HsLease		cur;
	bool		have_cur = current != NULL && why != NULL;
	int			n = 0;

	if (have_cur)
		cur = current->lease;
	if (group_open)
		for (int i = group_first; i < nstarted; i++)
			if (&jobs[i] != current)
				unstarted[n++] = jobs[i].lease;
	for (int i = nstarted; i < nclaimed; i++)
		unstarted[n++] = jobs[i].lease;
	current = NULL;
	group_open = false;
	group_nok = 0;
	nclaimed = nstarted = solo_until = 0;
	if (!have_cur && n == 0)
		return;

	hs_xact_begin("hasched executor: ending a batch");
	hs_fencing_guard_xact(true);
	if (n > 0)
		settle_step(unstarted, n, NULL, NULL);
	if (have_cur)
		settle_step(NULL, 0, &cur, why);
	hs_xact_end(true);
}

/*
 * On the way out (before_shmem_exit, so still connected): a job the
 * watchdog ended is recorded as timed out (a cancelled one stays
 * cancelled), and the jobs not started go back.  An error here is FATAL and
 * ends this callback; the scheduler's orphan recovery is then the fallback.
 */
static void
executor_exit(int code, Datum arg)
{
	char	   *why = NULL;

	if (current == NULL && !group_open && nstarted >= nclaimed)
		return;
	AbortOutOfAnyTransaction();
	if (current != NULL && end_reason == END_TIMEOUT)
	{
		why = psprintf("the job ran past its timeout (%s) and went on for hasched.job_grace (%d ms) after it was cancelled; its executor ended it by exiting",
					   hs_interval_text(&current->timeout), hs_job_grace);
		ereport(LOG,
				(errmsg("hasched: job %lld ran past its timeout (%s) and ignored the cancel for hasched.job_grace (%d ms): executor %s exits to end it",
						(long long) current->lease.job_id, hs_interval_text(&current->timeout),
						hs_job_grace, my_name)));
	}
	else if (current != NULL && end_reason == END_CANCEL)
		ereport(LOG,
				(errmsg("hasched: job %lld was stopped (cancelled, or the fencing gate closed) and went on for hasched.job_grace (%d ms): executor %s exits to end it",
						(long long) current->lease.job_id, hs_job_grace, my_name)));
	settle_batch(why);
}

/* ------------------------------------------------------------------------
 * Running a job
 * ------------------------------------------------------------------------ */

/*
 * Between jobs: undo what a job's SQL may have left in this session that
 * the job's GUC nest level and transaction did not (README, "What a job
 * leaves behind").
 */
/* strong random bytes for the seeds of random(), drawn for a batch at a time */
static uint64 seeds[CLAIM_BATCH];
static int	nseeds = 0;

static void
reset_session(void)
{
	uint64		r;
	double		seed;

	/* session-level advisory locks: pg_advisory_unlock_all() */
	LockReleaseAll(USER_LOCKMETHOD, true);
	/* currval() and lastval(): DISCARD SEQUENCES */
	ResetSequenceCaches();
	/* random(): a seed nobody chose, as in a new session */
	if (nseeds == 0)
	{
		if (pg_strong_random(seeds, sizeof(seeds)))
			nseeds = lengthof(seeds);
		else
			seeds[nseeds++] = (uint64) GetCurrentTimestamp() ^ ((uint64) MyProcPid << 32);
	}
	r = seeds[--nseeds];
	seed = ldexp((double) (r >> 11), -53) * 2.0 - 1.0;
	(void) DirectFunctionCall1(setseed, Float8GetDatum(seed));
	/* a lock timeout of the job that fired and was never reported */
	(void) get_timeout_indicator(LOCK_TIMEOUT, true);
}

/* The job's statement timeout, and the watchdog every WATCHDOG_MS. */
static void
arm_timeouts(int64 timeout_ms)
{
	EnableTimeoutParams t[2];

	grace_usec = (int64) hs_job_grace * 1000;
	hard_deadline = GetCurrentTimestamp() + timeout_ms * 1000 + grace_usec;
	cancel_seen = 0;
	t[0].id = STATEMENT_TIMEOUT;
	t[0].type = TMPARAM_AFTER;
	t[0].delay_ms = (int) timeout_ms;
	t[0].fin_time = 0;
	t[1].id = watchdog_timeout;
	t[1].type = TMPARAM_EVERY;
	t[1].delay_ms = WATCHDOG_MS;
	t[1].fin_time = 0;
	enable_timeouts(t, lengthof(t));
}

static void
disarm_timeouts(void)
{
	DisableTimeoutParams t[2];

	t[0].id = STATEMENT_TIMEOUT;
	t[0].keep_indicator = false;
	t[1].id = watchdog_timeout;
	t[1].keep_indicator = false;
	disable_timeouts(t, lengthof(t));
	hard_deadline = 0;
}

/*
 * Groups.  Consecutive jobs of one owner run in one transaction, each in a
 * subtransaction of its own.  The successes of the group are recorded
 * together, in one statement, just before the group commits: so a job's
 * effects commit exactly when the record of its success does, as with one
 * transaction per job.  When that statement finds a lease that is no longer
 * ours (a cancel() that came after the job's SQL ended), or the record or
 * the commit fails (a deferred constraint of one of the jobs, say), the
 * group rolls back as a whole and its jobs run again, one per transaction,
 * as "solo" groups that record each outcome as the job ends: the effects
 * of a job that lost its lease never commit, and a failure falls on the
 * job that caused it.  A crash before the commit loses the group's work and
 * its records together: its jobs are run again.  The group is committed
 * before a job that may not join it starts: one of another owner, any job
 * once the group is hasched.executor_group_ms old, a job that needs a
 * transaction of its own first (before_start), and at the end of the
 * batch.
 */
/*
 * How long the jobs of a queue and owner ran on this executor lately: a
 * maximum that decays by a quarter at each job (a slot per hash of the
 * two, shared on a collision).  A job joins a group only while this is
 * below hasched.executor_group_ms: after a job that ran long, its queue's
 * jobs run in groups again only some twenty jobs later.  So a job that
 * runs long seldom holds the commit of the jobs before it in its group.
 */
#define RUN_TIMES			256
typedef struct RunTime
{
	uint32		queue_hash;
	Oid			owner;
	int64		usec;
} RunTime;
static RunTime run_times[RUN_TIMES];

static RunTime *
run_time(const ExecJob *job)
{
	return &run_times[hash_combine(job->queue_hash, job->owner) % RUN_TIMES];
}

static void
note_run_time(const ExecJob *job, int64 usec)
{
	RunTime    *r = run_time(job);

	if (r->queue_hash != job->queue_hash || r->owner != job->owner)
		r->usec = 0;
	r->queue_hash = job->queue_hash;
	r->owner = job->owner;
	r->usec = Max(usec, r->usec - r->usec / 4);
}

static bool
known_fast(const ExecJob *job)
{
	RunTime    *r = run_time(job);

	return OidIsValid(r->owner) && r->owner == job->owner &&
		r->queue_hash == job->queue_hash &&
		r->usec < (int64) hs_executor_group_ms * 1000;
}

/*
 * SET CONSTRAINTS changes the whole transaction's constraint modes, and a
 * subtransaction's end does not undo it: a job that runs it runs in a
 * transaction of its own, so that its modes never reach another job.  Two
 * ways find such a job: its SQL names constraints (it starts a group of
 * its own at once), or the statement runs (from a function, say) and
 * executor_utility sees it: in the first job of a group, no other job
 * joins that group; in a later one, the statement is refused, and the
 * group rolls back and runs again one job per transaction (run_job), its
 * queue and owner's next jobs kept out of groups for a while
 * (note_run_time).
 */
static bool
sets_constraints(const ExecJob *job)
{
	return job->sql != NULL && strcasestr(job->sql, "constraints") != NULL;
}

static void
executor_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
				 ProcessUtilityContext context, ParamListInfo params,
				 QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	if (constraints_rule == CONSTRAINTS_SEAL && IsA(pstmt->utilityStmt, ConstraintsSetStmt))
		group_sealed = true;
	if (constraints_rule == CONSTRAINTS_REFUSE && IsA(pstmt->utilityStmt, ConstraintsSetStmt))
	{
		constraints_set = true;
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("SET CONSTRAINTS in a transaction that other jobs share"),
				 errdetail("The executor runs this job again in a transaction of its own.")));
	}
	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context, params,
							 queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);
}

static bool
may_join(int k)
{
	return group_open && !group_solo && !group_sealed && k >= solo_until &&
		!sets_constraints(&jobs[k]) &&
		k - group_first < GROUP_MAX_JOBS &&
		jobs[k].owner == group_owner &&
		known_fast(&jobs[k]) &&
		!IsolationUsesXactSnapshot() &&
		GetCurrentTimestamp() - group_started < (int64) hs_executor_group_ms * 1000;
}

/* Open a group for job k: a transaction. */
static void
group_begin(int k)
{
	Assert(!group_open);
	hs_xact_begin(jobs[k].sql ? jobs[k].sql : "(no sql)");
	/* a server that lost the right to act commits neither the jobs nor their outcomes */
	hs_fencing_guard_xact(true);
	group_open = true;
	group_solo = hs_executor_group_ms <= 0 || k < solo_until || sets_constraints(&jobs[k]);
	group_sealed = false;
	group_first = k;
	group_nok = 0;
	group_owner = jobs[k].owner;
	group_started = GetCurrentTimestamp();
}

/* The result of a job: {"rows": n} */
static Datum
rows_result(uint64 rows)
{
	char		buf[64];

	snprintf(buf, sizeof(buf), "{\"rows\": " UINT64_FORMAT "}", rows);
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(buf));
}

/*
 * The group of jobs[first .. end - 1] rolled back: they run again, one per
 * transaction.
 */
static void
group_run_again(int first, int end, const char *why)
{
	ereport(LOG,
			(errmsg("hasched: executor %s rolled back %d jobs run together and runs them again one per transaction: %s",
					my_name, end - first, why)));
	solo_until = end;
	nstarted = first;
}

/* Record the group's successes; false when a lease was no longer ours. */
static bool
record_group(void)
{
	Datum		ids[GROUP_MAX_JOBS];
	Datum		epochs[GROUP_MAX_JOBS];
	Datum		attempts[GROUP_MAX_JOBS];
	Datum		leases[GROUP_MAX_JOBS];
	Datum		results[GROUP_MAX_JOBS];

	if (group_nok == 0)
		return true;
	for (int i = 0; i < group_nok; i++)
	{
		ExecJob    *job = &jobs[group_ok[i]];

		ids[i] = Int64GetDatum(job->lease.job_id);
		epochs[i] = Int32GetDatum(job->lease.epoch);
		attempts[i] = Int32GetDatum(job->lease.attempt);
		leases[i] = Int64GetDatum(job->lease.lease_id);
		results[i] = rows_result(group_rows[i]);
	}
	return hs_report_complete_many(group_nok, ids, epochs, attempts, leases,
								   PointerGetDatum(construct_array(results, group_nok, JSONBOID,
																   -1, false, TYPALIGN_INT)),
								   false) == (uint64) group_nok;
}

/*
 * Record the group's successes and commit it.  When a lease was no longer
 * ours, or the record or the commit fails, the group rolls back and its
 * jobs run again as solo groups.  A solo group whose commit fails is the
 * round's error (its job's attempt is recorded as failed).
 */
static void
group_commit(void)
{
	int			first = group_first;
	int			end = nstarted;
	bool		solo = group_solo;
	volatile bool all_ours = true;
	char	   *volatile why = NULL;

	if (!group_open)
		return;
	PG_TRY();
	{
		all_ours = record_group();
		if (all_ours)
			hs_xact_end(true);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		if (solo || !hs_node_may_act())
		{
			/* the round's error handling settles the batch */
			current = solo ? &jobs[first] : NULL;
			PG_RE_THROW();
		}
		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(round_mcxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		MemoryContextSwitchTo(round_mcxt);
		RESUME_INTERRUPTS();
		pgstat_report_activity(STATE_IDLE, NULL);
		why = edata->message;
	}
	PG_END_TRY();
	if (!all_ours)
	{
		hs_xact_end(false);
		why = "a lease was no longer this executor's (a cancel, say)";
	}
	group_open = false;
	group_nok = 0;
	if (why != NULL)
		group_run_again(first, end, why);
}

/*
 * Run claimed job k in the group's transaction (opened here if none is):
 * its SQL in a subtransaction, with the record of its success in a solo
 * group (rolled back with its effects when the record finds the lease no
 * longer ours), or that record left to record_group; a failure is recorded
 * at once, after the subtransaction rolled back.
 */
static void
run_job(int k)
{
	ExecJob    *job = &jobs[k];
	MemoryContext oldcxt;
	ResourceOwner oldowner;
	Oid			owner_oid;
	char	   *why = NULL;
	char	   *volatile error = NULL;
	volatile bool retry = true;
	volatile bool cancelled = false;
	volatile bool reporting = false;
	volatile TimestampTz started = 0;

	set_state(HS_EXEC_BUSY, job->lease.job_id);
	if (!group_open)
		group_begin(k);
	else
	{
		SetCurrentStatementStartTimestamp();
		pgstat_report_activity(STATE_RUNNING, job->sql ? job->sql : "(no sql)");
	}
	current = job;

	/* the owner still exists, and wrote the job or a superuser did */
	owner_oid = job->owner;
	error = hs_owner_refusal(job->owner, job->submitted_by);
	if (error != NULL)
		retry = false;
	else if (job->sql == NULL)
	{
		error = pstrdup("the payload has no \"sql\" string");
		retry = false;
	}
	else if (!hs_interval_ok("timeout", &job->timeout, &why))
	{
		/* a row from before the bound, or written around it */
		error = why;
		retry = false;
	}
	else if (hs_lease_cancelled(job->lease.lease_id))
		cancelled = true;		/* cancelled while it waited in the batch */
	else
	{
		Oid			save_userid;
		int			save_sec;
		int64		timeout_ms = hs_interval_usec(&job->timeout) / 1000;

		oldcxt = CurrentMemoryContext;
		oldowner = CurrentResourceOwner;
		GetUserIdAndSecContext(&save_userid, &save_sec);
		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(oldcxt);
		PG_TRY();
		{
			int			guc_level;
			int			rc;
			uint64		rows;
			SPIExecuteOptions options;

			/*
			 * The job runs as its owner in a security-restricted operation
			 * (no SET ROLE, no temporary tables, no holdable cursors), and
			 * every setting it changes is undone after it: nothing one job
			 * leaves in this session can act in the next job, which may
			 * belong to another role.
			 */
			guc_level = NewGUCNestLevel();
			/* the job plans as any session would */
			(void) set_config_option("enable_seqscan",
									 GetConfigOptionResetString("enable_seqscan"),
									 PGC_USERSET, PGC_S_SESSION,
									 GUC_ACTION_SAVE, true, 0, false);
			(void) set_config_option("jit", GetConfigOptionResetString("jit"),
									 PGC_USERSET, PGC_S_SESSION,
									 GUC_ACTION_SAVE, true, 0, false);
			(void) set_config_option("max_parallel_workers_per_gather",
									 GetConfigOptionResetString("max_parallel_workers_per_gather"),
									 PGC_USERSET, PGC_S_SESSION,
									 GUC_ACTION_SAVE, true, 0, false);
			SetUserIdAndSecContext(owner_oid, save_sec | SECURITY_LOCAL_USERID_CHANGE |
								   SECURITY_RESTRICTED_OPERATION);

			/* rows are counted and dropped as they come: none is kept */
			memset(&options, 0, sizeof(options));
			options.dest = CreateDestReceiver(DestNone);
			running_job = job->lease.job_id;
			running_lease = job->lease.lease_id;
			pg_memory_barrier();
			arm_timeouts(timeout_ms);
			/* a cancel that came between the check above and now */
			if (stop_asked(job->lease.lease_id, job->lease.job_id))
			{
				InterruptPending = true;
				QueryCancelPending = true;
			}
			started = GetCurrentTimestamp();
			constraints_rule = group_solo ? CONSTRAINTS_ANY :
				k == group_first ? CONSTRAINTS_SEAL : CONSTRAINTS_REFUSE;
			constraints_set = false;
			rc = SPI_execute_extended(job->sql, &options);
			constraints_rule = CONSTRAINTS_ANY;
			running_lease = 0;
			running_job = 0;
			disarm_timeouts();
			note_run_time(job, GetCurrentTimestamp() - started);
			started = 0;
			/* its SQL caught the refusal of SET CONSTRAINTS: still run again */
			if (constraints_set)
				elog(ERROR, "SET CONSTRAINTS in a transaction that other jobs share");
			/* a cancel that came after the SQL ended: the record decides */
			QueryCancelPending = false;
			if (rc == SPI_ERROR_TRANSACTION)
			{
				retry = false;
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_TRANSACTION_TERMINATION),
						 errmsg("transaction control statements are not allowed in a job's SQL (SPI_execute returned %s)",
								SPI_result_code_string(rc))));
			}
			if (rc < 0)
				elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(rc));
			rows = SPI_processed;
			SetUserIdAndSecContext(save_userid, save_sec);
			AtEOXact_GUC(false, guc_level);
			DropAllPreparedStatements();
			/* its cursors close, as they would at its commit (CLOSE ALL) */
			PortalHashTableDeleteAll();

			/*
			 * The record of its success, with its effects.  The lease no
			 * longer matches when the job was cancelled (or its lease taken
			 * away) while it ran: then its effects must not commit either.
			 */
			if (!group_solo)
			{
				/* recorded with the group's (record_group) */
				ReleaseCurrentSubTransaction();
				group_ok[group_nok] = k;
				group_rows[group_nok] = rows;
				group_nok++;
			}
			else
			{
				reporting = true;
				if (hs_report_complete(&job->lease, rows_result(rows), false))
					ReleaseCurrentSubTransaction();
				else
				{
					cancelled = true;
					RollbackAndReleaseCurrentSubTransaction();
				}
				reporting = false;
			}
			MemoryContextSwitchTo(oldcxt);
			CurrentResourceOwner = oldowner;
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			running_lease = 0;
			running_job = 0;
			constraints_rule = CONSTRAINTS_ANY;
			disarm_timeouts();
			if (started != 0)
				note_run_time(job, GetCurrentTimestamp() - started);
			started = 0;
			MemoryContextSwitchTo(oldcxt);
			edata = CopyErrorData();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(oldcxt);
			CurrentResourceOwner = oldowner;
			SetUserIdAndSecContext(save_userid, save_sec);
			DropAllPreparedStatements();
			/* a cancel interrupt may have come after the job's own error */
			QueryCancelPending = false;
			/*
			 * Stopped: by cancel(), which recorded the job's end; or by
			 * the fencing gate, and then this server records nothing.
			 */
			cancelled = false;
			if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED &&
				stop_asked(job->lease.lease_id, job->lease.job_id))
				cancelled = true;
			else if (reporting)
				error = psprintf("the executor could not finish the attempt: %s", edata->message);
			else
				error = edata->message;
		}
		PG_END_TRY();
	}

	/* a failure, recorded after the job's effects rolled back */
	if (!cancelled && error != NULL && !constraints_set)
		(void) hs_report_fail(&job->lease, (char *) error, retry);

	/* the job is done; its outcome commits with the group */
	current = NULL;
	set_state(HS_EXEC_BUSY, 0);
	/* a stop asked for this job is done with */
	{
		uint64		expected = (uint64) job->lease.job_id;

		(void) pg_atomic_compare_exchange_u64(&hs_executors[my_slot].stop_job_id,
											  &expected, 0);
	}
	reset_session();

	/* SET CONSTRAINTS in a shared group: the group runs again, one job per transaction */
	if (constraints_set)
	{
		constraints_set = false;
		/* keeps the jobs of its queue and owner out of groups for a while */
		note_run_time(job, (int64) hs_executor_group_ms * 1000 * 100);
		hs_xact_end(false);
		group_open = false;
		group_nok = 0;
		group_run_again(group_first, k + 1,
						"a job ran SET CONSTRAINTS, whose modes would reach the other jobs of the transaction");
	}
}

/* ------------------------------------------------------------------------
 * The round
 * ------------------------------------------------------------------------ */

/* Leave when idle too long, unless that would leave fewer than the minimum. */
static bool
may_retire(void)
{
	int			live = 0;
	bool		retire;

	SpinLockAcquire(&hs_shared->mutex);
	for (int i = 0; i < hs_max_executors; i++)
		if (hs_executors[i].state != HS_EXEC_FREE)
			live++;
	retire = live > hs_min_executors;
	if (retire)
		hs_executors[my_slot].state = HS_EXEC_FREE;
	SpinLockRelease(&hs_shared->mutex);
	return retire;
}

/*
 * Claim a batch and run its jobs one by one, in groups (see may_join); how
 * many were claimed.
 */
static int
run_batch(void)
{
	int			n;

	claim_batch();
	n = nclaimed;
	for (;;)
	{
		int			k = nstarted;
		bool		restamp;
		bool		give_back;

		if (k >= nclaimed)
		{
			if (!group_open)
				break;
			group_commit();		/* may send nstarted back: see there */
			continue;
		}
		/* asked to exit: what ran so far commits first */
		if (ProcDiePending && group_open)
		{
			group_commit();
			continue;
		}
		CHECK_FOR_INTERRUPTS();
		start_work(k, &restamp, &give_back);
		if (group_open && (restamp || give_back || !may_join(k)))
		{
			group_commit();
			continue;
		}
		if (!before_start(k, restamp, give_back))
		{
			nstarted++;			/* cancelled or requeued meanwhile */
			continue;
		}
		nstarted++;
		run_job(k);
		if (group_solo)
			group_commit();
	}
	return n;
}

/*
 * One round: claim a batch of due SQL jobs and run them.  An error outside
 * a job's own SQL (recording its outcome, a claim) is handled here: the
 * batch is settled at once and the round ends; a queue whose claim failed
 * is left alone for a while.  Returns 0 (look again at once) after a
 * batch, the idle wait when there was nothing, or -1 to exit (on a
 * standby, or retiring when idle).
 */
static long
executor_round(void)
{
	MemoryContext round_cxt = CurrentMemoryContext;
	volatile int n = 0;
	volatile long delay = 0;

	if (RecoveryInProgress())
		return -1;
	/* fenced (src/core/fencing.c): claim nothing; the scheduler wakes us */
	if (!hs_node_may_act())
		return 1000;

	MemoryContextReset(batch_cxt);
	round_mcxt = round_cxt;
	set_state(HS_EXEC_BUSY, 0);
	PG_TRY();
	{
		n = run_batch();
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		const char *bad_queue = claiming_queue;
		bool		in_batch = current != NULL || group_open || nstarted < nclaimed;

		HOLD_INTERRUPTS();
		running_lease = 0;
		running_job = 0;
		disable_all_timeouts(false);
		QueryCancelPending = false;
		EmitErrorReport();
		MemoryContextSwitchTo(round_cxt);
		edata = CopyErrorData();
		AbortCurrentTransaction();
		FlushErrorState();
		MemoryContextSwitchTo(round_cxt);
		RESUME_INTERRUPTS();
		claiming_queue = NULL;
		pgstat_report_activity(STATE_IDLE, NULL);
		reset_session();
		settle_batch(psprintf("the executor could not finish the attempt: %s", edata->message));
		if (bad_queue != NULL && note_bad_queue(bad_queue))
			report_bad_queue(bad_queue, edata->message);
		/* nothing to blame the error on: pause before trying again */
		if (!in_batch && bad_queue == NULL)
			delay = 1000;
		n = 1;
	}
	PG_END_TRY();
	set_state(HS_EXEC_IDLE, 0);

	if (n > 0)
	{
		idle_since = GetCurrentTimestamp();
		return delay;
	}
	if (GetCurrentTimestamp() - idle_since >= (int64) hs_executor_idle_timeout * 1000 &&
		may_retire())
		return -1;
	return 1000;
}

/* After an error that escaped a round: settle what is left, show idle. */
static void
executor_after_error(void)
{
	running_lease = 0;
	running_job = 0;
	settle_batch("the executor could not finish the attempt (see the server log)");
	set_state(HS_EXEC_IDLE, 0);
}

void
hasched_executor_main(Datum main_arg)
{
	static const HsWorkerLoop loop = {
		.name = "executor",
		.round = executor_round,
		.after_error = executor_after_error,
		.error_pause_ms = 1000,
	};

	my_slot = DatumGetInt32(main_arg);
	hs_worker_signals(false);
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = executor_utility;
	pqsignal(SIGINT, executor_sigint);

	SpinLockAcquire(&hs_shared->mutex);
	hs_executors[my_slot].pid = MyProcPid;
	hs_executors[my_slot].latch = MyLatch;
	hs_executors[my_slot].state = HS_EXEC_IDLE;
	hs_executors[my_slot].job_id = 0;
	hs_executors[my_slot].since = GetCurrentTimestamp();
	SpinLockRelease(&hs_shared->mutex);
	on_shmem_exit(executor_detach, (Datum) 0);

	my_name = MemoryContextStrdup(TopMemoryContext,
								  psprintf("executor/%d/%d", my_slot, MyProcPid));
	hs_worker_connect(my_name);
	/* registered after the connection: it runs before the connection ends */
	before_shmem_exit(executor_exit, (Datum) 0);
	watchdog_timeout = RegisterTimeout(USER_TIMEOUT, watchdog);
	batch_cxt = AllocSetContextCreate(TopMemoryContext, "hasched executor batch",
									  ALLOCSET_DEFAULT_SIZES);
	idle_since = GetCurrentTimestamp();
	hs_worker_run(&loop);
}
