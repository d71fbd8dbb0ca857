/*-------------------------------------------------------------------------
 *
 * metrics.c
 *		The figures that GET /metrics and health() show of the jobs, kept in
 *		shared memory so that the health listener (no database connection)
 *		can answer without a query:
 *
 *		- counters of job transitions (submitted, started, succeeded,
 *		  failed, dead, cancelled) and a histogram of the delay from a job
 *		  being due to its attempt starting: counted by the job state
 *		  trigger (job_state.c), which sees every transition, in the
 *		  backend's memory, and added to shared atomics when the
 *		  transaction commits (wakeup.c's callbacks call
 *		  hs_metrics_xact_end; a PREPARE counts too, as for quotas, even
 *		  if the prepared transaction is rolled back later); a
 *		  subtransaction that aborts takes back what it counted.  Refused submits (quota, rate, read-only) and
 *		  the epochs the scheduler opens are counted at once;
 *		- the figures the scheduler counts every hasched.stats_interval
 *		  (hs_figures_count_step): jobs not finished by queue and state, the
 *		  oldest due job, the mode of hasched.state.  At most
 *		  hasched.metrics_max_queues queues have a row, the deepest; the
 *		  others are summed into one row, "(other)" (no queue can have that
 *		  name).  Published under a
 *		  sequence lock: the scheduler writes, readers copy and retry when
 *		  a write overlapped (they never wait for the scheduler).
 *
 * Counters count since the server started, on each server: a standby
 * counts nothing (its jobs change only by replay), a restart starts from
 * zero (Prometheus's rate() handles such resets).
 *
 * IDENTIFICATION
 *		src/core/metrics.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "port/atomics.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "core/hasched.h"

/* upper bounds of the start delay histogram's buckets, in seconds */
const double hs_latency_bounds[HS_LATENCY_BUCKETS] = {
	0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600
};

typedef struct HsMetricsShared
{
	pg_atomic_uint64 counters[HS_NUM_COUNTERS];
	pg_atomic_uint64 buckets[HS_LATENCY_BUCKETS + 1];	/* the last: above all */
	pg_atomic_uint64 delay_sum_us;
	pg_atomic_uint64 executor_start_failed_at;	/* a TimestampTz, 0: never */

	/* odd while the scheduler writes figures */
	pg_atomic_uint32 figures_gen;
	HsFigures	figures;		/* variable size: last */
} HsMetricsShared;

static HsMetricsShared *metrics = NULL;

/* what this backend's transaction counted, not yet added to shared memory */
typedef struct Pending
{
	uint64		counters[HS_NUM_COUNTERS];
	uint64		buckets[HS_LATENCY_BUCKETS + 1];
	uint64		delay_sum_us;
} Pending;

static Pending pending;
static bool pending_any = false;

/* what was pending when a subtransaction (nest level) first counted */
typedef struct Saved
{
	int			level;
	Pending		before;
} Saved;

static Saved *saved = NULL;
static int	n_saved = 0;
static int	max_saved = 0;

/* ------------------------------------------------------------------------
 * Shared memory
 * ------------------------------------------------------------------------ */

static Size
figures_size(void)
{
	/* the rows, and one more for "(other)" */
	return add_size(offsetof(HsFigures, queues),
					mul_size(sizeof(HsQueueFigures), hs_metrics_max_queues + 1));
}

Size
hs_metrics_shmem_size(void)
{
	return add_size(offsetof(HsMetricsShared, figures), figures_size());
}

/* Called from the shared memory startup hook, under AddinShmemInitLock. */
void
hs_metrics_shmem_init(void)
{
	bool		found;

	metrics = ShmemInitStruct("hasched metrics", hs_metrics_shmem_size(), &found);
	if (found)
		return;
	memset(metrics, 0, hs_metrics_shmem_size());
	for (int i = 0; i < HS_NUM_COUNTERS; i++)
		pg_atomic_init_u64(&metrics->counters[i], 0);
	for (int i = 0; i <= HS_LATENCY_BUCKETS; i++)
		pg_atomic_init_u64(&metrics->buckets[i], 0);
	pg_atomic_init_u64(&metrics->delay_sum_us, 0);
	pg_atomic_init_u64(&metrics->executor_start_failed_at, 0);
	pg_atomic_init_u32(&metrics->figures_gen, 0);
}

/* ------------------------------------------------------------------------
 * Counting
 * ------------------------------------------------------------------------ */

/* Before this nest level first counts, remember what was pending. */
static void
note_level(void)
{
	int			level = GetCurrentTransactionNestLevel();

	if (level <= 1 || (n_saved > 0 && saved[n_saved - 1].level >= level))
		return;
	if (n_saved == max_saved)
	{
		int			n = Max(4, max_saved * 2);

		saved = saved == NULL ?
			MemoryContextAlloc(TopMemoryContext, sizeof(Saved) * n) :
			repalloc(saved, sizeof(Saved) * n);
		max_saved = n;
	}
	saved[n_saved].level = level;
	saved[n_saved].before = pending;
	n_saved++;
}

/* Count n for the current transaction (added to shared memory at commit). */
void
hs_metrics_count(HsCounter counter, uint64 n)
{
	note_level();
	pending.counters[counter] += n;
	pending_any = true;
}

/* Count one now, whatever becomes of the transaction (refusals). */
void
hs_metrics_count_now(HsCounter counter)
{
	if (metrics != NULL)
		pg_atomic_fetch_add_u64(&metrics->counters[counter], 1);
}

/* An attempt started at started of a job that was due at due. */
void
hs_metrics_start_delay(TimestampTz due, TimestampTz started)
{
	int64		us = Max(started - due, 0);
	int			b = 0;

	note_level();
	while (b < HS_LATENCY_BUCKETS && (double) us > hs_latency_bounds[b] * 1e6)
		b++;
	pending.buckets[b]++;
	pending.delay_sum_us += us;
	pending.counters[HS_CTR_STARTED]++;
	pending_any = true;
}

/* The end of the transaction: a commit (or PREPARE) adds what it counted. */
void
hs_metrics_xact_end(bool committed)
{
	n_saved = 0;
	if (!pending_any)
		return;
	if (committed && metrics != NULL)
	{
		for (int i = 0; i < HS_NUM_COUNTERS; i++)
			if (pending.counters[i] != 0)
				pg_atomic_fetch_add_u64(&metrics->counters[i], pending.counters[i]);
		for (int i = 0; i <= HS_LATENCY_BUCKETS; i++)
			if (pending.buckets[i] != 0)
				pg_atomic_fetch_add_u64(&metrics->buckets[i], pending.buckets[i]);
		if (pending.delay_sum_us != 0)
			pg_atomic_fetch_add_u64(&metrics->delay_sum_us, pending.delay_sum_us);
	}
	memset(&pending, 0, sizeof(pending));
	pending_any = false;
}

/*
 * The end of a subtransaction: an abort takes back what it counted; a
 * commit hands its counts to the parent (whose own snapshot, if it has
 * one, is older; if it has none, the child's becomes the parent's).
 */
void
hs_metrics_subxact_end(bool committed)
{
	int			level = GetCurrentTransactionNestLevel();

	if (n_saved == 0 || saved[n_saved - 1].level < level)
		return;
	if (!committed)
	{
		pending = saved[n_saved - 1].before;
		n_saved--;
		return;
	}
	if (level - 1 <= 1 || (n_saved >= 2 && saved[n_saved - 2].level == level - 1))
		n_saved--;
	else
		saved[n_saved - 1].level = level - 1;
}

/* The counters, the histogram's buckets (not cumulative) and its sum. */
void
hs_metrics_read_counters(uint64 *counters, uint64 *buckets, uint64 *sum_us)
{
	for (int i = 0; i < HS_NUM_COUNTERS; i++)
		counters[i] = pg_atomic_read_u64(&metrics->counters[i]);
	for (int i = 0; i <= HS_LATENCY_BUCKETS; i++)
		buckets[i] = pg_atomic_read_u64(&metrics->buckets[i]);
	*sum_us = pg_atomic_read_u64(&metrics->delay_sum_us);
}

/* The scheduler could not start an executor (health shows it a while). */
void
hs_executor_start_failed(void)
{
	pg_atomic_write_u64(&metrics->executor_start_failed_at, (uint64) GetCurrentTimestamp());
}

TimestampTz
hs_executor_start_failed_at(void)
{
	return (TimestampTz) pg_atomic_read_u64(&metrics->executor_start_failed_at);
}

/* ------------------------------------------------------------------------
 * The scheduler's figures
 * ------------------------------------------------------------------------ */

const char *
hs_mode_name(int mode)
{
	static const char *const names[] = {"unknown", "normal", "read_only", "paused"};

	return (mode >= 0 && mode < lengthof(names)) ? names[mode] : "unknown";
}

/* Room for a copy of the figures (palloc'd, in the current context). */
HsFigures *
hs_figures_alloc(void)
{
	return palloc0(figures_size());
}

/*
 * Copy the figures into f (from hs_figures_alloc).  False when the
 * scheduler kept writing while we tried (f then holds no rows): the caller
 * shows them as not known rather than wait.
 */
static bool
figures_read(HsFigures *f, bool with_queues)
{
	for (int tries = 0; tries < 1000; tries++)
	{
		uint32		before = pg_atomic_read_u32(&metrics->figures_gen);
		int			n;

		if (before & 1)
		{
			pg_spin_delay();
			continue;
		}
		pg_read_barrier();
		memcpy(f, &metrics->figures, offsetof(HsFigures, queues));
		n = with_queues ? Min(Max(f->n_queues, 0), hs_metrics_max_queues + 1) : 0;
		memcpy(f->queues, metrics->figures.queues, sizeof(HsQueueFigures) * n);
		pg_read_barrier();
		if (pg_atomic_read_u32(&metrics->figures_gen) == before)
		{
			f->n_queues = n;
			return true;
		}
	}
	memset(f, 0, offsetof(HsFigures, queues));
	return false;
}

bool
hs_figures_read(HsFigures *f)
{
	return figures_read(f, true);
}

/* The totals and the mode only (no queue rows: n_queues is 0). */
bool
hs_figures_read_totals(HsFigures *f)
{
	return figures_read(f, false);
}

/* The scheduler (only it) publishes its figures. */
void
hs_figures_publish(const HsFigures *f)
{
	int			n = Min(f->n_queues, hs_metrics_max_queues + 1);

	pg_atomic_fetch_add_u32(&metrics->figures_gen, 1);	/* odd: writing */
	pg_write_barrier();
	memcpy(&metrics->figures, f, offsetof(HsFigures, queues));
	memcpy(metrics->figures.queues, f->queues, sizeof(HsQueueFigures) * n);
	metrics->figures.n_queues = n;
	pg_write_barrier();
	pg_atomic_fetch_add_u32(&metrics->figures_gen, 1);	/* even: done */
}

static int64
depth(const HsQueueFigures *q)
{
	int64		d = 0;

	for (int s = 0; s < HS_NUM_STATES; s++)
		d += q->jobs[s];
	return d;
}

static int
deeper_first(const void *a, const void *b)
{
	int64		da = depth((const HsQueueFigures *) a);
	int64		db = depth((const HsQueueFigures *) b);

	if (da != db)
		return da > db ? -1 : 1;
	return strcmp(((const HsQueueFigures *) a)->queue, ((const HsQueueFigures *) b)->queue);
}

static void
add_figures(HsQueueFigures *to, const HsQueueFigures *q)
{
	for (int s = 0; s < HS_NUM_STATES; s++)
		to->jobs[s] += q->jobs[s];
	if (q->oldest_due != 0 && (to->oldest_due == 0 || q->oldest_due < to->oldest_due))
		to->oldest_due = q->oldest_due;
}

/*
 * The count of the jobs not finished, in steps (hs_figures_count_step):
 * the waiting jobs a chunk at a time in the order of job_waiting_idx, each
 * chunk in a transaction of its own, then the running and dispatched ones
 * and the mode.  Between the steps the scheduler does its other work: a
 * count of millions of waiting jobs in one statement took a second, and
 * the NOTIFYs of pull workers, the rounds and the cron firings waited for
 * it (seen: submit -> start of 0.8-1 s in pull mode beside a backlog of 6
 * million jobs in another queue).  The table moves between the chunks: a
 * job whose key moves past the position of the count (a retry) may be
 * counted twice, or not at all (a claim); the figures are as exact as a
 * count that takes that long can be.
 */
#define FIGURES_CHUNK 5000

typedef struct FiguresCount
{
	bool		waiting_done;	/* the waiting jobs are counted */
	bool		have_key;		/* the position: the last waiting job counted */
	char		queue[HS_QUEUE_NAME_MAX];
	int16		priority;
	TimestampTz run_at;
	int64		id;
	HsQueueFigures *all;		/* per queue, in the order first met */
	int			n;
	int			cap;
	int64		backlog;
	TimestampTz backlog_oldest;
} FiguresCount;

static FiguresCount fc;
static MemoryContext fc_cxt = NULL;

/* The queue's entry in fc.all, added when new. */
static HsQueueFigures *
fc_queue(const char *queue)
{
	for (int i = fc.n - 1; i >= 0; i--)
		if (strcmp(fc.all[i].queue, queue) == 0)
			return &fc.all[i];
	if (fc.n == fc.cap)
	{
		fc.cap = fc.cap ? 2 * fc.cap : 16;
		fc.all = fc.all ? repalloc(fc.all, sizeof(HsQueueFigures) * fc.cap) :
			MemoryContextAlloc(fc_cxt, sizeof(HsQueueFigures) * fc.cap);
	}
	memset(&fc.all[fc.n], 0, sizeof(HsQueueFigures));
	strlcpy(fc.all[fc.n].queue, queue, HS_QUEUE_NAME_MAX);
	return &fc.all[fc.n++];
}

/*
 * Add the rows of a count (queue, state, count, oldest due, due count,
 * queue paused) to fc; the total of their counts.
 */
static int64
fc_add_rows(void)
{
	TupleDesc	desc = SPI_tuptable->tupdesc;
	int64		total = 0;

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		char	   *queue = SPI_getvalue(tup, desc, 1);
		HsJobState	state = hs_state_from_name(SPI_getvalue(tup, desc, 2));
		bool		isnull;
		int64		count = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
		Datum		due = SPI_getbinval(tup, desc, 4, &isnull);
		HsQueueFigures q;

		total += count;
		memset(&q, 0, sizeof(q));
		if (state >= 0 && state < HS_NUM_STATES)
			q.jobs[state] = count;
		q.oldest_due = isnull ? 0 : DatumGetTimestampTz(due);
		add_figures(fc_queue(queue), &q);
		/* the backlog of the degradation (degrade.c): due jobs of queues not paused */
		if (!DatumGetBool(SPI_getbinval(tup, desc, 6, &isnull)))
		{
			fc.backlog += DatumGetInt64(SPI_getbinval(tup, desc, 5, &isnull));
			if (q.oldest_due != 0 && (fc.backlog_oldest == 0 || q.oldest_due < fc.backlog_oldest))
				fc.backlog_oldest = q.oldest_due;
		}
	}
	return total;
}

/* the columns of fc_add_rows(), from rows "c" of hasched.job */
#define FIGURES_COLUMNS \
	"SELECT c.queue, c.state::text, count(*)," \
	" min(c.run_at) FILTER (WHERE c.state IN ('scheduled', 'pending', 'failed')" \
	"   AND c.run_at <= now())," \
	" count(*) FILTER (WHERE c.state IN ('scheduled', 'pending', 'failed')" \
	"   AND c.run_at <= now())," \
	" EXISTS (SELECT 1 FROM hasched.queue q" \
	"   WHERE q.name = c.queue AND q.paused_at IS NOT NULL)"

/* the waiting jobs after the count's position (if any), in the index's order */
#define WAITING_AFTER(cols, key) \
	"SELECT " cols " FROM hasched.job" \
	" WHERE state IN ('scheduled', 'pending', 'failed')" key \
	" ORDER BY queue, priority, run_at, id"
#define AFTER_KEY " AND (queue, priority, run_at, id) > ($1, $2, $3, $4)"
#define CHUNK_COUNT(key) \
	FIGURES_COLUMNS " FROM (" WAITING_AFTER("queue, state, run_at", key) \
	" LIMIT " CppAsString2(FIGURES_CHUNK) ") c GROUP BY c.queue, c.state"
/* the chunk's last job: index-only */
#define CHUNK_END(key) \
	WAITING_AFTER("queue, priority, run_at, id", key) \
	" OFFSET " CppAsString2(FIGURES_CHUNK) " - 1 LIMIT 1"

/* A statement of the chunked count: a walk of job_waiting_idx in its order. */
static void
fc_execute(SPIPlanPtr plan, Datum *args, long count)
{
	if (hs_execute_in_index_order(plan, args, count) != SPI_OK_SELECT)
		elog(ERROR, "hasched: counting the jobs failed");
}

/*
 * The next chunk of waiting jobs; true when it was the last.  Two
 * statements: the count of FIGURES_CHUNK jobs (a scan of the index in its
 * order, stopped by the LIMIT), then the key of the last of them, the next
 * chunk's start (an index-only scan).  (A row comparison as the upper
 * bound of the count did not stop its scan; one statement that also
 * returned the last key materialized the rows and cost 2.4 times as much.)
 */
static bool
fc_count_waiting(void)
{
	static SPIPlanPtr count_first = NULL;
	static SPIPlanPtr count_next = NULL;
	static SPIPlanPtr end_first = NULL;
	static SPIPlanPtr end_next = NULL;
	Datum		values[4];
	Datum	   *args = NULL;
	SPIPlanPtr	count_plan;
	SPIPlanPtr	end_plan;
	TupleDesc	desc;
	HeapTuple	last;
	bool		isnull;

	hs_plan(&count_first, CHUNK_COUNT(""), 0);
	hs_plan(&end_first, CHUNK_END(""), 0);
	hs_plan(&count_next, CHUNK_COUNT(AFTER_KEY), 4, TEXTOID, INT2OID, TIMESTAMPTZOID, INT8OID);
	hs_plan(&end_next, CHUNK_END(AFTER_KEY), 4, TEXTOID, INT2OID, TIMESTAMPTZOID, INT8OID);
	count_plan = fc.have_key ? count_next : count_first;
	end_plan = fc.have_key ? end_next : end_first;
	if (fc.have_key)
	{
		values[0] = CStringGetTextDatum(fc.queue);
		values[1] = Int16GetDatum(fc.priority);
		values[2] = TimestampTzGetDatum(fc.run_at);
		values[3] = Int64GetDatum(fc.id);
		args = values;
	}
	fc_execute(count_plan, args, 0);
	if (fc_add_rows() < FIGURES_CHUNK)
		return true;
	fc_execute(end_plan, args, 1);
	if (SPI_processed == 0)
		return true;
	desc = SPI_tuptable->tupdesc;
	last = SPI_tuptable->vals[0];
	strlcpy(fc.queue, SPI_getvalue(last, desc, 1), HS_QUEUE_NAME_MAX);
	fc.priority = DatumGetInt16(SPI_getbinval(last, desc, 2, &isnull));
	fc.run_at = DatumGetTimestampTz(SPI_getbinval(last, desc, 3, &isnull));
	fc.id = DatumGetInt64(SPI_getbinval(last, desc, 4, &isnull));
	fc.have_key = true;
	return false;
}

/*
 * One step of the count of the jobs not finished by queue and state, the
 * backlog of due jobs in queues not paused (the degradation's signal), and
 * the mode; inside a transaction with SPI, as the scheduler, on a standby
 * too (what has been replayed).  A step reads FIGURES_CHUNK waiting jobs at
 * most; the last step (true) fills f (from hs_figures_alloc).  Finished
 * jobs are not counted (their totals are the counters): counting them
 * would read the whole history every time.  Each condition is the set of
 * one of the partial indexes job_waiting_idx and job_active_idx: one list
 * of the five states matched neither index, and the count was a
 * sequential scan of the whole table (0.15 s a count over 3 million
 * finished jobs, with two parallel workers).
 *
 * restart: begin a new count (else go on with the one begun); after an
 * error in a step the caller begins again (the scheduler does).
 */
bool
hs_figures_count_step(HsFigures *f, bool restart)
{
	static SPIPlanPtr active = NULL;
	HsQueueFigures *all;
	int			n;
	int			keep;

	if (fc_cxt == NULL)
		fc_cxt = AllocSetContextCreate(TopMemoryContext, "hasched figures count",
									   ALLOCSET_SMALL_SIZES);
	if (restart)
	{
		MemoryContextReset(fc_cxt);
		memset(&fc, 0, sizeof(fc));
	}
	if (!fc.waiting_done)
	{
		fc.waiting_done = fc_count_waiting();
		return false;
	}
	hs_plan(&active, FIGURES_COLUMNS " FROM hasched.job c"
			" WHERE c.state IN ('running', 'dispatched') GROUP BY c.queue, c.state", 0);
	if (SPI_execute_plan(active, NULL, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "hasched: counting the jobs failed");
	(void) fc_add_rows();

	memset(f, 0, offsetof(HsFigures, queues));
	f->backlog = fc.backlog;
	f->backlog_oldest = fc.backlog_oldest;
	all = fc.all;
	n = fc.n;
	/* the deepest queues get rows; the rest are summed into "(other)" */
	qsort(all, n, sizeof(HsQueueFigures), deeper_first);
	keep = Min(n, hs_metrics_max_queues);
	memcpy(f->queues, all, sizeof(HsQueueFigures) * keep);
	f->n_queues = keep;
	f->queues_total = n;
	if (n > keep)
	{
		HsQueueFigures *other = &f->queues[keep];

		memset(other, 0, sizeof(*other));
		strlcpy(other->queue, "(other)", HS_QUEUE_NAME_MAX);
		for (int i = keep; i < n; i++)
			add_figures(other, &all[i]);
		f->n_queues = keep + 1;
		f->has_other = true;
	}
	strlcpy(f->total.queue, "", HS_QUEUE_NAME_MAX);
	for (int i = 0; i < n; i++)
	{
		add_figures(&f->total, &all[i]);
		if (all[i].oldest_due != 0 && all[i].oldest_due == f->total.oldest_due)
			strlcpy(f->oldest_due_queue, all[i].queue, HS_QUEUE_NAME_MAX);
	}

	/* the mode set by set_mode() */
	if (SPI_execute("SELECT mode, reason, changed_at FROM hasched.state", true, 1) != SPI_OK_SELECT)
		elog(ERROR, "hasched: reading the mode failed");
	f->mode = HS_MODE_UNKNOWN;
	if (SPI_processed == 1)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *mode = SPI_getvalue(tup, desc, 1);
		char	   *reason = SPI_getvalue(tup, desc, 2);
		bool		isnull;
		Datum		since = SPI_getbinval(tup, desc, 3, &isnull);

		f->mode = strcmp(mode, "normal") == 0 ? HS_MODE_NORMAL :
			strcmp(mode, "read_only") == 0 ? HS_MODE_READ_ONLY :
			strcmp(mode, "paused") == 0 ? HS_MODE_PAUSED : HS_MODE_UNKNOWN;
		strlcpy(f->mode_reason, reason ? reason : "", sizeof(f->mode_reason));
		f->mode_since = isnull ? 0 : DatumGetTimestampTz(since);
	}
	f->counted_at = GetCurrentTimestamp();
	MemoryContextReset(fc_cxt);
	memset(&fc, 0, sizeof(fc));
	return true;
}
