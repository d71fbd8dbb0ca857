/*-------------------------------------------------------------------------
 *
 * wakeup.c
 *		What a transaction asks of the background workers when it ends, and
 *		the transaction callbacks that deliver it: wake an idle executor or
 *		the scheduler after a commit that made jobs claimable, interrupt the
 *		executor of a job that a committed cancel() stopped, and end the
 *		claim path's per-transaction state (claim.c); and have the pull
 *		workers that wait on a queue (hasched.listen()) notified when a
 *		commit made its jobs claimable.
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
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "common/hashfn.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "core/hasched.h"

/* backend-local: what this transaction asks to be woken at commit */
static bool wake_scheduler_at_commit = false;
static TimestampTz wake_for_run_at = 0;

/* backend-local: jobs whose executor is to be interrupted at commit */
static List *cancel_at_commit = NIL;

/* ------------------------------------------------------------------------
 * NOTIFY for pull workers
 *
 * A pull worker (hasched-worker, or any client) calls hasched.listen(queue):
 * its session LISTENs on the queue's channel and is counted as a listener
 * of that queue in shared memory until it exits.  When a transaction that
 * made jobs of a listened queue claimable commits, it marks the queue in
 * shared memory and sets the scheduler's latch; the scheduler sends one
 * NOTIFY per marked queue in a short transaction of its own
 * (hs_send_notifies), so the workers claim at once instead of at their
 * next poll.  The submitting transaction itself never NOTIFYs: a NOTIFY
 * serialises the commits of the transactions that send one (PostgreSQL
 * holds a database-wide lock from the NOTIFY's queueing to the end of the
 * commit, WAL flush included), which cut concurrent submits about 5x in a
 * measurement; the price now is one latch hop.  Only listened queues are
 * marked.  Jobs due later (run_at in the future, retries after a backoff)
 * are not notified: the workers' polling finds them.
 * ------------------------------------------------------------------------ */

typedef struct ListenEntry
{
	char		queue[HS_QUEUE_NAME_MAX];	/* hash key */
	int			listeners;		/* sessions, under listen_lock */
	pg_atomic_uint32 pending;	/* 1: a commit made jobs due; NOTIFY it */
} ListenEntry;

static HTAB *listen_hash = NULL;

/* backend-local: the queues this session listens to (TopMemoryContext) */
static List *my_listens = NIL;
static bool listen_exit_registered = false;

/* backend-local: queues this transaction made claimable, with the earliest run_at */
#define MAX_NOTIFY_QUEUES 8
static char notify_queue[MAX_NOTIFY_QUEUES][HS_QUEUE_NAME_MAX];
static TimestampTz notify_run_at[MAX_NOTIFY_QUEUES];
static int	n_notify_queues = 0;
static TimestampTz notify_all_run_at = 0;	/* >0: too many, or set_mode() */

Size
hs_listen_shmem_size(void)
{
	return hash_estimate_size(hs_max_queues, sizeof(ListenEntry));
}

void
hs_listen_shmem_init(void)
{
	listen_hash = hs_shmem_hash("hasched pull listeners", hs_max_queues,
								HS_QUEUE_NAME_MAX, sizeof(ListenEntry));
}

/*
 * The NOTIFY channel of a queue: "hasched." and the queue's name, or, for a
 * name too long for a channel, its first 46 bytes and a hash of it.
 */
static void
listen_channel(const char *queue, char *buf)
{
	size_t		len = strlen(queue);

	if (len <= NAMEDATALEN - 1 - 8)
		snprintf(buf, NAMEDATALEN, "hasched.%s", queue);
	else
		snprintf(buf, NAMEDATALEN, "hasched.%.46s.%08x", queue,
				 (unsigned) hash_bytes((const unsigned char *) queue, (int) len));
}

/* Session exit: this session no longer listens. */
static void
listen_at_exit(int code, Datum arg)
{
	ListCell   *lc;

	if (my_listens == NIL || hs_shared == NULL)
		return;
	LWLockAcquire(hs_shared->listen_lock, LW_EXCLUSIVE);
	foreach(lc, my_listens)
	{
		ListenEntry *e = hash_search(listen_hash, lfirst(lc), HASH_FIND, NULL);

		if (e != NULL && --e->listeners <= 0)
			hash_search(listen_hash, lfirst(lc), HASH_REMOVE, NULL);
		pg_atomic_fetch_sub_u32(&hs_shared->pull_listeners, 1);
	}
	LWLockRelease(hs_shared->listen_lock);
	my_listens = NIL;
}

/*
 * hasched.listen(queue): check that queue is a pull queue, LISTEN on its
 * channel (from this transaction's commit on) and count this session as a
 * listener.  Returns the channel.  Inside SPI, as the owner.
 */
char *
hs_listen_queue(const char *queue)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[1];
	char		key[HS_QUEUE_NAME_MAX];
	char	   *channel = palloc(NAMEDATALEN);
	char	   *transport;
	ListCell   *lc;
	ListenEntry *e;
	bool		found;

	hs_plan(&plan, "SELECT transport FROM hasched.queue WHERE name = $1",
			1, TEXTOID);
	values[0] = CStringGetTextDatum(queue);
	if (SPI_execute_plan(plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "hasched: reading queue \"%s\" failed", queue);
	if (SPI_processed == 0)
		hs_unknown_queue(queue);
	transport = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (strcmp(transport, "pull") != 0)
		ereport(ERROR,
				(errcode(HS_ERRCODE_WRONG_TRANSPORT),
				 errmsg("queue \"%s\" is not a pull queue", queue),
				 errdetail("Its transport is %s.", transport),
				 errhint("Listen on a queue whose transport is pull; jobs of %s queues are handed out by hasched itself.",
						 transport)));

	listen_channel(queue, channel);
	Async_Listen(channel);

	memset(key, 0, sizeof(key));
	strlcpy(key, queue, sizeof(key));
	foreach(lc, my_listens)
		if (strcmp((char *) lfirst(lc), key) == 0)
			return channel;		/* counted already */

	if (!listen_exit_registered)
	{
		before_shmem_exit(listen_at_exit, (Datum) 0);
		listen_exit_registered = true;
	}
	LWLockAcquire(hs_shared->listen_lock, LW_EXCLUSIVE);
	e = hash_search(listen_hash, key, HASH_ENTER_NULL, &found);
	if (e == NULL)
	{
		LWLockRelease(hs_shared->listen_lock);
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many listened queues"),
				 errdetail("Sessions listen to %d queues already, the most hasched.max_queues allows.",
						   hs_max_queues),
				 errhint("Raise hasched.max_queues (needs a restart), or poll with claim() without listening.")));
	}
	if (!found)
	{
		e->listeners = 0;
		pg_atomic_init_u32(&e->pending, 0);
	}
	e->listeners++;
	pg_atomic_fetch_add_u32(&hs_shared->pull_listeners, 1);
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		my_listens = lappend(my_listens, pstrdup(key));
		MemoryContextSwitchTo(old);
	}
	LWLockRelease(hs_shared->listen_lock);
	return channel;
}

/*
 * Called by the state trigger when a job of queue (a text Datum; (Datum) 0:
 * any queue, from set_mode()) becomes claimable with this run_at: remember
 * to wake the workers, and to notify the queue's listeners, when the
 * transaction commits.
 */
void
hs_note_claimable(Datum queue, TimestampTz run_at)
{
	if (wake_for_run_at == 0 || run_at < wake_for_run_at)
		wake_for_run_at = run_at;

	/* the notes for NOTIFY: only while some session listens at all */
	if (hs_shared == NULL || pg_atomic_read_u32(&hs_shared->pull_listeners) == 0)
		return;
	if (queue != (Datum) 0 && n_notify_queues <= MAX_NOTIFY_QUEUES)
	{
		text	   *t = DatumGetTextPP(queue);
		int			len = VARSIZE_ANY_EXHDR(t);

		if (len < HS_QUEUE_NAME_MAX)
		{
			for (int i = 0; i < n_notify_queues; i++)
				if (strncmp(notify_queue[i], VARDATA_ANY(t), len) == 0 &&
					notify_queue[i][len] == '\0')
				{
					if (run_at < notify_run_at[i])
						notify_run_at[i] = run_at;
					return;
				}
			if (n_notify_queues < MAX_NOTIFY_QUEUES)
			{
				memcpy(notify_queue[n_notify_queues], VARDATA_ANY(t), len);
				notify_queue[n_notify_queues][len] = '\0';
				notify_run_at[n_notify_queues++] = run_at;
				return;
			}
		}
	}
	/* too many queues, an odd name, or any queue: notify every listened one */
	if (notify_all_run_at == 0 || run_at < notify_all_run_at)
		notify_all_run_at = run_at;
}

/* Mark one queue for a NOTIFY if anyone listens to it; listen_lock held. */
static bool
mark_if_listened(const char *queue)
{
	char		key[HS_QUEUE_NAME_MAX];
	ListenEntry *e;

	memset(key, 0, sizeof(key));
	strlcpy(key, queue, sizeof(key));
	e = hash_search(listen_hash, key, HASH_FIND, NULL);
	if (e == NULL || e->listeners <= 0)
		return false;
	pg_atomic_write_u32(&e->pending, 1);
	return true;
}

/*
 * After commit: mark the listened queues whose jobs this transaction made
 * due, and wake the scheduler to send their NOTIFYs.
 */
static void
mark_notifies_after_commit(void)
{
	TimestampTz now;
	bool		marked = false;
	Latch	   *latch;

	if (n_notify_queues == 0 && notify_all_run_at == 0)
		return;
	now = GetCurrentTimestamp();
	LWLockAcquire(hs_shared->listen_lock, LW_SHARED);
	if (notify_all_run_at != 0 && notify_all_run_at <= now)
	{
		HASH_SEQ_STATUS status;
		ListenEntry *e;

		hash_seq_init(&status, listen_hash);
		while ((e = hash_seq_search(&status)) != NULL)
			if (e->listeners > 0)
			{
				pg_atomic_write_u32(&e->pending, 1);
				marked = true;
			}
	}
	else
	{
		for (int i = 0; i < n_notify_queues; i++)
			if (notify_run_at[i] <= now)
				marked |= mark_if_listened(notify_queue[i]);
	}
	LWLockRelease(hs_shared->listen_lock);
	if (!marked)
		return;
	pg_atomic_write_u32(&hs_shared->notify_pending, 1);
	SpinLockAcquire(&hs_shared->mutex);
	latch = hs_shared->scheduler_latch;
	SpinLockRelease(&hs_shared->mutex);
	if (latch)
		SetLatch(latch);
}

/* Has a commit marked queues for a NOTIFY (the scheduler asks)? */
bool
hs_notify_pending(void)
{
	return pg_atomic_read_u32(&hs_shared->notify_pending) != 0;
}

/*
 * Queue a NOTIFY for every marked queue, in the caller's transaction (the
 * scheduler's): they are sent when it commits.
 */
void
hs_send_notifies(void)
{
	HASH_SEQ_STATUS status;
	ListenEntry *e;
	char		channel[NAMEDATALEN];

	if (pg_atomic_exchange_u32(&hs_shared->notify_pending, 0) == 0)
		return;
	LWLockAcquire(hs_shared->listen_lock, LW_SHARED);
	hash_seq_init(&status, listen_hash);
	while ((e = hash_seq_search(&status)) != NULL)
		if (pg_atomic_exchange_u32(&e->pending, 0) != 0 && e->listeners > 0)
		{
			listen_channel(e->queue, channel);
			Async_Notify(channel, NULL);
		}
	LWLockRelease(hs_shared->listen_lock);
}

static void
notify_notes_clear(void)
{
	n_notify_queues = 0;
	notify_all_run_at = 0;
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

	/* a wake-up of the scheduler from here asks for a whole round */
	for (int i = 0; i < nwake; i++)
		if (wake[i] == hs_shared->scheduler_latch)
			pg_atomic_write_u32(&hs_shared->round_requested, 1);

	for (int i = 0; i < nwake; i++)
		SetLatch(wake[i]);
	/* jobs of amqp queues: the dispatcher publishes what became due */
	if (wake_for_run_at != 0 && wake_for_run_at <= now)
		hs_dispatcher_wake();
	wake_for_run_at = 0;
	wake_scheduler_at_commit = false;
}

/*
 * cancel() of a running job: note its lease in the ring of cancelled leases
 * (hs_shared->cancelled), then tell the executor running it, if any, to
 * look (SIGINT).  Called by the cancelling backend after its commit; the
 * job's state is already cancelled, so whatever the executor then tries to
 * record is refused.  The ring, not the signal, decides: an executor stops
 * a job's SQL only while that job's lease is in the ring, so a signal that
 * arrives after its job ended stops nothing, and a job cancelled just
 * before its executor started it never starts.
 */
static void
executor_cancel(int64 job_id, int64 lease_id)
{
	pid_t		pid = 0;

	if (lease_id != 0)
	{
		uint32		i = pg_atomic_fetch_add_u32(&hs_shared->cancel_next, 1);

		pg_atomic_write_u64(&hs_shared->cancelled[i % HS_CANCEL_RING], (uint64) lease_id);
		pg_memory_barrier();
	}
	SpinLockAcquire(&hs_shared->mutex);
	for (int i = 0; i < hs_max_executors; i++)
		if (hs_executors[i].state == HS_EXEC_BUSY && hs_executors[i].job_id == job_id)
		{
			pid = hs_executors[i].pid;
			break;
		}
	SpinLockRelease(&hs_shared->mutex);
	if (pid != 0)
		(void) kill(pid, SIGINT);
}

/*
 * Did a committed cancel() stop the attempt with this lease?  Plain reads
 * of shared atomics: safe in a signal handler.
 */
bool
hs_lease_cancelled(int64 lease_id)
{
	if (lease_id == 0 || hs_shared == NULL)
		return false;
	for (int i = 0; i < HS_CANCEL_RING; i++)
		if ((int64) pg_atomic_read_u64(&hs_shared->cancelled[i]) == lease_id)
			return true;
	return false;
}

/*
 * cancel() asks for the interrupt at commit: a cancel that rolls back has
 * not happened, and its job must go on undisturbed.
 */
typedef struct PendingCancel
{
	int64		job_id;
	int64		lease_id;
} PendingCancel;

void
hs_executor_cancel_at_commit(int64 job_id, int64 lease_id)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	PendingCancel *c = palloc(sizeof(PendingCancel));

	c->job_id = job_id;
	c->lease_id = lease_id;
	cancel_at_commit = lappend(cancel_at_commit, c);
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
		{
			PendingCancel *c = lfirst(lc);

			executor_cancel(c->job_id, c->lease_id);
		}
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
			mark_notifies_after_commit();
			notify_notes_clear();
			wake_after_commit(true);
			executor_cancels_at_end(true);
			hs_claim_xact_end(true);
			hs_quota_xact_end(true);
			hs_metrics_xact_end(true);
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			/* nothing happened: wake nobody, stop nothing, notify nobody */
			notify_notes_clear();
			wake_after_commit(false);
			executor_cancels_at_end(false);
			hs_claim_xact_end(false);
			hs_quota_xact_end(false);
			hs_metrics_xact_end(false);
			break;
		case XACT_EVENT_PRE_PREPARE:
			/* claim.c keeps the transaction's id for the prepared slot */
			hs_claim_xact_pre_prepare();
			break;
		case XACT_EVENT_PREPARE:
			/*
			 * Not committed yet, and this backend will not see the COMMIT
			 * PREPARED: drop the requests rather than deliver them early;
			 * the workers' polling finds those jobs.  The claim state
			 * (writer registration, cursor resets, reservations) moves to
			 * a prepared slot that claims act on once it ends.
			 */
			notify_notes_clear();
			wake_after_commit(false);
			executor_cancels_at_end(false);
			hs_claim_xact_prepare();
			/* its jobs stay counted (even if it is rolled back later) */
			hs_quota_xact_end(true);
			hs_metrics_xact_end(true);
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
	{
		hs_claim_subxact_abort(mySubid);
		hs_quota_subxact_end(false);
		hs_metrics_subxact_end(false);
	}
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		hs_quota_subxact_end(true);
		hs_metrics_subxact_end(true);
	}
}

/* Register the callbacks; called once, from _PG_init. */
void
hs_xact_callbacks_init(void)
{
	RegisterXactCallback(xact_callback, NULL);
	RegisterSubXactCallback(subxact_callback, NULL);
}
