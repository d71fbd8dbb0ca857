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
 *		  (hs_figures_count): jobs not finished by queue and state, the
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
 * Count the jobs not finished by queue and state, the backlog of due jobs
 * in queues not paused (the degradation's signal), and read the mode, into
 * f (from hs_figures_alloc).  Inside a transaction with SPI, as the
 * scheduler; on a standby too (what has been replayed).  Finished jobs are
 * not counted (their totals are the counters): counting them would read
 * the whole history every time.  The condition is written as the two sets
 * of the partial indexes job_waiting_idx and job_active_idx, so that it is
 * a bitmap OR of the two: one list of the five states matches neither
 * index, and the count was a sequential scan of the whole table (0.15 s a
 * count over 3 million finished jobs, with two parallel workers).
 */
void
hs_figures_count(HsFigures *f)
{
	HsQueueFigures *all;
	int			n = 0;
	uint64		rows;
	TupleDesc	desc;
	int			keep;

	memset(f, 0, offsetof(HsFigures, queues));
	if (SPI_execute("SELECT queue, state::text, count(*),"
					" min(run_at) FILTER (WHERE state IN ('scheduled', 'pending', 'failed')"
					"   AND run_at <= now()),"
					" count(*) FILTER (WHERE state IN ('scheduled', 'pending', 'failed')"
					"   AND run_at <= now()),"
					" EXISTS (SELECT 1 FROM hasched.queue q"
					"   WHERE q.name = j.queue AND q.paused_at IS NOT NULL)"
					" FROM hasched.job j"
					" WHERE state IN ('scheduled', 'pending', 'failed')"
					"   OR state IN ('running', 'dispatched')"
					" GROUP BY queue, state ORDER BY queue", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "hasched: counting the jobs failed");
	rows = SPI_processed;
	desc = SPI_tuptable->tupdesc;
	all = palloc0(sizeof(HsQueueFigures) * (rows + 1));
	for (uint64 i = 0; i < rows; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		char	   *queue = SPI_getvalue(tup, desc, 1);
		HsJobState	state = hs_state_from_name(SPI_getvalue(tup, desc, 2));
		bool		isnull;
		int64		count = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
		Datum		due = SPI_getbinval(tup, desc, 4, &isnull);
		HsQueueFigures q;

		if (n == 0 || strcmp(all[n - 1].queue, queue) != 0)
			strlcpy(all[n++].queue, queue, HS_QUEUE_NAME_MAX);
		memset(&q, 0, sizeof(q));
		if (state >= 0 && state < HS_NUM_STATES)
			q.jobs[state] = count;
		q.oldest_due = isnull ? 0 : DatumGetTimestampTz(due);
		add_figures(&all[n - 1], &q);
		/* the backlog of the degradation (degrade.c): due jobs of queues not paused */
		if (!DatumGetBool(SPI_getbinval(tup, desc, 6, &isnull)))
		{
			f->backlog += DatumGetInt64(SPI_getbinval(tup, desc, 5, &isnull));
			if (q.oldest_due != 0 && (f->backlog_oldest == 0 || q.oldest_due < f->backlog_oldest))
				f->backlog_oldest = q.oldest_due;
		}
	}

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
}
