/*-------------------------------------------------------------------------
 *
 * claim.c
 *		The pull API: claim, heartbeat, complete, fail, requeue_expired; and
 *		the claim cursors that keep claims fast when dead rows pile up.
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
 *		src/claim.c
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

#include "hasched.h"

PG_FUNCTION_INFO_V1(hasched_claim);
PG_FUNCTION_INFO_V1(hasched_heartbeat);
PG_FUNCTION_INFO_V1(hasched_complete);
PG_FUNCTION_INFO_V1(hasched_complete_many);
PG_FUNCTION_INFO_V1(hasched_fail);
PG_FUNCTION_INFO_V1(hasched_requeue_expired);
PG_FUNCTION_INFO_V1(hasched_claim_cursors);

#define MAX_CLAIM_BATCH		10000
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
	HASHCTL		info;

	memset(&info, 0, sizeof(info));
	info.keysize = HS_QUEUE_NAME_MAX;
	info.entrysize = sizeof(ClaimCursor);
	cursor_hash = ShmemInitHash("hasched claim cursors",
								hs_max_queues, hs_max_queues,
								&info, HASH_ELEM | HASH_STRINGS);
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

/* Register this transaction as one that makes jobs claimable. */
void
hs_writer_note(void)
{
	if (writer_registered || hs_shared == NULL || MyProc == NULL)
		return;
	pg_atomic_write_u64(&hs_shared->writer_since[MyProc->pgprocno],
						(uint64) GetCurrentTimestamp());
	pg_memory_barrier();
	writer_registered = true;
}

static void
writer_clear(void)
{
	if (!writer_registered)
		return;
	pg_atomic_write_u64(&hs_shared->writer_since[MyProc->pgprocno], 0);
	writer_registered = false;
}

static void
claim_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			reset_noted_queues();
			hs_wake_after_commit(false);
			hs_executor_cancels_at_end(false);
			writer_clear();
			n_noted_queues = 0;
			noted_overflow = false;
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			hs_wake_after_commit(true);
			hs_executor_cancels_at_end(true);
			/* FALLTHROUGH */
		case XACT_EVENT_PREPARE:
			hs_executor_cancels_at_end(false);
			writer_clear();
			n_noted_queues = 0;
			noted_overflow = false;
			break;
		default:
			break;
	}
}

static void
claim_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
		reset_noted_queues();
}

void
hs_claim_xact_callback_init(void)
{
	RegisterXactCallback(claim_xact_callback, NULL);
	RegisterSubXactCallback(claim_subxact_callback, NULL);
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
	appendStringInfoString(&sql,
						   " LIMIT $3),"
						   " u AS (UPDATE hasched.job j"
						   " SET state = 'running', attempt = j.attempt + 1,"
						   " epoch = (SELECT max(e.epoch) FROM hasched.epoch e),"
						   " lease_id = nextval('hasched.lease_id_seq'),"
						   " lease_until = $2 + $4 + CASE WHEN $6 THEN j.timeout ELSE interval '0' END,"
						   " worker = $5, started_at = $2,"
						   " finished_at = NULL"
						   " WHERE j.ctid = ANY (ARRAY(SELECT c.ctid FROM c))"
						   " RETURNING j.id, j.epoch, j.attempt, j.lease_id, j.payload,"
						   " j.priority, j.tenant, j.timeout, j.lease_until, j.run_at, j.owner)"
						   " SELECT * FROM u ORDER BY priority, run_at, id");
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

Datum
hasched_claim(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *queue;
	char	   *worker;
	int32		max_jobs;
	Interval   *lease = NULL;
	HsPrivileged priv;
	uint64		total;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("queue, worker and max_jobs must not be null")));
	queue = text_to_cstring(PG_GETARG_TEXT_PP(0));
	worker = text_to_cstring(PG_GETARG_TEXT_PP(1));
	max_jobs = PG_GETARG_INT32(2);
	hs_check_text_arg("worker", worker, 200);
	if (max_jobs < 1 || max_jobs > MAX_CLAIM_BATCH)
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("max_jobs must be between 1 and %d, not %d", MAX_CLAIM_BATCH, max_jobs)));
	if (!PG_ARGISNULL(3))
	{
		lease = PG_GETARG_INTERVAL_P(3);
		if (hs_interval_usec(lease) <= 0)
			ereport(ERROR,
					(errcode(HS_ERRCODE_INVALID_ARGUMENT),
					 errmsg("lease must be positive")));
	}
	hs_require_primary("claim jobs");

	InitMaterializedSRF(fcinfo, 0);

	hs_privileged_enter(&priv);
	SPI_connect();

	total = hs_claim_jobs(queue, worker, max_jobs, lease, "pull", false);
	for (uint64 i = 0; i < total; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		Datum		out[8];
		bool		nulls[8] = {false};
		bool		isnull;
		int32		epoch = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
		int32		attempt = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
		int64		lease_id = DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull));

		out[0] = SPI_getbinval(tup, desc, 1, &isnull);
		out[1] = CStringGetTextDatum(hs_format_token(epoch, attempt, lease_id));
		out[2] = SPI_getbinval(tup, desc, 5, &isnull);
		out[3] = Int32GetDatum(attempt);
		out[4] = SPI_getbinval(tup, desc, 6, &isnull);
		out[5] = SPI_getbinval(tup, desc, 7, &isnull);
		out[6] = SPI_getbinval(tup, desc, 8, &isnull);
		out[7] = SPI_getbinval(tup, desc, 9, &isnull);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, out, nulls);
	}

	SPI_finish();
	hs_privileged_leave(&priv);
	return (Datum) 0;
}

/* ------------------------------------------------------------------------
 * Reports from workers: heartbeat, complete, fail
 * ------------------------------------------------------------------------ */


static void
read_lease(FunctionCallInfo fcinfo, HsLease *lease)
{
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("job_id and token must not be null")));
	lease->job_id = PG_GETARG_INT64(0);
	lease->token = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (!hs_parse_token(lease->token, &lease->epoch, &lease->attempt, &lease->lease_id))
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("malformed lease token \"%s\"", lease->token),
				 errhint("Pass the token that claim() returned with the job, of the form epoch:attempt:lease.")));
}

static void
lease_params(const HsLease *lease, Datum *values)
{
	values[0] = Int64GetDatum(lease->job_id);
	values[1] = Int32GetDatum(lease->epoch);
	values[2] = Int32GetDatum(lease->attempt);
	values[3] = Int64GetDatum(lease->lease_id);
}

/*
 * The row of a lease: found by id (the primary key).  The state is compared
 * as text so that the planner cannot use job_active_idx, the partial index
 * of running jobs, instead: after an ANALYZE that saw no running job it
 * would, and walk every running job (and, under an old snapshot, every dead
 * entry) for each report.
 */
#define LEASE_MATCH \
	" id = $1 AND state::text = 'running' AND epoch = $2 AND attempt = $3 AND lease_id = $4"

/*
 * Called when a report matched no row: say why, and change nothing.  The
 * current lease token is not shown: it is what would let another worker
 * report for the job.
 */
static void
stale_lease(const HsLease *lease, const char *what)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[1];

	if (plan == NULL)
	{
		Oid			types[1] = {INT8OID};

		plan = hs_prepare("SELECT state::text FROM hasched.job WHERE id = $1", 1, types);
	}
	values[0] = Int64GetDatum(lease->job_id);
	if (SPI_execute_plan(plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "hasched: reading job failed");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(HS_ERRCODE_UNKNOWN_JOB),
				 errmsg("job %lld does not exist", (long long) lease->job_id)));
	ereport(ERROR,
			(errcode(HS_ERRCODE_STALE_LEASE),
			 errmsg("stale lease token %s for job %lld", lease->token, (long long) lease->job_id),
			 errdetail("The job is %s and that token is not its current lease; the %s was not recorded.",
					   SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), what),
			 errhint("The lease expired, or the job was cancelled or given to another worker: drop this attempt's result.")));
}

Datum
hasched_heartbeat(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	HsLease		lease;
	HsPrivileged priv;
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	TimestampTz until;
	bool		isnull;

	read_lease(fcinfo, &lease);
	if (!PG_ARGISNULL(2) && hs_interval_usec(PG_GETARG_INTERVAL_P(2)) <= 0)
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("lease must be positive")));
	hs_require_primary("record a heartbeat");

	hs_privileged_enter(&priv);
	SPI_connect();
	if (plan == NULL)
	{
		Oid			types[5] = {INT8OID, INT4OID, INT4OID, INT8OID, INTERVALOID};

		plan = hs_prepare("UPDATE hasched.job j SET lease_until = clock_timestamp() +"
						  " coalesce($5, (SELECT q.lease FROM hasched.queue q WHERE q.name = j.queue),"
						  " interval '30 seconds')"
						  " WHERE" LEASE_MATCH " RETURNING lease_until", 5, types);
	}
	lease_params(&lease, values);
	if (PG_ARGISNULL(2))
	{
		values[4] = (Datum) 0;
		nulls[4] = 'n';
	}
	else
		values[4] = PG_GETARG_DATUM(2);
	if (SPI_execute_plan(plan, values, nulls, false, 1) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "hasched: heartbeat failed");
	if (SPI_processed == 0)
		stale_lease(&lease, "heartbeat");
	until = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
											  SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	hs_privileged_leave(&priv);
	PG_RETURN_TIMESTAMPTZ(until);
}

/*
 * Record the success of the lease's attempt; false when the lease is not
 * the job's current one (nothing changed).  Inside SPI, as the owner.
 */
bool
hs_report_complete(const HsLease *lease, Datum result, bool result_null)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

	if (plan == NULL)
	{
		Oid			types[5] = {INT8OID, INT4OID, INT4OID, INT8OID, JSONBOID};

		plan = hs_prepare("UPDATE hasched.job"
						  " SET state = 'succeeded', finished_at = clock_timestamp(),"
						  " result = $5, lease_until = NULL, last_error = NULL"
						  " WHERE" LEASE_MATCH, 5, types);
	}
	lease_params(lease, values);
	values[4] = result;
	if (result_null)
		nulls[4] = 'n';
	if (SPI_execute_plan(plan, values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "hasched: complete failed");
	return SPI_processed > 0;
}

Datum
hasched_complete(PG_FUNCTION_ARGS)
{
	HsLease		lease;
	HsPrivileged priv;

	read_lease(fcinfo, &lease);
	hs_require_primary("complete a job");

	hs_privileged_enter(&priv);
	SPI_connect();
	if (!hs_report_complete(&lease, PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2),
							PG_ARGISNULL(2)))
		stale_lease(&lease, "completion");
	SPI_finish();
	hs_privileged_leave(&priv);
	PG_RETURN_VOID();
}

/*
 * complete(job_ids[], tokens[], results[]): record many successes in one
 * statement.  All or nothing: if any token is stale, none is recorded and
 * the error names the stale jobs, so the worker can complete the others
 * one by one.
 */
Datum
hasched_complete_many(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	HsPrivileged priv;
	ArrayType  *ids_arr;
	ArrayType  *tok_arr;
	Datum	   *ids;
	Datum	   *toks;
	bool	   *id_nulls;
	bool	   *tok_nulls;
	int			n;
	int			ntok;
	Datum	   *epochs;
	Datum	   *attempts;
	Datum	   *leases;
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	uint64		done;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("job_ids and tokens must not be null")));
	ids_arr = PG_GETARG_ARRAYTYPE_P(0);
	tok_arr = PG_GETARG_ARRAYTYPE_P(1);
	deconstruct_array(ids_arr, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &ids, &id_nulls, &n);
	deconstruct_array(tok_arr, TEXTOID, -1, false, TYPALIGN_INT, &toks, &tok_nulls, &ntok);
	if (n != ntok)
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("%d job ids given with %d tokens", n, ntok),
				 errhint("Pass the job ids and tokens that claim() returned, in pairs.")));
	if (!PG_ARGISNULL(2) && ArrayGetNItems(ARR_NDIM(PG_GETARG_ARRAYTYPE_P(2)),
										   ARR_DIMS(PG_GETARG_ARRAYTYPE_P(2))) != n)
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("results must have one element per job id, or be null")));
	epochs = palloc(sizeof(Datum) * (n + 1));
	attempts = palloc(sizeof(Datum) * (n + 1));
	leases = palloc(sizeof(Datum) * (n + 1));
	for (int i = 0; i < n; i++)
	{
		int32		e,
					a;
		int64		l;
		char	   *t;

		if (id_nulls[i] || tok_nulls[i])
			ereport(ERROR,
					(errcode(HS_ERRCODE_INVALID_ARGUMENT),
					 errmsg("job id and token %d must not be null", i + 1)));
		t = TextDatumGetCString(toks[i]);
		if (!hs_parse_token(t, &e, &a, &l))
			ereport(ERROR,
					(errcode(HS_ERRCODE_INVALID_ARGUMENT),
					 errmsg("malformed lease token \"%s\"", t),
					 errhint("Pass the token that claim() returned with the job, of the form epoch:attempt:lease.")));
		epochs[i] = Int32GetDatum(e);
		attempts[i] = Int32GetDatum(a);
		leases[i] = Int64GetDatum(l);
	}
	hs_require_primary("complete jobs");
	if (n == 0)
		PG_RETURN_INT32(0);

	hs_privileged_enter(&priv);
	SPI_connect();
	if (plan == NULL)
	{
		Oid			types[5] = {INT8ARRAYOID, INT4ARRAYOID, INT4ARRAYOID, INT8ARRAYOID, JSONBARRAYOID};

		plan = hs_prepare("WITH i AS (SELECT * FROM unnest($1, $2, $3, $4, $5)"
						  "   AS i (id, epoch, attempt, lease_id, result))"
						  " UPDATE hasched.job j"
						  " SET state = 'succeeded', finished_at = clock_timestamp(),"
						  " result = i.result, lease_until = NULL, last_error = NULL"
						  " FROM i WHERE j.id = i.id AND j.state::text = 'running' AND j.epoch = i.epoch"
						  " AND j.attempt = i.attempt AND j.lease_id = i.lease_id"
						  " RETURNING j.id", 5, types);
	}
	values[0] = PointerGetDatum(ids_arr);
	values[1] = PointerGetDatum(construct_array(epochs, n, INT4OID, 4, true, TYPALIGN_INT));
	values[2] = PointerGetDatum(construct_array(attempts, n, INT4OID, 4, true, TYPALIGN_INT));
	values[3] = PointerGetDatum(construct_array(leases, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	if (PG_ARGISNULL(2))
	{
		values[4] = (Datum) 0;
		nulls[4] = 'n';
	}
	else
		values[4] = PG_GETARG_DATUM(2);
	if (SPI_execute_plan(plan, values, nulls, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "hasched: complete failed");
	done = SPI_processed;
	if (done < (uint64) n)
	{
		/* name the stale ones (not among those recorded); the error rolls back the others */
		StringInfoData stale;
		int			nstale = 0;

		initStringInfo(&stale);
		for (int i = 0; i < n; i++)
		{
			int64		id = DatumGetInt64(ids[i]);
			bool		recorded = false;

			for (uint64 k = 0; k < done && !recorded; k++)
			{
				bool		isnull;

				recorded = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[k],
													   SPI_tuptable->tupdesc, 1, &isnull)) == id;
			}
			if (!recorded && nstale++ < 20)
				appendStringInfo(&stale, "%s%lld", stale.len ? ", " : "", (long long) id);
		}
		ereport(ERROR,
				(errcode(HS_ERRCODE_STALE_LEASE),
				 errmsg("stale lease tokens for %d of %d jobs", n - (int) done, n),
				 errdetail("Jobs with a stale token: %s%s. Nothing was recorded.",
						   stale.data, nstale > 20 ? ", ..." : ""),
				 errhint("Complete the other jobs again without those; their leases expired, or they were cancelled or given to another worker.")));
	}
	SPI_finish();
	hs_privileged_leave(&priv);
	PG_RETURN_INT32((int32) done);
}

/*
 * The SQL that ends an attempt as failed: another attempt after backoff
 * while attempts remain and `retry` holds, else dead; a run row records the
 * attempt.  Shared by fail() and requeue_expired(), which differ in the row
 * filter, whether to retry, the error text and the outcome recorded.
 */
static char *
end_attempt_sql(const char *filter, const char *retry, const char *error,
				const char *outcome)
{
	return psprintf("WITH u AS (UPDATE hasched.job j SET"
					" state = CASE WHEN %s AND j.attempt < j.max_attempts"
					"   THEN 'failed'::hasched.job_state ELSE 'dead'::hasched.job_state END,"
					" run_at = CASE WHEN %s AND j.attempt < j.max_attempts"
					"   THEN clock_timestamp() + hasched.backoff_delay(j.attempt,"
					"     coalesce((SELECT q.backoff_base FROM hasched.queue q WHERE q.name = j.queue), interval '1 second'),"
					"     coalesce((SELECT q.backoff_max FROM hasched.queue q WHERE q.name = j.queue), interval '1 hour'),"
					"     random()) ELSE j.run_at END,"
					" finished_at = CASE WHEN %s AND j.attempt < j.max_attempts"
					"   THEN NULL ELSE clock_timestamp() END,"
					" last_error = %s, lease_until = NULL"
					" WHERE %s"
					" RETURNING j.id, j.attempt, j.epoch, j.lease_id, j.worker, j.started_at,"
					" j.state, j.last_error)"
					" INSERT INTO hasched.job_run (job_id, attempt, epoch, lease_id, worker,"
					" started_at, outcome, error)"
					" SELECT id, attempt, epoch, lease_id, worker, started_at, '%s', last_error FROM u"
					" RETURNING (SELECT u.state FROM u WHERE u.id = job_id)",
					retry, retry, retry, error, filter, outcome);
}

/*
 * Record a failed attempt of the lease: retried after backoff (when retry
 * and attempts remain) or dead.  Returns the new state (an enum Datum), or
 * (Datum) 0 when the lease is not the job's current one.
 */
Datum
hs_report_fail(const HsLease *lease, const char *error, bool retry)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[6];
	bool		isnull;

	if (plan == NULL)
	{
		Oid			types[6] = {INT8OID, INT4OID, INT4OID, INT8OID, TEXTOID, BOOLOID};

		plan = hs_prepare(end_attempt_sql("j.id = $1 AND j.state::text = 'running' AND j.epoch = $2"
										  " AND j.attempt = $3 AND j.lease_id = $4",
										  "$6", "$5", "failed"),
						  6, types);
	}
	lease_params(lease, values);
	values[4] = CStringGetTextDatum(error);
	values[5] = BoolGetDatum(retry);
	if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "hasched: fail failed");
	if (SPI_processed == 0)
		return (Datum) 0;
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
}

Datum
hasched_fail(PG_FUNCTION_ARGS)
{
	HsLease		lease;
	HsPrivileged priv;
	char	   *error;
	bool		retry;
	Datum		state;

	read_lease(fcinfo, &lease);
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("error must not be null"),
				 errhint("Say why the attempt failed; it is kept in last_error and the run history.")));
	error = text_to_cstring(PG_GETARG_TEXT_PP(2));
	retry = PG_ARGISNULL(3) ? true : PG_GETARG_BOOL(3);
	hs_require_primary("fail a job");

	hs_privileged_enter(&priv);
	SPI_connect();
	state = hs_report_fail(&lease, error, retry);
	if (state == (Datum) 0)
		stale_lease(&lease, "failure");
	SPI_finish();
	hs_privileged_leave(&priv);
	PG_RETURN_DATUM(state);
}

Datum
hasched_requeue_expired(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	HsPrivileged priv;
	uint64		n;

	hs_require_primary("requeue expired leases");

	hs_privileged_enter(&priv);
	SPI_connect();
	if (plan == NULL)
		plan = hs_prepare(end_attempt_sql("j.ctid = ANY (ARRAY(SELECT x.ctid FROM hasched.job x"
										  " WHERE x.state = 'running'"
										  " AND x.lease_until < clock_timestamp()"
										  " FOR UPDATE SKIP LOCKED))",
										  "true",
										  "'lease expired at ' || j.lease_until::text",
										  "lease_expired"),
						  0, NULL);
	if (SPI_execute_plan(plan, NULL, NULL, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "hasched: requeue failed");
	n = SPI_processed;
	SPI_finish();
	hs_privileged_leave(&priv);
	PG_RETURN_INT32((int32) n);
}

/* ------------------------------------------------------------------------
 * claim_cursors(): what the cursors are, for diagnostics and tests
 * ------------------------------------------------------------------------ */
Datum
hasched_claim_cursors(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HASH_SEQ_STATUS status;
	ClaimCursor *c;

	InitMaterializedSRF(fcinfo, 0);
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
	return (Datum) 0;
}
