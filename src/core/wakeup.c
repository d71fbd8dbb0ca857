/*-------------------------------------------------------------------------
 *
 * wakeup.c
 *		What a transaction asks of the background workers when it ends, and
 *		the transaction callbacks that deliver it: wake an idle executor or
 *		the scheduler after a commit that made jobs claimable, interrupt the
 *		executor of a job that a committed cancel() stopped, and end the
 *		claim path's per-transaction state (claim.c).
 *
 * A backend never calls into a worker's code: it sets the worker's latch,
 * or signals the process named in its shared-memory slot.  Nothing is
 * delivered before the commit (the job must be visible to the worker, and a
 * cancel that rolls back has not happened) nor at PREPARE TRANSACTION (the
 * transaction is not committed yet; COMMIT PREPARED may run in another
 * backend, so those jobs are found by the next claim or scheduler round).
 *
 * IDENTIFICATION
 *		src/core/wakeup.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "storage/latch.h"
#include "storage/spin.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "core/hasched.h"

/* backend-local: what this transaction asks to be woken at commit */
static bool wake_scheduler_at_commit = false;
static TimestampTz wake_for_run_at = 0;

/* backend-local: jobs whose executor is to be interrupted at commit */
static List *cancel_at_commit = NIL;

/*
 * Called by the state trigger when a job becomes claimable with this
 * run_at: remember to wake the workers when the transaction commits.
 */
void
hs_note_claimable(TimestampTz run_at)
{
	if (wake_for_run_at == 0 || run_at < wake_for_run_at)
		wake_for_run_at = run_at;
}

void
hs_wake_scheduler_at_commit(void)
{
	wake_scheduler_at_commit = true;
}

/*
 * After commit: wake an idle executor, and the scheduler if needed.  Only
 * SQL jobs need either (external workers claim pull jobs themselves), so
 * nothing is woken while no sql queue exists.  A job due now wakes one idle
 * executor; with none idle, the busy ones get their latch set (they look
 * again before sleeping) and the scheduler is woken to start another if the
 * pool has room.  A job due later wakes the scheduler only if it is due
 * before the scheduler's next planned wake-up.
 */
static void
wake_after_commit(bool committed)
{
	Latch	   *wake[64 + 1];
	int			nwake = 0;
	bool		idle_found = false;
	int			live = 0;
	TimestampTz now;

	if (!committed || hs_shared == NULL ||
		(wake_for_run_at == 0 && !wake_scheduler_at_commit))
	{
		wake_for_run_at = 0;
		wake_scheduler_at_commit = false;
		return;
	}
	now = GetCurrentTimestamp();

	SpinLockAcquire(&hs_shared->mutex);
	if (wake_for_run_at != 0 && hs_shared->sql_queues > 0)
	{
		if (wake_for_run_at <= now)
		{
			for (int i = 0; i < hs_max_executors && !idle_found; i++)
				if (hs_executors[i].state == HS_EXEC_IDLE && hs_executors[i].latch)
				{
					wake[nwake++] = hs_executors[i].latch;
					hs_executors[i].state = HS_EXEC_WOKEN;
					idle_found = true;
				}
			if (!idle_found)
			{
				for (int i = 0; i < hs_max_executors && nwake < 64; i++)
				{
					if (hs_executors[i].state == HS_EXEC_FREE)
						continue;
					live++;
					if (hs_executors[i].latch)
						wake[nwake++] = hs_executors[i].latch;
				}
				if (live < hs_max_executors && hs_shared->scheduler_latch)
					wake[nwake++] = hs_shared->scheduler_latch;
			}
		}
		else if (wake_for_run_at < hs_shared->scheduler_next_wake &&
				 hs_shared->scheduler_latch)
			wake[nwake++] = hs_shared->scheduler_latch;
	}
	if (wake_scheduler_at_commit && hs_shared->scheduler_latch && nwake < 65)
		wake[nwake++] = hs_shared->scheduler_latch;
	SpinLockRelease(&hs_shared->mutex);

	for (int i = 0; i < nwake; i++)
		SetLatch(wake[i]);
	wake_for_run_at = 0;
	wake_scheduler_at_commit = false;
}

/*
 * cancel() of a running job: tell the executor running it to stop.  Called
 * by the cancelling backend; the job's state is already cancelled in its
 * transaction, so whatever the executor then tries to record is refused.
 */
static void
executor_cancel(int64 job_id)
{
	pid_t		pid = 0;

	SpinLockAcquire(&hs_shared->mutex);
	for (int i = 0; i < hs_max_executors; i++)
		if (hs_executors[i].state == HS_EXEC_BUSY && hs_executors[i].job_id == job_id)
		{
			hs_executors[i].cancel_job_id = job_id;
			pid = hs_executors[i].pid;
			break;
		}
	SpinLockRelease(&hs_shared->mutex);
	if (pid != 0)
		(void) kill(pid, SIGINT);
}

/*
 * cancel() asks for the interrupt at commit: a cancel that rolls back has
 * not happened, and its job must go on undisturbed.
 */
void
hs_executor_cancel_at_commit(int64 job_id)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	int64	   *id = palloc(sizeof(int64));

	*id = job_id;
	cancel_at_commit = lappend(cancel_at_commit, id);
	MemoryContextSwitchTo(old);
}

static void
executor_cancels_at_end(bool committed)
{
	ListCell   *lc;

	if (cancel_at_commit == NIL)
		return;
	if (committed)
		foreach(lc, cancel_at_commit)
			executor_cancel(*(int64 *) lfirst(lc));
	list_free_deep(cancel_at_commit);
	cancel_at_commit = NIL;
}

/* ------------------------------------------------------------------------
 * The transaction callbacks: each event handled on its own
 * ------------------------------------------------------------------------ */

static void
xact_callback(XactEvent event, void *arg)
{
	/* the fencing gate: asked again before commit, released after the end */
	hs_fencing_xact_event(event);

	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			/* committed: the jobs are visible, the cancels have happened */
			wake_after_commit(true);
			executor_cancels_at_end(true);
			hs_claim_xact_end(true);
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			/* nothing happened: wake nobody, stop nothing */
			wake_after_commit(false);
			executor_cancels_at_end(false);
			hs_claim_xact_end(false);
			break;
		case XACT_EVENT_PREPARE:
			/*
			 * Not committed yet, and this backend will not see the COMMIT
			 * PREPARED: drop the requests rather than deliver them early.
			 */
			wake_after_commit(false);
			executor_cancels_at_end(false);
			hs_claim_xact_end(true);
			break;
		default:
			/* the PRE_ events: nothing to do before the outcome is known */
			break;
	}
}

static void
subxact_callback(SubXactEvent event, SubTransactionId mySubid,
				 SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
		hs_claim_subxact_abort();
}

/* Register the callbacks; called once, from _PG_init. */
void
hs_xact_callbacks_init(void)
{
	RegisterXactCallback(xact_callback, NULL);
	RegisterSubXactCallback(subxact_callback, NULL);
}
