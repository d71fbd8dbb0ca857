/*-------------------------------------------------------------------------
 *
 * executor.c
 *		Executors: dynamic background workers that run the jobs of sql
 *		queues inside the database, as the job's owner, with the job's
 *		timeout.
 *
 * An executor claims a batch of due SQL jobs (through the same claim path
 * as pull workers, so priorities, concurrency and cursors apply) and
 * commits the claim, so that the jobs show as running and cancel() can find
 * them.  Then each job runs in its own transaction: its SQL in a
 * subtransaction, as the owner role, with statement_timeout set to the
 * job's timeout; then the outcome is recorded (complete, or a failed
 * attempt retried per the job's policy) in the same transaction.  So the
 * database effects of a job and the record of its success commit together.
 *
 * A job's SQL runs with the owner's rights and no more: the user id is
 * switched as for a security-restricted operation (like VACUUM running an
 * index function): no SET ROLE or SET SESSION AUTHORIZATION, no temporary
 * objects, no holdable cursors.  Settings it changes are undone and
 * statements it prepared are dropped after it, so that nothing a job leaves
 * in the executor's session acts in a later job of another role.  A job
 * whose owner role was dropped, or that was written for its owner by a
 * role that is not a superuser, is not run: it goes dead with that reason
 * (see hs_owner_refusal in src/core/roles.c).
 *
 * cancel() of a running SQL job marks it cancelled, then interrupts the
 * executor (SIGINT) with the job id in its slot: the job's subtransaction
 * rolls back and nothing more is recorded.  An executor that dies mid-job
 * leaves the job running under its name; the scheduler sees the executor
 * gone and runs the job again.
 *
 * IDENTIFICATION
 *		src/workers/executor.c
 *
 *-------------------------------------------------------------------------
 */#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "commands/prepare.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/spin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "workers/worker.h"

#define CLAIM_BATCH		32

typedef struct ExecJob
{
	HsLease		lease;
	char	   *sql;
	Oid			owner;			/* runs with this role's rights */
	Oid			submitted_by;	/* if hs_owner_refusal() allows it */
	int64		timeout_ms;
} ExecJob;

static int	my_slot = -1;
static char *my_name = NULL;

static void
executor_detach(int code, Datum arg)
{
	SpinLockAcquire(&hs_shared->mutex);
	hs_executors[my_slot].state = HS_EXEC_FREE;
	hs_executors[my_slot].pid = 0;
	hs_executors[my_slot].latch = NULL;
	hs_executors[my_slot].job_id = 0;
	hs_executors[my_slot].cancel_job_id = 0;
	SpinLockRelease(&hs_shared->mutex);
}

static void
set_state(HsExecState state, int64 job_id)
{
	SpinLockAcquire(&hs_shared->mutex);
	hs_executors[my_slot].state = state;
	hs_executors[my_slot].job_id = job_id;
	hs_executors[my_slot].since = GetCurrentTimestamp();
	if (job_id == 0)
		hs_executors[my_slot].cancel_job_id = 0;
	SpinLockRelease(&hs_shared->mutex);
}

static bool
cancel_requested(int64 job_id)
{
	bool		result;

	SpinLockAcquire(&hs_shared->mutex);
	result = hs_executors[my_slot].cancel_job_id == job_id;
	SpinLockRelease(&hs_shared->mutex);
	return result;
}

/* Claim up to CLAIM_BATCH due SQL jobs, copied into cxt; commits. */
static int
claim_batch(ExecJob *jobs, MemoryContext cxt)
{
	int			n = 0;
	uint64		nqueues;
	char	  **queues;

	hs_xact_begin("hasched executor: claiming");
	hs_fencing_guard_xact(true);

	if (SPI_execute("SELECT name FROM hasched.queue WHERE transport = 'sql' ORDER BY name",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "hasched: listing sql queues failed");
	nqueues = SPI_processed;
	queues = palloc(sizeof(char *) * (nqueues + 1));
	for (uint64 i = 0; i < nqueues; i++)
		queues[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

	for (uint64 q = 0; q < nqueues && n < CLAIM_BATCH; q++)
	{
		uint64		got = hs_claim_jobs(queues[q], my_name, CLAIM_BATCH - n, NULL, "sql", true);

		for (uint64 i = 0; i < got; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			ExecJob    *job = &jobs[n++];
			MemoryContext old;
			bool		isnull;
			char	   *sql;

			sql = hs_payload_sql(SPI_getbinval(tup, desc, 5, &isnull));
			old = MemoryContextSwitchTo(cxt);
			job->lease.job_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
			job->lease.epoch = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
			job->lease.attempt = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
			job->lease.lease_id = DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull));
			job->lease.token = NULL;
			job->sql = sql ? pstrdup(sql) : NULL;
			job->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 11, &isnull));
			job->submitted_by = DatumGetObjectId(SPI_getbinval(tup, desc, 12, &isnull));
			job->timeout_ms = hs_interval_usec(DatumGetIntervalP(SPI_getbinval(tup, desc, 8, &isnull))) / 1000;
			MemoryContextSwitchTo(old);
		}
	}

	hs_xact_end(true);
	return n;
}

/* Run one claimed job and record its outcome, in one transaction. */
static void
run_job(ExecJob *job)
{
	MemoryContext oldcxt;
	ResourceOwner oldowner;
	Oid			owner_oid;
	char	   *volatile error = NULL;
	volatile bool retry = true;
	volatile bool cancelled = false;
	volatile uint64 rows = 0;

	set_state(HS_EXEC_BUSY, job->lease.job_id);
	hs_xact_begin(job->sql ? job->sql : "(no sql)");
	/* a server that lost the right to act commits neither the job nor its outcome */
	hs_fencing_guard_xact(true);

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
	else
	{
		Oid			save_userid;
		int			save_sec;

		oldcxt = CurrentMemoryContext;
		oldowner = CurrentResourceOwner;
		GetUserIdAndSecContext(&save_userid, &save_sec);
		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(oldcxt);
		PG_TRY();
		{
			int			guc_level;

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
			SetUserIdAndSecContext(owner_oid, save_sec | SECURITY_LOCAL_USERID_CHANGE |
								   SECURITY_RESTRICTED_OPERATION);
			if (job->timeout_ms > 0)
				enable_timeout_after(STATEMENT_TIMEOUT,
									 (int) Min(job->timeout_ms, (int64) PG_INT32_MAX));
			if (SPI_execute(job->sql, false, 0) < 0)
				elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(SPI_result));
			rows = SPI_processed;
			disable_timeout(STATEMENT_TIMEOUT, false);
			SetUserIdAndSecContext(save_userid, save_sec);
			AtEOXact_GUC(false, guc_level);
			DropAllPreparedStatements();
			ReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(oldcxt);
			CurrentResourceOwner = oldowner;
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			disable_timeout(STATEMENT_TIMEOUT, false);
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
			if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED &&
				cancel_requested(job->lease.job_id))
				cancelled = true;
			else
				error = edata->message;
		}
		PG_END_TRY();
	}

	if (!cancelled)
	{
		if (error == NULL)
		{
			char	   *result = psprintf("{\"rows\": " UINT64_FORMAT "}", (uint64) rows);

			/*
			 * The lease no longer matches when the job was cancelled (or
			 * its lease taken away) while it ran: then its effects must not
			 * commit either.
			 */
			if (!hs_report_complete(&job->lease,
									DirectFunctionCall1(jsonb_in, CStringGetDatum(result)),
									false))
				cancelled = true;
		}
		else
			(void) hs_report_fail(&job->lease, (char *) error, retry);
	}

	hs_xact_end(!cancelled);
	set_state(HS_EXEC_IDLE, 0);
}

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

static MemoryContext batch_cxt = NULL;
static TimestampTz idle_since = 0;

/*
 * One round: claim a batch of due SQL jobs and run them one by one.
 * Returns 0 (look again at once) after a batch, the idle wait when there
 * was nothing, or -1 to exit (on a standby, or retiring when idle).
 */
static long
executor_round(void)
{
	ExecJob		jobs[CLAIM_BATCH];
	int			n;

	if (RecoveryInProgress())
		return -1;
	/* fenced (src/core/fencing.c): claim nothing; the scheduler wakes us */
	if (!hs_node_may_act())
		return 1000;

	MemoryContextReset(batch_cxt);
	set_state(HS_EXEC_BUSY, 0);
	n = claim_batch(jobs, batch_cxt);
	for (int i = 0; i < n; i++)
		run_job(&jobs[i]);
	set_state(HS_EXEC_IDLE, 0);

	if (n > 0)
	{
		idle_since = GetCurrentTimestamp();
		return 0;
	}
	if (GetCurrentTimestamp() - idle_since >= (int64) hs_executor_idle_timeout * 1000 &&
		may_retire())
		return -1;
	return 1000;
}

/* After an error in a round: the slot shows idle again. */
static void
executor_after_error(void)
{
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
	hs_worker_signals(true);

	SpinLockAcquire(&hs_shared->mutex);
	hs_executors[my_slot].pid = MyProcPid;
	hs_executors[my_slot].latch = MyLatch;
	hs_executors[my_slot].state = HS_EXEC_IDLE;
	hs_executors[my_slot].job_id = 0;
	hs_executors[my_slot].cancel_job_id = 0;
	hs_executors[my_slot].since = GetCurrentTimestamp();
	SpinLockRelease(&hs_shared->mutex);
	on_shmem_exit(executor_detach, (Datum) 0);

	my_name = MemoryContextStrdup(TopMemoryContext,
								  psprintf("executor/%d/%d", my_slot, MyProcPid));
	hs_worker_connect(my_name);
	batch_cxt = AllocSetContextCreate(TopMemoryContext, "hasched executor batch",
									  ALLOCSET_DEFAULT_SIZES);
	idle_since = GetCurrentTimestamp();
	hs_worker_run(&loop);
}
