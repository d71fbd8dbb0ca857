/*-------------------------------------------------------------------------
 *
 * claim.c
 *		The claim path (shared by the pull API and the executors): claim
 *		cursors that keep claims fast when dead rows pile up, the rescan
 *		that bounds how long a due job can be passed over, the writer
 *		registry, and per-queue concurrency limits.
 *
 * Why cursors.  A claim takes the first waiting jobs of a queue from the
 * partial index job_waiting_idx (queue, priority, run_at, id).  Each claim
 * leaves a dead index entry behind.  VACUUM removes them, but not while any
 * session holds an old snapshot: then every claim that starts at the head
 * of the index walks all of them, and a queue slows down by the minute.
 * So each (queue, priority) has a cursor in shared memory, a key
 * (run_at, id); claims scan after it.
 *
 * THE GUARANTEE.  A due job that is free to claim (committed, waiting,
 * run_at passed, not locked) is handed out by any claim on its queue that
 * begins more than R = hasched.claim_rewind_interval after it became free
 * and has room for it (lower-priority jobs, or fewer jobs than asked).
 * Said the other way: no due job stays unclaimed longer than R while
 * claims on its queue return fewer jobs than asked.  The argument:
 *
 * 1. A claim is one statement with one snapshot S, taken after the claim
 *    holds its lock on hasched.job (lock waits, e.g. behind LOCK TABLE,
 *    come first), after it read the monotonic clock m0 and the wall clock
 *    t0, and after it read the writer registry.  S is always a fresh
 *    snapshot, whatever the isolation level: a REPEATABLE READ or
 *    SERIALIZABLE claim sees and counts what READ COMMITTED would.
 *
 * 2. The statement scans, in order, ten "cursor" branches (priority p,
 *    keys after cursor[p], run_at <= t0) and then ten "head" branches
 *    (priority p, keys up to cursor[p]), each FOR UPDATE SKIP LOCKED, all
 *    under one LIMIT n.  The head branch of p is given an empty range
 *    unless p is stale: no claim has scanned p from its head to its end
 *    since m0 - R.  Postgres' Append runs branches in order and stops at
 *    the LIMIT, so a head branch runs only when every cursor branch ran to
 *    its end and rows are still wanted: a claim that comes back short
 *    rescans the stale priorities, and a claim that fills its batch never
 *    pays for a rescan.  The statement returns the rows it locked (branch,
 *    key) besides the rows it leased; a branch ran to its end exactly when
 *    fewer rows were locked than n or a later branch locked one.
 *
 * 3. full_at[p] is set to m0 only by a claim that scanned p from the head
 *    to the end (cursor at the head, or its cursor and head branches both
 *    ran to their end), and only if the cursor was not reset meanwhile.
 *    Such a scan locked every free due job of p visible in S, so every job
 *    free before m0 (as S was taken after m0) is now leased, or locked by
 *    a claim that leases it.  (A row whose newest version committed after
 *    S is locked in that version, which S cannot see: the claim leases it
 *    in a second statement on a fresh snapshot, so a claim never holds a
 *    job it does not hand out.)
 *
 * 4. Take a job J of priority p free since time A, and a claim C that
 *    begins at m0 > A + R and comes back short.  If full_at[p] >= m0 - R
 *    > A, a complete scan of p that began after A exists: by 3 it took J.
 *    Otherwise p is stale for C: C's cursor branches all ran to their end
 *    (C is short), so C's head branch of p ran too, over keys up to
 *    cursor[p], and its cursor branch over keys after it: C itself scanned
 *    all of p and took J (S is after A) unless it filled its batch first.
 *    Times are monotonic (CLOCK_MONOTONIC, one clock for all backends),
 *    so a step of the wall clock changes nothing here; lock waits happen
 *    before m0, so they do not count either.
 *
 * That bound holds whatever moves the cursors.  The cursors only decide
 * how often a job waits for the rescan instead of being found at once.
 * A cursor moves past a key only when a claim scanned up to it, and never
 * past the writer bound below or a row the claim locked without leasing;
 * whatever could still put a claimable job behind one is caught at once
 * where hasched can see it, and by the rescan (within R) where it cannot:
 *
 *  - a transaction that inserts a job, or makes one waiting again (fail,
 *    retry, requeue, a run_at moved), registers in writer_since first
 *    (hs_writer_note, from the state trigger), and the trigger keeps run_at
 *    >= the time it registered.  A claim reads the clock, then the
 *    registry, then takes S, and never moves a cursor past the earliest
 *    registration: whatever commits after S is at or after that bound.  At
 *    PREPARE TRANSACTION the registration moves to a slot of the prepared
 *    transaction and stays until COMMIT or ROLLBACK PREPARED (seen by the
 *    next claim, through TransactionIdIsInProgress).
 *  - a transaction that locks waiting jobs (claim, cancel, any UPDATE of a
 *    waiting row: the trigger notes it) and rolls back (or a savepoint
 *    rolled back) resets the cursors of their queues; one that changes a
 *    waiting row and leaves it waiting without moving run_at (a hand
 *    UPDATE of priority, queue or payload) resets the queue it ends up in
 *    when it ends; a claim that kept a row locked without leasing it (its
 *    second statement leases every such row, so only if that row changed
 *    under it, which our lock forbids: a safeguard) does the same.  For a
 *    prepared transaction the reset happens when the next claim sees it
 *    ended.
 *  - a backward step of the wall clock (new jobs get run_at before the
 *    cursors): each claim compares wall - monotonic with the largest seen;
 *    a drop of more than 100 ms resets every cursor.
 *  - anything else (a user's SELECT ... FOR UPDATE of a waiting job rolled
 *    back, the trigger disabled): the rescan of step 2, within R.
 *
 * Concurrency limits.  A claim on a queue with a concurrency limit never
 * waits on another claim and uses no lock that SQL can take.  Each open
 * (or prepared) claiming transaction holds a reservation in shared memory
 * (under cursor_lock, an LWLock) of the jobs it leased, with its
 * transaction id, until it ends.  A claim takes, under the lock and at one
 * instant, a snapshot S and the reservations of the others, and reserves
 * what it may take at most; then it counts the running jobs in S and keeps
 * only the room that count leaves.  A reservation whose transaction S sees
 * as ended is not counted: S counts its jobs if it committed (and there
 * are none if it rolled back).  So the running jobs never exceed the
 * limit, in any isolation level, and no job is counted twice: what a claim
 * takes is exactly the room at that instant (a job that ends later only
 * leaves room for the next claim).  See reserve_room.  Caveat: the count
 * walks job_active_idx, which keeps dead entries under an old snapshot
 * like job_waiting_idx does.
 *
 * Hold-back and paused queues.  While the hold-back of degrade.c is in
 * force, the branches of a held-back priority end at run_at <= now less its
 * delay instead of now, and its cursor never moves past that point: in
 * the guarantee above, such a job counts as free from the moment its
 * delay has passed.  A queue paused with hasched.pause_queue() hands out
 * nothing, as in the paused mode.
 *
 * Epochs.  A token carries the epoch of the current timeline (the row the
 * scheduler adds to hasched.epoch on its first round after a promotion).
 * Until that row is there, claims wait up to 2 s and are then refused with
 * JQ004; a claim in a transaction that began while the server was a
 * standby is refused with JQ004 too.
 *
 * IDENTIFICATION
 *		src/core/claim.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>

#include "access/htup_details.h"
#include "access/transam.h"
#include "access/twophase.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "commands/dbcommands.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "core/hasched.h"

/* a drop of wall - monotonic by more than this is a backward clock step */
#define CLOCK_STEP_TOLERANCE_US		100000
/* how long a claim waits for the epoch of a promoted node to open */
#define EPOCH_WAIT_MS				2000
/* reservations (concurrency limits) per backend or prepared transaction */
#define RES_PER_SLOT				4
/* queues a transaction notes for a cursor reset, before it resets them all */
#define MAX_NOTED_QUEUES			8

typedef struct ClaimCursor
{
	char		queue[HS_QUEUE_NAME_MAX];	/* hash key */
	uint64		generation;		/* new at every reset: unique over all cursors */
	TimestampTz run_at[HS_NUM_PRIORITIES];	/* claims scan keys after this */
	int64		id[HS_NUM_PRIORITIES];
	int64		full_at[HS_NUM_PRIORITIES]; /* monotonic start of the last
											 * scan from head to end, 0 never */
	int64		last_used;		/* monotonic, to evict the least used */
} ClaimCursor;

/* queues noted for a reset: at abort, or at the end either way */
typedef struct NotedQueues
{
	int			n;
	bool		all;			/* more than MAX_NOTED_QUEUES: every queue */
	char		q[MAX_NOTED_QUEUES][HS_QUEUE_NAME_MAX];
} NotedQueues;

/* room a claim reserved on a limited queue, until its transaction ends */
typedef struct Reservation
{
	char		queue[HS_QUEUE_NAME_MAX];	/* "" when free */
	int32		n;
	TransactionId xid;			/* the claiming (top) transaction */
} Reservation;

/* what a prepared transaction keeps of its claims and writes */
typedef struct PreparedSlot
{
	TransactionId xid;			/* InvalidTransactionId: free */
	TimestampTz writer_since;	/* 0: no registration */
	NotedQueues at_abort;
	NotedQueues at_end;
	Reservation res[RES_PER_SLOT];
} PreparedSlot;

/* the rest of the claim state in shared memory, under cursor_lock */
typedef struct ClaimShared
{
	uint64		generation;		/* last cursor generation handed out */
	int64		max_offset;		/* largest wall - monotonic seen */
	bool		offset_known;
	int			n_backends;		/* reservation rows: one per PGPROC */
	int			n_prepared;
	pg_atomic_uint32 prepared_used;
	/* then Reservation res[n_backends][RES_PER_SLOT], PreparedSlot prep[n_prepared] */
} ClaimShared;

static HTAB *cursor_hash = NULL;
static ClaimShared *claim_shared = NULL;
static Reservation *res_rows = NULL;
static PreparedSlot *prep_slots = NULL;

/* this backend's transaction */
static bool writer_registered = false;
static TimestampTz writer_since = 0;	/* when it registered */
static NotedQueues noted_abort;
static NotedQueues noted_end;
static TransactionId preparing_xid = InvalidTransactionId;

/* what this transaction's claims reserved, by subtransaction */
typedef struct SubReservation
{
	SubTransactionId subid;
	int			slot;			/* index in this backend's reservation row */
	int32		n;
} SubReservation;
#define MAX_SUB_RES 64
static SubReservation sub_res[MAX_SUB_RES];
static int	n_sub_res = 0;


static int
res_backend_count(void)
{
	return MaxBackends + NUM_AUXILIARY_PROCS;
}

static Size
claim_shared_size(void)
{
	Size		s = MAXALIGN(sizeof(ClaimShared));

	s = add_size(s, mul_size(mul_size(sizeof(Reservation), RES_PER_SLOT),
							 res_backend_count()));
	s = add_size(s, mul_size(sizeof(PreparedSlot), Max(max_prepared_xacts, 1)));
	return s;
}

Size
hs_cursor_shmem_size(void)
{
	return add_size(hash_estimate_size(hs_max_queues, sizeof(ClaimCursor)),
					claim_shared_size());
}

void
hs_cursor_shmem_init(void)
{
	bool		found;

	cursor_hash = hs_shmem_hash("hasched claim cursors", hs_max_queues,
								HS_QUEUE_NAME_MAX, sizeof(ClaimCursor));
	claim_shared = ShmemInitStruct("hasched claim state", claim_shared_size(), &found);
	res_rows = (Reservation *) ((char *) claim_shared + MAXALIGN(sizeof(ClaimShared)));
	prep_slots = (PreparedSlot *) (res_rows + (Size) res_backend_count() * RES_PER_SLOT);
	if (!found)
	{
		memset(claim_shared, 0, claim_shared_size());
		claim_shared->n_backends = res_backend_count();
		claim_shared->n_prepared = max_prepared_xacts;
		pg_atomic_init_u32(&claim_shared->prepared_used, 0);
	}
}

/* ------------------------------------------------------------------------
 * Cursors (cursor_lock held by the caller)
 * ------------------------------------------------------------------------ */

static void
cursor_reset(ClaimCursor *c)
{
	c->generation = ++claim_shared->generation;
	for (int p = 0; p < HS_NUM_PRIORITIES; p++)
	{
		TIMESTAMP_NOBEGIN(c->run_at[p]);
		c->id[p] = 0;
		c->full_at[p] = 0;
	}
}

static void
reset_all_cursors(void)
{
	HASH_SEQ_STATUS status;
	ClaimCursor *c;

	hash_seq_init(&status, cursor_hash);
	while ((c = hash_seq_search(&status)) != NULL)
		cursor_reset(c);
}

/*
 * Find (or, with create, make) the cursor of a queue.  The table holds at
 * most hasched.max_queues cursors: past that, the least recently used one
 * is dropped (a queue without a cursor scans from its head, which is
 * always right, only slower under an old snapshot).
 */
static int64
cursor_last_used(const void *entry)
{
	return ((const ClaimCursor *) entry)->last_used;
}

static ClaimCursor *
cursor_lookup(const char *queue, bool create)
{
	char		key[HS_QUEUE_NAME_MAX];
	ClaimCursor *c;
	bool		found;

	memset(key, 0, sizeof(key));
	strlcpy(key, queue, sizeof(key));
	if (!create)
		return hash_search(cursor_hash, key, HASH_FIND, NULL);
	c = hs_shmem_hash_enter(cursor_hash, key, hs_max_queues, cursor_last_used, &found);
	if (c != NULL && !found)
		cursor_reset(c);
	return c;
}

static void
reset_queues(const NotedQueues *nq)
{
	if (nq->all)
		reset_all_cursors();
	else
		for (int i = 0; i < nq->n; i++)
		{
			ClaimCursor *c = cursor_lookup(nq->q[i], false);

			if (c)
				cursor_reset(c);
		}
}

static void
note_queue(NotedQueues *nq, const char *queue)
{
	if (nq->all)
		return;
	for (int i = 0; i < nq->n; i++)
		if (strcmp(nq->q[i], queue) == 0)
			return;
	if (nq->n < MAX_NOTED_QUEUES)
		strlcpy(nq->q[nq->n++], queue, HS_QUEUE_NAME_MAX);
	else
		nq->all = true;
}

/*
 * This transaction is about to lock waiting jobs of queue: if it rolls
 * back, those jobs must be found again.
 */
void
hs_claim_note_locked(const char *queue)
{
	note_queue(&noted_abort, queue);
}

/*
 * This transaction leaves a waiting job of queue changed without moving its
 * run_at (a hand UPDATE of its priority, queue or payload), or held it
 * locked while claims could pass it: reset the queue's cursors when it
 * ends, whichever way.
 */
void
hs_claim_note_reset_at_end(const char *queue)
{
	note_queue(&noted_end, queue);
}

/*
 * Register this transaction as one that makes jobs claimable.  Returns the
 * time it registered at (now, when there is no registry): the run_at of the
 * jobs it makes claimable must not be before it.
 */
TimestampTz
hs_writer_note(void)
{
	if (writer_registered)
		return writer_since;
	if (hs_shared == NULL || MyProc == NULL)
		return GetCurrentTimestamp();
	writer_since = GetCurrentTimestamp();
	pg_atomic_write_u64(&hs_shared->writer_since[MyProc->pgprocno],
						(uint64) writer_since);
	pg_memory_barrier();
	writer_registered = true;
	return writer_since;
}

static void
writer_clear(void)
{
	if (!writer_registered)
		return;
	pg_atomic_write_u64(&hs_shared->writer_since[MyProc->pgprocno], 0);
	writer_registered = false;
}

static Reservation *
my_reservations(void)
{
	return res_rows + (Size) MyProc->pgprocno * RES_PER_SLOT;
}

static bool
have_reservations(void)
{
	Reservation *r;

	if (claim_shared == NULL || MyProc == NULL)
		return false;
	r = my_reservations();
	for (int i = 0; i < RES_PER_SLOT; i++)
		if (r[i].queue[0] != '\0')
			return true;
	return false;
}

static void
forget_transaction(void)
{
	writer_clear();
	memset(&noted_abort, 0, sizeof(noted_abort));
	memset(&noted_end, 0, sizeof(noted_end));
	n_sub_res = 0;
	preparing_xid = InvalidTransactionId;
}

/*
 * End of the transaction (wakeup.c's callback calls this): a rolled-back
 * claim or cancel may have skipped jobs it had locked, so their queues'
 * cursors go back to the head; the queues noted for the end are reset
 * either way; the writer registration and the reservations end.  (A
 * reservation ends after the commit is visible; a claim whose snapshot
 * sees the commit counts the committed rows instead, so the moment between
 * does not count them twice.)
 */
void
hs_claim_xact_end(bool committed)
{
	bool		reset = (!committed && (noted_abort.n > 0 || noted_abort.all)) ||
		noted_end.n > 0 || noted_end.all;

	if ((reset || have_reservations()) && claim_shared != NULL)
	{
		LWLockAcquire(hs_shared->cursor_lock, LW_EXCLUSIVE);
		if (!committed)
			reset_queues(&noted_abort);
		reset_queues(&noted_end);
		if (MyProc != NULL)
			memset(my_reservations(), 0, sizeof(Reservation) * RES_PER_SLOT);
		LWLockRelease(hs_shared->cursor_lock);
	}
	forget_transaction();
}

/* Before PREPARE TRANSACTION: remember the transaction's id. */
void
hs_claim_xact_pre_prepare(void)
{
	preparing_xid = GetTopTransactionIdIfAny();
}

/*
 * PREPARE TRANSACTION: this backend is done with the transaction, but its
 * jobs commit (or not) later, in another session.  Its registration, the
 * queues to reset and its reservations move to a prepared slot, which the
 * next claim after COMMIT/ROLLBACK PREPARED acts on and frees.
 */
void
hs_claim_xact_prepare(void)
{
	bool		keep = writer_registered || noted_abort.n > 0 || noted_abort.all ||
		noted_end.n > 0 || noted_end.all || have_reservations();

	if (keep && claim_shared != NULL && TransactionIdIsValid(preparing_xid))
	{
		PreparedSlot *slot = NULL;

		LWLockAcquire(hs_shared->cursor_lock, LW_EXCLUSIVE);
		for (int i = 0; i < claim_shared->n_prepared; i++)
			if (!TransactionIdIsValid(prep_slots[i].xid))
			{
				slot = &prep_slots[i];
				break;
			}
		if (slot != NULL)
		{
			slot->xid = preparing_xid;
			slot->writer_since = writer_registered ?
				(TimestampTz) pg_atomic_read_u64(&hs_shared->writer_since[MyProc->pgprocno]) : 0;
			slot->at_abort = noted_abort;
			slot->at_end = noted_end;
			memcpy(slot->res, my_reservations(), sizeof(Reservation) * RES_PER_SLOT);
			pg_atomic_fetch_add_u32(&claim_shared->prepared_used, 1);
		}
		else
		{
			/* cannot happen (a slot per max_prepared_transactions): be safe */
			reset_all_cursors();
		}
		memset(my_reservations(), 0, sizeof(Reservation) * RES_PER_SLOT);
		LWLockRelease(hs_shared->cursor_lock);
	}
	forget_transaction();
}

/*
 * A subtransaction rolled back: the jobs it locked are free again (reset
 * the noted queues, as for a transaction), and what its claims reserved is
 * given back.  Subtransactions started after mySubid are its children.
 */
void
hs_claim_subxact_abort(SubTransactionId mySubid)
{
	bool		give_back = false;

	for (int i = 0; i < n_sub_res; i++)
		if (sub_res[i].subid >= mySubid)
			give_back = true;
	if (claim_shared == NULL ||
		(!give_back && noted_abort.n == 0 && !noted_abort.all &&
		 noted_end.n == 0 && !noted_end.all))
		return;
	LWLockAcquire(hs_shared->cursor_lock, LW_EXCLUSIVE);
	reset_queues(&noted_abort);
	reset_queues(&noted_end);
	if (give_back && MyProc != NULL)
	{
		Reservation *r = my_reservations();

		for (int i = 0; i < n_sub_res;)
		{
			if (sub_res[i].subid >= mySubid)
			{
				r[sub_res[i].slot].n = Max(0, r[sub_res[i].slot].n - sub_res[i].n);
				sub_res[i] = sub_res[--n_sub_res];
			}
			else
				i++;
		}
	}
	LWLockRelease(hs_shared->cursor_lock);
}

/*
 * Prepared transactions that ended since the last look: reset the queues
 * they noted, drop their registration and reservations.
 */
static void
sweep_prepared(void)
{
	if (claim_shared == NULL || pg_atomic_read_u32(&claim_shared->prepared_used) == 0)
		return;
	LWLockAcquire(hs_shared->cursor_lock, LW_EXCLUSIVE);
	for (int i = 0; i < claim_shared->n_prepared; i++)
	{
		PreparedSlot *s = &prep_slots[i];

		if (!TransactionIdIsValid(s->xid) || TransactionIdIsInProgress(s->xid))
			continue;
		if (!TransactionIdDidCommit(s->xid))
			reset_queues(&s->at_abort);
		reset_queues(&s->at_end);
		memset(s, 0, sizeof(PreparedSlot));
		s->xid = InvalidTransactionId;
		pg_atomic_fetch_sub_u32(&claim_shared->prepared_used, 1);
	}
	LWLockRelease(hs_shared->cursor_lock);
}

/* The earliest registration of any open writer, or limit if none earlier. */
static TimestampTz
writer_bound(TimestampTz limit)
{
	TimestampTz bound = limit;

	pg_memory_barrier();
	for (int i = 0; i < hs_shared->n_writer_slots; i++)
	{
		uint64		v = pg_atomic_read_u64(&hs_shared->writer_since[i]);

		if (v != 0 && (TimestampTz) v < bound)
			bound = (TimestampTz) v;
	}
	if (pg_atomic_read_u32(&claim_shared->prepared_used) > 0)
	{
		LWLockAcquire(hs_shared->cursor_lock, LW_SHARED);
		for (int i = 0; i < claim_shared->n_prepared; i++)
			if (TransactionIdIsValid(prep_slots[i].xid) &&
				prep_slots[i].writer_since != 0 && prep_slots[i].writer_since < bound)
				bound = prep_slots[i].writer_since;
		LWLockRelease(hs_shared->cursor_lock);
	}
	return bound;
}

static int
key_cmp(TimestampTz t1, int64 i1, TimestampTz t2, int64 i2)
{
	if (t1 != t2)
		return t1 < t2 ? -1 : 1;
	if (i1 != i2)
		return i1 < i2 ? -1 : 1;
	return 0;
}

/* ------------------------------------------------------------------------
 * The epoch of the current timeline
 * ------------------------------------------------------------------------ */

/* Is this database the one the scheduler serves (and opens epochs in)? */
static bool
scheduler_database(void)
{
	static Oid	checked_db = InvalidOid;
	static bool is_it = false;

	if (checked_db != MyDatabaseId)
	{
		char	   *name = get_database_name(MyDatabaseId);

		is_it = name != NULL && hs_database != NULL && strcmp(name, hs_database) == 0;
		checked_db = MyDatabaseId;
	}
	return is_it;
}

/*
 * The epoch a lease granted now carries: the one opened for this timeline.
 * On a node just promoted it does not exist until the scheduler's first
 * round there: wait for it up to EPOCH_WAIT_MS, then refuse with JQ004.
 * (In a database the scheduler does not serve, no epoch is ever opened:
 * the latest one is used.)  Inside SPI, as the extension owner.
 */
static int32
current_epoch(void)
{
	static SPIPlanPtr plan = NULL;
	TimeLineID	tli;
	int64		deadline;

	if (RecoveryInProgress())
		hs_require_primary("claim jobs");
	if (TransactionStartedDuringRecovery())
		ereport(ERROR,
				(errcode(HS_ERRCODE_NOT_PRIMARY),
				 errmsg("cannot claim jobs in a transaction that began while this server was a standby"),
				 errdetail("The server has been promoted since; the transaction is read-only."),
				 errhint("Start a new transaction and claim again.")));
	tli = GetWALInsertionTimeLine();
	hs_plan(&plan, "SELECT e.epoch FROM hasched.epoch e"
			" WHERE e.timeline = $1 OR NOT $2"
			" ORDER BY e.epoch DESC LIMIT 1",
			2, INT4OID, BOOLOID);
	deadline = hs_clock_usec() + (int64) EPOCH_WAIT_MS * 1000;
	for (;;)
	{
		Datum		values[2];
		bool		isnull;

		values[0] = Int32GetDatum((int32) tli);
		values[1] = BoolGetDatum(scheduler_database());
		if (SPI_execute_snapshot(plan, values, NULL, GetLatestSnapshot(), InvalidSnapshot,
								 true, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "hasched: reading the epoch failed");
		if (SPI_processed == 1)
		{
			/*
			 * Not cached: with ZooKeeper a new leadership term opens a new
			 * epoch on the same timeline (one index probe of a tiny table).
			 */
			return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 1, &isnull));
		}
		if (hs_clock_usec() >= deadline)
			ereport(ERROR,
					(errcode(HS_ERRCODE_NOT_PRIMARY),
					 errmsg("this server was promoted and has not opened its epoch yet"),
					 errdetail("Leases carry the epoch of the timeline they were granted on; the hasched scheduler opens the epoch of timeline %u on its first round.", tli),
					 errhint("Retry in a moment; if this lasts, check that the scheduler runs (hasched.health()).")));
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 20L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/* ------------------------------------------------------------------------
 * Concurrency limits
 * ------------------------------------------------------------------------ */

/*
 * Reservations of other transactions (and prepared ones) on queue, but not
 * those of transactions that snap sees as ended: it counts their jobs if
 * they committed, and they have none if they rolled back.  cursor_lock held.
 */
static int64
reserved_by_others(const char *queue, Snapshot snap)
{
	int64		sum = 0;
	int			me = MyProc->pgprocno;

	for (int b = 0; b < claim_shared->n_backends + claim_shared->n_prepared; b++)
	{
		Reservation *r;

		if (b == me)
			continue;
		if (b < claim_shared->n_backends)
			r = res_rows + (Size) b * RES_PER_SLOT;
		else
		{
			PreparedSlot *ps = &prep_slots[b - claim_shared->n_backends];

			if (!TransactionIdIsValid(ps->xid))
				continue;
			r = ps->res;
		}
		for (int i = 0; i < RES_PER_SLOT; i++)
			if (r[i].queue[0] != '\0' && r[i].n > 0 && strcmp(r[i].queue, queue) == 0 &&
				(!TransactionIdIsValid(r[i].xid) || XidInMVCCSnapshot(r[i].xid, snap)))
				sum += r[i].n;
	}
	return sum;
}

/*
 * Record what this (sub)transaction reserved, so that it is given back if
 * the subtransaction aborts; returns the record's index, -1 if none.
 */
static int
note_sub_reservation(int slot, int32 n)
{
	if (n <= 0 || n_sub_res >= MAX_SUB_RES)
		return -1;
	sub_res[n_sub_res].subid = GetCurrentSubTransactionId();
	sub_res[n_sub_res].slot = slot;
	sub_res[n_sub_res].n = n;
	return n_sub_res++;
}

/*
 * Reserve room for up to want jobs of queue, whose limit is limit; returns
 * how many this claim may take, and sets *slot to its reservation (in this
 * backend's row).  Never waits on another claim.
 *
 * The jobs running on the queue at any instant are the committed ones plus
 * those leased by open (or prepared) claiming transactions, and each of
 * those holds a reservation at least as large until it ends, visibly.
 * Under cursor_lock, at one instant t, this claim takes a snapshot S and
 * adds up the reservations of the others (R, without those of transactions
 * S sees as ended: S counts their jobs, or they have none); it reserves
 * limit - R (want at most) at once, so that claims after t count it.
 * Then it counts the jobs running in S (C, committed by t, its own earlier
 * claims among them) and keeps limit - R - C.  The running jobs at t were
 * C + R at most, and every claim after t counts what this one kept: the
 * limit holds.  And no job counts twice (a transaction S sees as ended
 * counts in C only; one it does not, in R only): the room kept is the
 * room at t.
 */
static int
reserve_room(const char *queue, int32 limit, int want, int *slot, int *sub_idx)
{
	static SPIPlanPtr count_plan = NULL;
	Reservation *mine = my_reservations();
	Snapshot	snap;
	int64		running;
	int64		others;
	int32		before;
	int			tentative;
	int			allowed;
	Datum		values[1];
	bool		isnull;

	want = Min(want, limit);
	hs_plan(&count_plan, "SELECT count(*) FROM hasched.job"
			" WHERE queue = $1 AND state IN ('running', 'dispatched')",
			1, TEXTOID);
	values[0] = CStringGetTextDatum(queue);
	/* the others see our reservation by the transaction's id: have one now */
	(void) GetTopTransactionId();

	LWLockAcquire(hs_shared->cursor_lock, LW_EXCLUSIVE);
	*slot = -1;
	for (int i = 0; i < RES_PER_SLOT && *slot < 0; i++)
		if (mine[i].queue[0] != '\0' && strcmp(mine[i].queue, queue) == 0)
			*slot = i;
	for (int i = 0; i < RES_PER_SLOT && *slot < 0; i++)
		if (mine[i].queue[0] == '\0')
		{
			*slot = i;
			strlcpy(mine[i].queue, queue, HS_QUEUE_NAME_MAX);
			mine[i].n = 0;
		}
	if (*slot < 0)
	{
		LWLockRelease(hs_shared->cursor_lock);
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("a transaction can claim from at most %d queues with a concurrency limit",
						RES_PER_SLOT),
				 errhint("Commit the claims made so far, then claim from the other queues.")));
	}
	mine[*slot].xid = GetTopTransactionIdIfAny();
	/* the snapshot and the others' reservations at one instant */
	snap = RegisterSnapshot(GetLatestSnapshot());
	others = reserved_by_others(queue, snap);
	/* what this transaction claimed before is in its count already */
	before = mine[*slot].n;
	tentative = (int) Max((int64) 0, Min((int64) want, (int64) limit - others));
	mine[*slot].n = before + tentative;
	LWLockRelease(hs_shared->cursor_lock);
	/* recorded at once: if this subtransaction aborts, it is given back */
	*sub_idx = note_sub_reservation(*slot, tentative);

	if (SPI_execute_snapshot(count_plan, values, NULL, snap, InvalidSnapshot,
							 true, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "hasched: counting running jobs failed");
	running = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										  SPI_tuptable->tupdesc, 1, &isnull));
	UnregisterSnapshot(snap);

	allowed = (int) Max((int64) 0, Min((int64) tentative, (int64) limit - running - others));
	if (allowed < tentative)
	{
		LWLockAcquire(hs_shared->cursor_lock, LW_EXCLUSIVE);
		mine[*slot].n -= tentative - allowed;
		LWLockRelease(hs_shared->cursor_lock);
		if (*sub_idx >= 0)
			sub_res[*sub_idx].n = allowed;
	}
	return allowed;
}

/*
 * The claim leased got jobs of the allowed it reserved: keep only those
 * (sub_idx: reserve_room's record of this claim, -1 if none).
 */
static void
settle_reservation(int slot, int sub_idx, int allowed, int got)
{
	Reservation *mine = my_reservations();

	LWLockAcquire(hs_shared->cursor_lock, LW_EXCLUSIVE);
	mine[slot].n -= (allowed - got);
	if (mine[slot].n <= 0)
		memset(&mine[slot], 0, sizeof(Reservation));
	LWLockRelease(hs_shared->cursor_lock);
	if (sub_idx >= 0 && sub_idx < n_sub_res)
		sub_res[sub_idx].n = got;
}

/* ------------------------------------------------------------------------
 * claim()
 * ------------------------------------------------------------------------ */

/*
 * Parameters: $1 queue, $2 now, $3 limit, $4 lease, $5 worker, $6 lease
 * covers the timeout, $7 epoch; then per priority p: the cursor key
 * ($8+4p, $9+4p) and the end of the head range ($10+4p, $11+4p); then
 * per priority the latest run_at it may have ($48+p: now, or earlier while
 * the hold-back of degrade.c holds the priority back).
 */
#define CLAIM_FIXED_ARGS 7
#define CLAIM_UPTO_ARG (CLAIM_FIXED_ARGS + 4 * HS_NUM_PRIORITIES)
#define CLAIM_ARGS (CLAIM_UPTO_ARG + HS_NUM_PRIORITIES)
/* columns of the result: the leased rows (hs_lease_update_sql's RETURNING), then */
/*
 * After them, by name (the RETURNING list is job_state.c's): is_lock (true:
 * a row the CTE locked, false: a leased row), b, lock_run_at, lock_id,
 * lock_ctid.  "LEFT JOIN u ON false" gives the locked rows u's columns, NULL.
 */
#define COL_IS_LOCK		SPI_fnumber(SPI_tuptable->tupdesc, "is_lock")
#define COL_BRANCH		SPI_fnumber(SPI_tuptable->tupdesc, "b")
#define COL_LOCK_RUN_AT SPI_fnumber(SPI_tuptable->tupdesc, "lock_run_at")
#define COL_LOCK_ID		SPI_fnumber(SPI_tuptable->tupdesc, "lock_id")
#define COL_LOCK_CTID	SPI_fnumber(SPI_tuptable->tupdesc, "lock_ctid")

static SPIPlanPtr
claim_plan(void)
{
	static SPIPlanPtr plan = NULL;
	StringInfoData sql;
	Oid			types[CLAIM_ARGS];

	if (plan != NULL)
		return plan;

	types[0] = TEXTOID;			/* queue */
	types[1] = TIMESTAMPTZOID;	/* now */
	types[2] = INT4OID;			/* limit */
	types[3] = INTERVALOID;		/* lease */
	types[4] = TEXTOID;			/* worker */
	types[5] = BOOLOID;			/* lease also covers the job's timeout */
	types[6] = INT4OID;			/* epoch */
	initStringInfo(&sql);
	appendStringInfoString(&sql, "WITH c AS MATERIALIZED (");
	for (int b = 0; b < 2 * HS_NUM_PRIORITIES; b++)
	{
		int			p = b % HS_NUM_PRIORITIES;
		bool		head = b >= HS_NUM_PRIORITIES;
		int			a = CLAIM_FIXED_ARGS + 4 * p + (head ? 2 : 0);

		types[a] = TIMESTAMPTZOID;
		types[a + 1] = INT8OID;
		types[CLAIM_UPTO_ARG + p] = TIMESTAMPTZOID;
		appendStringInfo(&sql,
						 "%s SELECT * FROM (SELECT %d AS b, ctid, run_at, id FROM hasched.job"
						 " WHERE queue = $1 AND priority = %d"
						 " AND state IN ('scheduled', 'pending', 'failed')"
						 " AND run_at <= $%d AND (run_at, id) %s ($%d, $%d)"
						 " ORDER BY run_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) a%d",
						 b == 0 ? "" : " UNION ALL", b, p + HS_PRIORITY_MIN,
						 CLAIM_UPTO_ARG + p + 1, head ? "<=" : ">", a + 1, a + 2, b);
	}
	appendStringInfo(&sql, " LIMIT $3), u AS (%s)"
					 " SELECT * FROM ("
					 " SELECT u.*, false AS is_lock, NULL::int AS b,"
					 "  NULL::timestamptz AS lock_run_at, NULL::bigint AS lock_id,"
					 "  NULL::tid AS lock_ctid FROM u"
					 " UNION ALL"
					 " SELECT n.*, true, c.b, c.run_at, c.id, c.ctid"
					 "  FROM c LEFT JOIN u n ON false) r"
					 " ORDER BY is_lock, priority, run_at, id",
					 hs_lease_update_sql());
	plan = hs_prepare(sql.data, CLAIM_ARGS, types);
	pfree(sql.data);
	return plan;
}

typedef struct QueueInfo
{
	char	   *transport;
	int32		concurrency;
	Interval   *lease;
	char	   *mode;
	bool		paused;			/* hasched.pause_queue() */
} QueueInfo;

static bool
load_queue(const char *queue, QueueInfo *info)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[1];
	bool		isnull;
	HeapTuple	tup;
	TupleDesc	desc;

	hs_plan(&plan, "SELECT q.transport, q.concurrency, q.lease, s.mode,"
			" q.paused_at IS NOT NULL"
			" FROM hasched.queue q, hasched.state s WHERE q.name = $1",
			1, TEXTOID);
	values[0] = CStringGetTextDatum(queue);
	if (SPI_execute_plan(plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "hasched: reading queue \"%s\" failed", queue);
	if (SPI_processed == 0)
		return false;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	info->transport = SPI_getvalue(tup, desc, 1);
	info->concurrency = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
	info->lease = DatumGetIntervalP(SPI_getbinval(tup, desc, 3, &isnull));
	info->mode = SPI_getvalue(tup, desc, 4);
	info->paused = DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull));
	return true;
}

/* wall - monotonic dropped: the wall clock stepped back; reset every cursor */
static void
check_clock_step(int64 mono, TimestampTz wall)
{
	int64		offset = (int64) wall - mono;

	if (!claim_shared->offset_known || offset > claim_shared->max_offset)
	{
		claim_shared->max_offset = offset;
		claim_shared->offset_known = true;
	}
	else if (offset < claim_shared->max_offset - CLOCK_STEP_TOLERANCE_US)
	{
		reset_all_cursors();
		claim_shared->max_offset = offset;
	}
}

/* what the statement locked and leased, per branch and priority */
typedef struct ScanResult
{
	int			locked[2 * HS_NUM_PRIORITIES];
	TimestampTz max_t[HS_NUM_PRIORITIES];	/* cursor branch: last key locked */
	int64		max_id[HS_NUM_PRIORITIES];
	bool		unleased[HS_NUM_PRIORITIES];	/* locked, not leased */
	TimestampTz unl_t[HS_NUM_PRIORITIES];	/* the first such key */
	int64		unl_id[HS_NUM_PRIORITIES];
	int			total_locked;
	int			last_branch;
	int			n_unleased;
	Datum	   *unleased_ctids;	/* of the rows locked and not leased */
} ScanResult;

static int
int64_cmp(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return x < y ? -1 : x > y ? 1 : 0;
}

static void
read_scan(uint64 nleased, ScanResult *sr)
{
	TupleDesc	desc = SPI_tuptable->tupdesc;
	int64	   *leased_ids = palloc(sizeof(int64) * (nleased + 1));

	int			col_b = COL_BRANCH;
	int			col_run_at = COL_LOCK_RUN_AT;
	int			col_id = COL_LOCK_ID;
	int			col_ctid = COL_LOCK_CTID;

	memset(sr, 0, sizeof(*sr));
	sr->last_branch = -1;
	sr->unleased_ctids = palloc(sizeof(Datum) * (SPI_processed + 1));
	for (uint64 i = 0; i < nleased; i++)
	{
		bool		isnull;

		leased_ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], desc, 1, &isnull));
	}
	if (nleased > 1)
		qsort(leased_ids, nleased, sizeof(int64), int64_cmp);
	for (uint64 i = nleased; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;
		int			b = DatumGetInt32(SPI_getbinval(tup, desc, col_b, &isnull));
		TimestampTz t = DatumGetTimestampTz(SPI_getbinval(tup, desc, col_run_at, &isnull));
		int64		id = DatumGetInt64(SPI_getbinval(tup, desc, col_id, &isnull));
		int			p = b % HS_NUM_PRIORITIES;
		bool		leased = false;

		sr->locked[b]++;
		sr->total_locked++;
		if (b > sr->last_branch)
			sr->last_branch = b;
		if (b < HS_NUM_PRIORITIES &&
			(sr->locked[b] == 1 || key_cmp(t, id, sr->max_t[p], sr->max_id[p]) > 0))
		{
			sr->max_t[p] = t;
			sr->max_id[p] = id;
		}
		leased = nleased > 0 &&
			bsearch(&id, leased_ids, nleased, sizeof(int64), int64_cmp) != NULL;
		if (!leased)
			sr->unleased_ctids[sr->n_unleased++] =
				SPI_getbinval(tup, desc, col_ctid, &isnull);
		if (!leased &&
			(!sr->unleased[p] || key_cmp(t, id, sr->unl_t[p], sr->unl_id[p]) < 0))
		{
			sr->unleased[p] = true;
			sr->unl_t[p] = t;
			sr->unl_id[p] = id;
		}
	}
	pfree(leased_ids);
}

/*
 * The claim locked rows it could not lease: their newest version committed
 * after its snapshot (FOR UPDATE locks the newest version; the UPDATE, on
 * the snapshot, cannot see it).  They are ours, waiting and due (the lock
 * rechecked that): lease them too, on a fresh snapshot, so that a claim
 * never holds a job it does not hand out.  The leased rows of both
 * statements become SPI_tuptable, most urgent first; returns their number.
 */
static int
row_order(const void *a, const void *b, void *arg)
{
	HeapTuple	x = *(const HeapTuple *) a;
	HeapTuple	y = *(const HeapTuple *) b;
	TupleDesc	desc = (TupleDesc) arg;
	bool		n1,
				n2;
	int16		px = DatumGetInt16(heap_getattr(x, 6, desc, &n1));
	int16		py = DatumGetInt16(heap_getattr(y, 6, desc, &n2));

	if (px != py)
		return px < py ? -1 : 1;
	return key_cmp(DatumGetTimestampTz(heap_getattr(x, 10, desc, &n1)),
				   DatumGetInt64(heap_getattr(x, 1, desc, &n1)),
				   DatumGetTimestampTz(heap_getattr(y, 10, desc, &n2)),
				   DatumGetInt64(heap_getattr(y, 1, desc, &n2)));
}

static uint64
lease_unleased(Datum *values, uint64 total, ScanResult *sr)
{
	static SPIPlanPtr plan = NULL;
	SPITupleTable *first = SPI_tuptable;
	SPITupleTable *both;
	Datum		args[CLAIM_FIXED_ARGS + 1];
	uint64		extra;

	if (plan == NULL)
	{
		Oid			types[CLAIM_FIXED_ARGS + 1] = {TEXTOID, TIMESTAMPTZOID, INT4OID, INTERVALOID,
		TEXTOID, BOOLOID, INT4OID, TIDARRAYOID};
		char	   *sql = psprintf("WITH c AS (SELECT unnest($8) AS ctid), u AS (%s)"
								   " SELECT u.*, false, NULL::int, NULL::timestamptz,"
								   "  NULL::bigint, NULL::tid FROM u",
								   hs_lease_update_sql());

		plan = hs_prepare(sql, CLAIM_FIXED_ARGS + 1, types);
		pfree(sql);
	}
	memcpy(args, values, sizeof(Datum) * CLAIM_FIXED_ARGS);
	args[CLAIM_FIXED_ARGS] = PointerGetDatum(construct_array(sr->unleased_ctids, sr->n_unleased,
															 TIDOID, sizeof(ItemPointerData),
															 false, TYPALIGN_SHORT));
	if (SPI_execute_snapshot(plan, args, NULL, GetLatestSnapshot(), InvalidSnapshot,
							 false, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "hasched: leasing locked jobs failed");
	extra = SPI_processed;
	if (extra == (uint64) sr->n_unleased)
	{
		/* all leased: nothing is held that was not handed out */
		memset(sr->unleased, 0, sizeof(sr->unleased));
		sr->n_unleased = 0;
	}

	both = palloc0(sizeof(SPITupleTable));
	both->tupdesc = first->tupdesc;
	both->vals = palloc(sizeof(HeapTuple) * (total + extra + 1));
	memcpy(both->vals, first->vals, sizeof(HeapTuple) * total);
	memcpy(both->vals + total, SPI_tuptable->vals, sizeof(HeapTuple) * extra);
	both->numvals = total + extra;
	both->alloced = total + extra + 1;
	qsort_arg(both->vals, total + extra, sizeof(HeapTuple), row_order, both->tupdesc);
	SPI_tuptable = both;
	SPI_processed = total + extra;
	return total + extra;
}

/*
 * Lease up to max_jobs due jobs of queue to worker; the caller is connected
 * to SPI and runs as the extension owner.  The claimed rows are left in
 * SPI_tuptable, first, in claim order (columns: see hs_lease_update_sql's
 * RETURNING; rows after them are the claim's bookkeeping), and their number
 * is returned.  A queue whose transport is not `transport` is refused; in
 * paused mode, or from a paused queue, nothing is claimed.  lease NULL: the queue's.  With
 * lease_plus_timeout each lease also covers the job's timeout (the
 * executors run SQL jobs without heartbeats).
 */
uint64
hs_claim_jobs(const char *queue, const char *worker, int max_jobs,
			  Interval *lease, const char *transport, bool lease_plus_timeout)
{
	QueueInfo	qi;
	int			n;
	int			res_slot = -1;
	int			res_sub = -1;
	int32		epoch;
	int64		m0;
	TimestampTz t0;
	TimestampTz bound;
	ClaimCursor *cur;
	uint64		generation = 0;
	bool		have_cursor = false;
	bool		stale[HS_NUM_PRIORITIES];
	TimestampTz start_t[HS_NUM_PRIORITIES];
	int64		start_id[HS_NUM_PRIORITIES];
	TimestampTz upto[HS_NUM_PRIORITIES];
	Datum		values[CLAIM_ARGS];
	int			rc;
	uint64		total;
	ScanResult	sr;
	Oid			job_relid;

	epoch = current_epoch();
	if (!load_queue(queue, &qi))
		hs_unknown_queue(queue);
	if (strcmp(qi.transport, transport) != 0)
		ereport(ERROR,
				(errcode(HS_ERRCODE_WRONG_TRANSPORT),
				 errmsg("queue \"%s\" is not a %s queue", queue, transport),
				 errdetail("Its transport is %s.", qi.transport),
				 strcmp(transport, "pull") == 0 ?
				 errhint("Claim from a queue whose transport is pull; jobs of %s queues are handed out by hasched itself.",
						 qi.transport) : 0));
	if (strcmp(qi.mode, "paused") == 0 || qi.paused)
		return 0;
	if (lease == NULL)
		lease = qi.lease;

	/* lock waits (LOCK TABLE, CREATE INDEX) happen here, before any clock */
	job_relid = get_relname_relid("job", get_namespace_oid("hasched", false));
	LockRelationOid(job_relid, RowExclusiveLock);
	sweep_prepared();

	n = max_jobs;
	if (qi.concurrency > 0)
		n = reserve_room(queue, qi.concurrency, n, &res_slot, &res_sub);
	if (n <= 0)
	{
		if (res_slot >= 0)
			settle_reservation(res_slot, res_sub, 0, 0);
		return 0;
	}

	hs_claim_note_locked(queue);
	/* clocks, then registry, then (in SPI_execute_snapshot) the snapshot */
	m0 = hs_clock_usec();
	t0 = GetCurrentTimestamp();
	bound = writer_bound(t0);
	/* the hold-back (degrade.c): a priority's scan, and cursor, end earlier */
	(void) hs_degrade_claim_bounds(t0, upto);

	LWLockAcquire(hs_shared->cursor_lock, LW_EXCLUSIVE);
	check_clock_step(m0, t0);
	cur = cursor_lookup(queue, true);
	for (int p = 0; p < HS_NUM_PRIORITIES; p++)
	{
		TIMESTAMP_NOBEGIN(start_t[p]);
		start_id[p] = 0;
		stale[p] = false;
		if (cur == NULL)
			continue;
		start_t[p] = cur->run_at[p];
		start_id[p] = cur->id[p];
		stale[p] = !TIMESTAMP_IS_NOBEGIN(start_t[p]) &&
			(cur->full_at[p] == 0 ||
			 m0 - cur->full_at[p] >= (int64) hs_claim_rewind_interval * 1000);
	}
	if (cur != NULL)
	{
		generation = cur->generation;
		cur->last_used = m0;
		have_cursor = true;
	}
	LWLockRelease(hs_shared->cursor_lock);

	values[0] = CStringGetTextDatum(queue);
	values[1] = TimestampTzGetDatum(t0);
	values[2] = Int32GetDatum(n);
	values[3] = IntervalPGetDatum(lease);
	values[4] = CStringGetTextDatum(worker);
	values[5] = BoolGetDatum(lease_plus_timeout);
	values[6] = Int32GetDatum(epoch);
	for (int p = 0; p < HS_NUM_PRIORITIES; p++)
	{
		int			a = CLAIM_FIXED_ARGS + 4 * p;
		TimestampTz empty;

		TIMESTAMP_NOBEGIN(empty);
		values[a] = TimestampTzGetDatum(start_t[p]);
		values[a + 1] = Int64GetDatum(start_id[p]);
		/* the head range: up to the cursor when stale, else nothing */
		values[a + 2] = TimestampTzGetDatum(stale[p] ? start_t[p] : empty);
		values[a + 3] = Int64GetDatum(stale[p] ? start_id[p] : -1);
		values[CLAIM_UPTO_ARG + p] = TimestampTzGetDatum(upto[p]);
	}

	rc = SPI_execute_snapshot(claim_plan(), values, NULL, GetLatestSnapshot(),
							  InvalidSnapshot, false, true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "hasched: claim failed: %s", SPI_result_code_string(rc));

	/* the leased rows come first */
	total = 0;
	{
		int			col_is_lock = COL_IS_LOCK;

		while (total < SPI_processed)
		{
			bool		isnull;

			if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[total], SPI_tuptable->tupdesc,
										   col_is_lock, &isnull)))
				break;
			total++;
		}
	}
	read_scan(total, &sr);
	if (sr.n_unleased > 0)
		total = lease_unleased(values, total, &sr);
	if (res_slot >= 0)
		settle_reservation(res_slot, res_sub, n, (int) total);

	/*
	 * Move the cursors (see the header): a branch ran to its end when fewer
	 * rows than n were locked or a later branch locked one.  Never past the
	 * writer bound, nor past a row locked and not leased (whose queue is
	 * then reset when this transaction ends).
	 */
	if (have_cursor)
	{
		bool		any_unleased = false;

		LWLockAcquire(hs_shared->cursor_lock, LW_EXCLUSIVE);
		cur = cursor_lookup(queue, false);
		if (cur != NULL && cur->generation == generation)
		{
			for (int p = 0; p < HS_NUM_PRIORITIES; p++)
			{
				bool		ended = sr.total_locked < n || p < sr.last_branch;
				bool		head_ended = sr.total_locked < n ||
					p + HS_NUM_PRIORITIES < sr.last_branch;
				bool		full = ended &&
					(TIMESTAMP_IS_NOBEGIN(start_t[p]) || (stale[p] && head_ended));
				TimestampTz new_t = Min(bound, upto[p]);
				int64		new_id = 0;

				if (!ended && p != sr.last_branch)
					continue;	/* not reached */
				if (!ended && key_cmp(sr.max_t[p], sr.max_id[p], new_t, new_id) < 0)
				{
					new_t = sr.max_t[p];
					new_id = sr.max_id[p];
				}
				if (sr.unleased[p])
				{
					any_unleased = true;
					if (key_cmp(sr.unl_t[p], sr.unl_id[p] - 1, new_t, new_id) < 0)
					{
						new_t = sr.unl_t[p];
						new_id = sr.unl_id[p] - 1;
					}
				}
				if (full)
				{
					cur->run_at[p] = new_t;
					cur->id[p] = new_id;
					cur->full_at[p] = m0;
				}
				else if (key_cmp(new_t, new_id, cur->run_at[p], cur->id[p]) > 0)
				{
					cur->run_at[p] = new_t;
					cur->id[p] = new_id;
				}
			}
		}
		else
		{
			for (int p = 0; p < HS_NUM_PRIORITIES; p++)
				any_unleased |= sr.unleased[p];
		}
		LWLockRelease(hs_shared->cursor_lock);
		if (any_unleased)
			hs_claim_note_reset_at_end(queue);
	}

	return total;
}

/* ------------------------------------------------------------------------
 * The cursors, for claim_cursors(): diagnostics and tests.  rewound_at is
 * when the last scan of the priority from its head to its end began.
 * ------------------------------------------------------------------------ */
void
hs_claim_cursors_report(ReturnSetInfo *rsinfo)
{
	HASH_SEQ_STATUS status;
	ClaimCursor *c;
	int64		mono = hs_clock_usec();
	TimestampTz wall = GetCurrentTimestamp();

	LWLockAcquire(hs_shared->cursor_lock, LW_SHARED);
	hash_seq_init(&status, cursor_hash);
	while ((c = hash_seq_search(&status)) != NULL)
	{
		for (int p = 0; p < HS_NUM_PRIORITIES; p++)
		{
			Datum		out[5];
			bool		nulls[5] = {false};

			out[0] = CStringGetTextDatum(c->queue);
			out[1] = Int16GetDatum((int16) (p + HS_PRIORITY_MIN));
			if (TIMESTAMP_IS_NOBEGIN(c->run_at[p]))
				nulls[2] = nulls[3] = true;
			else
			{
				out[2] = TimestampTzGetDatum(c->run_at[p]);
				out[3] = Int64GetDatum(c->id[p]);
			}
			if (c->full_at[p] == 0)
				nulls[4] = true;
			else
				out[4] = TimestampTzGetDatum(wall - (mono - c->full_at[p]));
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, out, nulls);
		}
	}
	LWLockRelease(hs_shared->cursor_lock);
}
