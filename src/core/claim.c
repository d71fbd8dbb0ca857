/*-------------------------------------------------------------------------
 *
 * claim.c
 *		The claim path (shared by the pull API and the executors) and the
 *		claim cursors that keep claims fast when dead rows pile up.
 *
 * Why cursors.  A claim takes the first waiting jobs of a queue from the
 * partial index job_waiting_idx (queue, priority, run_at, id).  Each claim
 * leaves a dead index entry behind.  VACUUM removes them, but not while any
 * session holds an old snapshot: then every claim that starts at the head
 * of the index walks all of them, and a queue slows down by the minute.
 * So each (queue, priority) has a cursor in shared memory, the key of the
 * last job known to be taken, and claims start after it.
 *
 * A cursor may only pass a job that is claimed.  Three things could put a
 * claimable job behind one:
 *  - a transaction that makes a job claimable and commits late.  Such a
 *    transaction first registers in writer_since (hs_writer_note, from the
 *    state trigger), and the trigger keeps run_at >= the time it registered.
 *    A claim reads the clock, then the registry, then takes its snapshot,
 *    and never moves a cursor past the earliest registered time: whatever
 *    commits after its snapshot is at or after that bound.
 *  - a job skipped by SKIP LOCKED whose locker then rolls back.  claim() and
 *    cancel() note the queues whose jobs they lock; if their (sub)transaction
 *    aborts, those queues' cursors are reset.
 *  - anything else (a user's SELECT ... FOR UPDATE rolled back, a prepared
 *    transaction rolled back, a clock step backwards): every
 *    hasched.claim_rewind_interval, one claim per (queue, priority) starts
 *    from the head again; while such rescans are slow they are spaced to
 *    at least 20 times their duration.
 *
 * IDENTIFICATION
 *		src/core/claim.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "core/hasched.h"

#define REWIND_COST_FACTOR	20

typedef struct ClaimCursor
{
	char		queue[HS_QUEUE_NAME_MAX];	/* hash key */
	uint64		generation;		/* bumped by every reset */
	TimestampTz run_at[HS_NUM_PRIORITIES];	/* (run_at, id): last key passed */
	int64		id[HS_NUM_PRIORITIES];
	TimestampTz next_rewind[HS_NUM_PRIORITIES];
	TimestampTz rewound_at[HS_NUM_PRIORITIES];
} ClaimCursor;

static HTAB *cursor_hash = NULL;

/* this backend's registration state */
static bool writer_registered = false;
static TimestampTz writer_since = 0;	/* when it registered */
#define MAX_NOTED_QUEUES 8
static char noted_queues[MAX_NOTED_QUEUES][HS_QUEUE_NAME_MAX];
static int	n_noted_queues = 0;
static bool noted_overflow = false;

Size
hs_cursor_shmem_size(void)
{
	return hash_estimate_size(hs_max_queues, sizeof(ClaimCursor));
}

void
hs_cursor_shmem_init(void)
{
	cursor_hash = hs_shmem_hash("hasched claim cursors", hs_max_queues,
								HS_QUEUE_NAME_MAX, sizeof(ClaimCursor));
}

static void
cursor_reset(ClaimCursor *c)
{
	c->generation++;
	for (int p = 0; p < HS_NUM_PRIORITIES; p++)
	{
		TIMESTAMP_NOBEGIN(c->run_at[p]);
		c->id[p] = 0;
	}
}

/* Find (or, with create, make) the cursor of a queue; lock held by caller. */
static ClaimCursor *
cursor_lookup(const char *queue, bool create)
{
	char		key[HS_QUEUE_NAME_MAX];
	ClaimCursor *c;
	bool		found;

	memset(key, 0, sizeof(key));
	strlcpy(key, queue, sizeof(key));
	c = hash_search(cursor_hash, key, create ? HASH_ENTER_NULL : HASH_FIND, &found);
	if (c != NULL && !found)
	{
		c->generation = 0;
		cursor_reset(c);
		for (int p = 0; p < HS_NUM_PRIORITIES; p++)
		{
			c->next_rewind[p] = 0;
			c->rewound_at[p] = 0;
		}
	}
	return c;
}

static void
reset_noted_queues(void)
{
	if (n_noted_queues == 0 && !noted_overflow)
		return;
	LWLockAcquire(hs_shared->cursor_lock, LW_EXCLUSIVE);
	if (noted_overflow)
	{
		HASH_SEQ_STATUS status;
		ClaimCursor *c;

		hash_seq_init(&status, cursor_hash);
		while ((c = hash_seq_search(&status)) != NULL)
			cursor_reset(c);
	}
	else
	{
		for (int i = 0; i < n_noted_queues; i++)
		{
			ClaimCursor *c = cursor_lookup(noted_queues[i], false);

			if (c)
				cursor_reset(c);
		}
	}
	LWLockRelease(hs_shared->cursor_lock);
}

/*
 * This transaction is about to lock waiting jobs of queue: if it rolls
 * back, those jobs must be found again.
 */
void
hs_claim_note_locked(const char *queue)
{
	for (int i = 0; i < n_noted_queues; i++)
		if (strcmp(noted_queues[i], queue) == 0)
			return;
	if (n_noted_queues < MAX_NOTED_QUEUES)
		strlcpy(noted_queues[n_noted_queues++], queue, HS_QUEUE_NAME_MAX);
	else
		noted_overflow = true;
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

/*
 * End of the transaction (wakeup.c's callback calls this): a rolled-back
 * claim or cancel may have skipped jobs it had locked, so their queues'
 * cursors go back to the head; the writer registration ends either way.
 */
void
hs_claim_xact_end(bool committed)
{
	if (!committed)
		reset_noted_queues();
	writer_clear();
	n_noted_queues = 0;
	noted_overflow = false;
}

/* A subtransaction rolled back: as for a transaction, for its queues. */
void
hs_claim_subxact_abort(void)
{
	reset_noted_queues();
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
 * claim()
 * ------------------------------------------------------------------------ */

#define CLAIM_FIXED_ARGS 6

static SPIPlanPtr
claim_plan(void)
{
	static SPIPlanPtr plan = NULL;
	StringInfoData sql;
	Oid			types[CLAIM_FIXED_ARGS + 2 * HS_NUM_PRIORITIES];

	if (plan != NULL)
		return plan;

	types[0] = TEXTOID;			/* queue */
	types[1] = TIMESTAMPTZOID;	/* now */
	types[2] = INT4OID;			/* limit */
	types[3] = INTERVALOID;		/* lease */
	types[4] = TEXTOID;			/* worker */
	types[5] = BOOLOID;			/* lease also covers the job's timeout */
	initStringInfo(&sql);
	appendStringInfoString(&sql, "WITH c AS MATERIALIZED (");
	for (int p = 0; p < HS_NUM_PRIORITIES; p++)
	{
		int			a = CLAIM_FIXED_ARGS + 2 * p;

		types[a] = TIMESTAMPTZOID;
		types[a + 1] = INT8OID;
		appendStringInfo(&sql,
						 "%s SELECT * FROM (SELECT ctid FROM hasched.job"
						 " WHERE queue = $1 AND priority = %d"
						 " AND state IN ('scheduled', 'pending', 'failed')"
						 " AND run_at <= $2 AND (run_at, id) > ($%d, $%d)"
						 " ORDER BY run_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) a%d",
						 p == 0 ? "" : " UNION ALL", p + HS_PRIORITY_MIN,
						 a + 1, a + 2, p);
	}
	appendStringInfo(&sql, " LIMIT $3), u AS (%s)"
					 " SELECT * FROM u ORDER BY priority, run_at, id",
					 hs_lease_update_sql());
	plan = hs_prepare(sql.data, CLAIM_FIXED_ARGS + 2 * HS_NUM_PRIORITIES, types);
	pfree(sql.data);
	return plan;
}

typedef struct QueueInfo
{
	char	   *transport;
	int32		concurrency;
	Interval   *lease;
	char	   *mode;
} QueueInfo;

static bool
load_queue(const char *queue, QueueInfo *info)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[1];
	bool		isnull;
	HeapTuple	tup;
	TupleDesc	desc;

	if (plan == NULL)
	{
		Oid			types[1] = {TEXTOID};

		plan = hs_prepare("SELECT q.transport, q.concurrency, q.lease, s.mode"
						  " FROM hasched.queue q, hasched.state s WHERE q.name = $1",
						  1, types);
	}
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
	return true;
}

/*
 * How many jobs the queue's concurrency limit still allows.  Claims on a
 * limited queue serialise on an advisory lock held to the end of their
 * transaction; the count is a separate statement, so that its snapshot is
 * taken after the lock and sees the jobs the previous holder claimed.
 */
static int
concurrency_room(const char *queue, int32 concurrency)
{
	static SPIPlanPtr lock_plan = NULL;
	static SPIPlanPtr count_plan = NULL;
	Datum		values[1];
	bool		isnull;
	int64		running;

	if (lock_plan == NULL)
	{
		Oid			types[1] = {TEXTOID};

		lock_plan = hs_prepare("SELECT pg_advisory_xact_lock(1212374856, hashtext($1))",
							   1, types);
		count_plan = hs_prepare("SELECT count(*) FROM hasched.job"
								" WHERE queue = $1 AND state IN ('running', 'dispatched')",
								1, types);
	}
	values[0] = CStringGetTextDatum(queue);
	if (SPI_execute_plan(lock_plan, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "hasched: locking queue \"%s\" failed", queue);
	if (SPI_execute_plan(count_plan, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "hasched: counting running jobs failed");
	running = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										  SPI_tuptable->tupdesc, 1, &isnull));
	return running >= concurrency ? 0 : (int) (concurrency - running);
}

/*
 * Lease up to max_jobs due jobs of queue to worker; the caller is connected
 * to SPI and runs as the extension owner.  The claimed rows are left in
 * SPI_tuptable, in claim order (columns: see claim_plan's RETURNING), and
 * their number is returned.  A queue whose transport is not `transport` is
 * refused; in paused mode nothing is claimed.  lease NULL: the queue's.
 * With lease_plus_timeout each lease also covers the job's timeout (the
 * executors run SQL jobs without heartbeats).
 */
uint64
hs_claim_jobs(const char *queue, const char *worker, int max_jobs,
			  Interval *lease, const char *transport, bool lease_plus_timeout)
{
	QueueInfo	qi;
	int			n;
	TimestampTz t0;
	TimestampTz bound;
	ClaimCursor *cur;
	uint64		generation = 0;
	bool		have_cursor = false;
	bool		rewinding[HS_NUM_PRIORITIES];
	TimestampTz start_t[HS_NUM_PRIORITIES];
	int64		start_id[HS_NUM_PRIORITIES];
	int			claimed[HS_NUM_PRIORITIES];
	TimestampTz max_t[HS_NUM_PRIORITIES];
	int64		max_id[HS_NUM_PRIORITIES];
	Datum		values[CLAIM_FIXED_ARGS + 2 * HS_NUM_PRIORITIES];
	int			rc;
	uint64		total;

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
	if (strcmp(qi.mode, "paused") == 0)
		return 0;
	if (lease == NULL)
		lease = qi.lease;

	n = max_jobs;
	if (qi.concurrency > 0)
		n = Min(n, concurrency_room(queue, qi.concurrency));
	if (n <= 0)
		return 0;

	hs_claim_note_locked(queue);
	/* clock, then registry, then (in SPI_execute_plan) the snapshot */
	t0 = GetCurrentTimestamp();
	bound = writer_bound(t0);

	LWLockAcquire(hs_shared->cursor_lock, LW_EXCLUSIVE);
	cur = cursor_lookup(queue, true);
	for (int p = 0; p < HS_NUM_PRIORITIES; p++)
	{
		rewinding[p] = true;
		TIMESTAMP_NOBEGIN(start_t[p]);
		start_id[p] = 0;
		if (cur == NULL)
			continue;
		if (t0 < cur->next_rewind[p])
		{
			rewinding[p] = false;
			start_t[p] = cur->run_at[p];
			start_id[p] = cur->id[p];
		}
		else
		{
			/* this claim rescans; hold others off until it reports */
			cur->next_rewind[p] = t0 + (int64) hs_claim_rewind_interval * 1000;
		}
	}
	if (cur != NULL)
	{
		generation = cur->generation;
		have_cursor = true;
	}
	LWLockRelease(hs_shared->cursor_lock);

	values[0] = CStringGetTextDatum(queue);
	values[1] = TimestampTzGetDatum(t0);
	values[2] = Int32GetDatum(n);
	values[3] = IntervalPGetDatum(lease);
	values[4] = CStringGetTextDatum(worker);
	values[5] = BoolGetDatum(lease_plus_timeout);
	for (int p = 0; p < HS_NUM_PRIORITIES; p++)
	{
		values[CLAIM_FIXED_ARGS + 2 * p] = TimestampTzGetDatum(start_t[p]);
		values[CLAIM_FIXED_ARGS + 2 * p + 1] = Int64GetDatum(start_id[p]);
		claimed[p] = 0;
	}

	rc = SPI_execute_plan(claim_plan(), values, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "hasched: claim failed: %s", SPI_result_code_string(rc));
	total = SPI_processed;

	for (uint64 i = 0; i < total; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		int			p = DatumGetInt16(SPI_getbinval(tup, desc, 6, &isnull)) - HS_PRIORITY_MIN;
		TimestampTz run_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 10, &isnull));

		if (claimed[p] == 0 || key_cmp(run_at, id, max_t[p], max_id[p]) > 0)
		{
			max_t[p] = run_at;
			max_id[p] = id;
		}
		claimed[p]++;
	}

	/*
	 * Move the cursors.  With fewer jobs than asked for, every priority was
	 * scanned to its end; otherwise the scan ended inside the last priority
	 * that gave jobs, and the ones after it were not reached.  Under a
	 * transaction snapshot the scan did not see what committed since the
	 * transaction began, so nothing moves.
	 */
	if (have_cursor && !IsolationUsesXactSnapshot())
	{
		int			last = -1;
		TimestampTz now = GetCurrentTimestamp();
		int64		elapsed = now - t0;

		if ((int) total >= n)
			for (int p = 0; p < HS_NUM_PRIORITIES; p++)
				if (claimed[p] > 0)
					last = p;

		LWLockAcquire(hs_shared->cursor_lock, LW_EXCLUSIVE);
		cur = cursor_lookup(queue, false);
		if (cur != NULL && cur->generation == generation)
		{
			for (int p = 0; p < HS_NUM_PRIORITIES; p++)
			{
				bool		exhausted = (int) total < n || p < last;
				TimestampTz new_t = bound;
				int64		new_id = 0;

				if (!exhausted && p != last)
					continue;	/* not reached */
				if (!exhausted &&
					key_cmp(max_t[p], max_id[p], new_t, new_id) < 0)
				{
					new_t = max_t[p];
					new_id = max_id[p];
				}
				if (rewinding[p])
				{
					cur->run_at[p] = new_t;
					cur->id[p] = new_id;
					cur->rewound_at[p] = now;
					cur->next_rewind[p] = now +
						Max((int64) hs_claim_rewind_interval * 1000,
							REWIND_COST_FACTOR * elapsed);
				}
				else if (key_cmp(new_t, new_id, cur->run_at[p], cur->id[p]) > 0)
				{
					cur->run_at[p] = new_t;
					cur->id[p] = new_id;
				}
			}
		}
		LWLockRelease(hs_shared->cursor_lock);
	}

	return total;
}

/* ------------------------------------------------------------------------
 * The cursors, for claim_cursors(): diagnostics and tests
 * ------------------------------------------------------------------------ */
void
hs_claim_cursors_report(ReturnSetInfo *rsinfo)
{
	HASH_SEQ_STATUS status;
	ClaimCursor *c;

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
			if (c->rewound_at[p] == 0)
				nulls[4] = true;
			else
				out[4] = TimestampTzGetDatum(c->rewound_at[p]);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, out, nulls);
		}
	}
	LWLockRelease(hs_shared->cursor_lock);
}
