/*-------------------------------------------------------------------------
 *
 * degrade.c
 *		Graceful degradation under overload: the automatic read-only mode
 *		and the priority hold-back, decided by the scheduler each round and
 *		published in shared memory for submits, claims, health and metrics.
 *
 * The signals (measured by the scheduler, at most once a second):
 *  - backlog: due waiting jobs (scheduled, pending or failed with run_at
 *    passed) of queues that are not paused, as the scheduler's last count
 *    of the jobs found them (the figures of health() and /metrics, counted
 *    every hasched.stats_interval and spaced out while counting is slow:
 *    one scan of the job table serves both);
 *  - sync lag: with synchronous_standby_names set, the largest flush or
 *    replay lag of the standbys whose sync_state is sync or quorum; while
 *    none is connected, how long that has lasted (submits would wait for
 *    one: better refused at once than hanging).
 *
 * The automatic read-only mode begins when a signal reaches its threshold
 * (hasched.readonly_backlog, hasched.readonly_sync_lag) and ends when every
 * signal is below hasched.degrade_exit_ratio of its threshold; the
 * hold-back begins at hasched.holdback_backlog and ends below the same
 * fraction of it.  Neither changes again within hasched.degrade_min_dwell
 * of its last change.  Each begin and end is an event row (kinds
 * read_only_auto and holdback, action enter or leave).
 *
 * The manual mode (hasched.set_mode, a row of hasched.state) comes first:
 * the automatic read-only mode refuses submits only while the manual mode
 * is normal, and a set_mode() committed after the automatic mode began
 * overrides it: it ends (event reason "overridden") and does not begin
 * again until every signal has fallen below its exit threshold.  Submits
 * compare the mode's changed_at with the automatic mode's start
 * themselves, so the override holds from set_mode()'s commit on.
 *
 * Shared memory: one struct under a spinlock, written only by the
 * scheduler; two atomics let submits and claims skip the lock while no
 * automatic mode is in force (the usual case).
 *
 * IDENTIFICATION
 *		src/core/degrade.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "replication/syncrep.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "core/hasched.h"

/* measure the signals at most this often */
#define MEASURE_INTERVAL_US		(1000 * 1000)
/* the job counts are too old to go by when older than twice their spacing and this */
#define FIGURES_MAX_AGE_US		(10 * 1000 * 1000)

typedef struct DegradeShared
{
	slock_t		mutex;
	pg_atomic_uint32 read_only; /* st.read_only, for a lock-free look */
	pg_atomic_uint32 holdback;	/* st.holdback, likewise */
	HsDegradeStatus st;
} DegradeShared;

static DegradeShared *degrade = NULL;

/* the scheduler's own memory */
static TimestampTz last_measured = 0;
static TimestampTz no_sync_since = 0;	/* none connected since, 0: one is */
static bool reconciled = false; /* events of an earlier process closed */

Size
hs_degrade_shmem_size(void)
{
	return MAXALIGN(sizeof(DegradeShared));
}

void
hs_degrade_shmem_init(void)
{
	bool		found;

	degrade = ShmemInitStruct("hasched degradation", hs_degrade_shmem_size(), &found);
	if (!found)
	{
		memset(degrade, 0, sizeof(DegradeShared));
		SpinLockInit(&degrade->mutex);
		pg_atomic_init_u32(&degrade->read_only, 0);
		pg_atomic_init_u32(&degrade->holdback, 0);
		degrade->st.backlog = -1;
		degrade->st.sync_lag_us = -1;
	}
}

/* A copy of the state, for health, metrics and SQL. */
void
hs_degrade_status(HsDegradeStatus *out)
{
	SpinLockAcquire(&degrade->mutex);
	*out = degrade->st;
	SpinLockRelease(&degrade->mutex);
}

/* ------------------------------------------------------------------------
 * Readers: submits and claims
 * ------------------------------------------------------------------------ */

/*
 * A submit, while the manual mode is normal (changed at mode_changed_at):
 * refuse it with JQ003 when the automatic read-only mode is in force and no
 * set_mode() has overridden it since it began.
 */
void
hs_degrade_check_submit(TimestampTz mode_changed_at)
{
	HsDegradeStatus st;

	if (degrade == NULL || pg_atomic_read_u32(&degrade->read_only) == 0)
		return;
	hs_degrade_status(&st);
	if (!st.read_only || mode_changed_at >= st.read_only_since)
		return;
	hs_metrics_count_now(HS_CTR_REFUSED_READ_ONLY);
	ereport(ERROR,
			(errcode(HS_ERRCODE_READ_ONLY_MODE),
			 errmsg("submission is temporarily disabled: hasched is overloaded"),
			 errdetail("Automatic read-only mode since %s: %s.",
					   timestamptz_to_str(st.read_only_since), st.read_only_why),
			 errhint("Retry later: claims and reports go on, so the backlog drains, and the mode ends by itself. An administrator can override it with SELECT hasched.set_mode('normal').")));
}

/*
 * The claim path: the latest run_at each priority may have to be claimed
 * at time now (now itself for every priority unless the hold-back is in
 * force).  Returns true when the hold-back holds some priority back.
 */
bool
hs_degrade_claim_bounds(TimestampTz now, TimestampTz *upto)
{
	HsDegradeStatus st;
	bool		held = false;

	for (int p = 0; p < HS_NUM_PRIORITIES; p++)
		upto[p] = now;
	if (degrade == NULL || pg_atomic_read_u32(&degrade->holdback) == 0)
		return false;
	hs_degrade_status(&st);
	if (!st.holdback)
		return false;
	for (int p = 0; p < HS_NUM_PRIORITIES; p++)
		if (st.holdback_us[p] > 0)
		{
			upto[p] = now - st.holdback_us[p];
			held = true;
		}
	return held;
}

/* ------------------------------------------------------------------------
 * The scheduler: measure, decide, record
 * ------------------------------------------------------------------------ */

/*
 * Due waiting jobs of queues that are not paused: from the scheduler's last
 * count of the jobs (metrics.c, the figures of health() and /metrics), not
 * a scan of its own.  Unknown (-1, the signal off) before the first count
 * and when the last one is too old to go by (the counting fails).
 */
static void
measure_backlog(HsDegradeStatus *st, TimestampTz now)
{
	HsFigures	f;

	if (!hs_figures_read_totals(&f) || f.counted_at == 0 ||
		now - f.counted_at > 2 * f.spacing_usec + FIGURES_MAX_AGE_US)
	{
		st->backlog = -1;
		st->oldest_due = 0;
		return;
	}
	st->backlog = f.backlog;
	st->oldest_due = f.backlog_oldest;
}

/* The synchronous standbys' lag (-1 when synchronous_standby_names is empty). */
static void
measure_sync_lag(HsDegradeStatus *st, TimestampTz now)
{
	bool		isnull;
	Datum		v;

	if (SyncRepStandbyNames == NULL || SyncRepStandbyNames[0] == '\0')
	{
		st->sync_lag_us = -1;
		st->sync_standbys = 0;
		no_sync_since = 0;
		return;
	}
	if (SPI_execute("SELECT count(*)::int, coalesce(max((extract(epoch FROM"
					" greatest(coalesce(flush_lag, interval '0'), coalesce(replay_lag, interval '0')))"
					" * 1000000)::bigint), 0)"
					" FROM pg_catalog.pg_stat_replication WHERE sync_state IN ('sync', 'quorum')",
					true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "hasched: reading pg_stat_replication failed");
	st->sync_standbys = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	v = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (st->sync_standbys > 0)
	{
		no_sync_since = 0;
		st->sync_lag_us = isnull ? 0 : DatumGetInt64(v);
	}
	else
	{
		if (no_sync_since == 0)
			no_sync_since = now;
		st->sync_lag_us = now - no_sync_since;
	}
}

/* One signal of the read-only mode: its value against its thresholds. */
typedef struct Signal
{
	const char *name;
	bool		enabled;
	bool		above;			/* at or above the threshold: enter */
	bool		below_exit;		/* below the exit threshold: may leave */
	double		load;			/* value / threshold, to pick the worst */
	int64		value;
	int64		threshold;
	int64		exit_below;
	char		text[HS_DEGRADE_REASON_MAX];
} Signal;

static int64
exit_threshold(int64 threshold)
{
	return (int64) ((double) threshold * hs_degrade_exit_ratio);
}

static void
signal_eval(Signal *s, int64 value, int64 threshold)
{
	s->enabled = threshold > 0 && value >= 0;
	s->value = value;
	s->threshold = threshold;
	s->exit_below = exit_threshold(threshold);
	s->above = s->enabled && value >= threshold;
	s->below_exit = !s->enabled || value < s->exit_below;
	s->load = s->enabled ? (double) value / (double) threshold : 0;
}

static void
read_only_signals(const HsDegradeStatus *st, Signal *sig)
{
	memset(sig, 0, sizeof(Signal) * 2);
	sig[0].name = "backlog";
	signal_eval(&sig[0], st->backlog, hs_readonly_backlog);
	snprintf(sig[0].text, sizeof(sig[0].text),
			 "the backlog is %lld due jobs, hasched.readonly_backlog is %lld (the mode ends below %lld)",
			 (long long) st->backlog,
			 (long long) sig[0].threshold, (long long) sig[0].exit_below);
	sig[1].name = st->sync_standbys > 0 ? "sync_lag" : "no_sync_standby";
	signal_eval(&sig[1], st->sync_lag_us, (int64) hs_readonly_sync_lag * 1000);
	if (st->sync_standbys > 0)
		snprintf(sig[1].text, sizeof(sig[1].text),
				 "the synchronous standby lags %lld ms, hasched.readonly_sync_lag is %d ms (the mode ends below %lld ms)",
				 (long long) (sig[1].value / 1000), hs_readonly_sync_lag,
				 (long long) (sig[1].exit_below / 1000));
	else
		snprintf(sig[1].text, sizeof(sig[1].text),
				 "no synchronous standby has been connected for %lld ms (synchronous_standby_names is set), hasched.readonly_sync_lag is %d ms",
				 (long long) (sig[1].value / 1000), hs_readonly_sync_lag);
}

static void
write_event(const char *kind, const char *action, const Signal *s,
			const char *reason, TimestampTz since, TimestampTz now)
{
	StringInfoData sql;
	int32		epoch;

	SpinLockAcquire(&hs_shared->mutex);
	epoch = hs_shared->epoch;
	SpinLockRelease(&hs_shared->mutex);

	initStringInfo(&sql);
	appendStringInfo(&sql,
					 "INSERT INTO hasched.event (kind, detail) VALUES (%s, jsonb_build_object("
					 "'action', %s, 'reason', %s, 'epoch', %d",
					 quote_literal_cstr(kind), quote_literal_cstr(action),
					 quote_literal_cstr(reason), epoch);
	if (s != NULL)
		appendStringInfo(&sql, ", 'signal', %s, 'value', %lld, 'threshold', %lld, 'exit_below', %lld",
						 quote_literal_cstr(s->name), (long long) s->value,
						 (long long) s->threshold, (long long) s->exit_below);
	if (since != 0 && strcmp(action, "leave") == 0)
		appendStringInfo(&sql, ", 'since', %s::timestamptz, 'seconds', %.3f",
						 quote_literal_cstr(timestamptz_to_str(since)),
						 (double) (now - since) / USECS_PER_SEC);
	appendStringInfoString(&sql, "))");
	if (SPI_execute(sql.data, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "hasched: writing a %s event failed", kind);
	pfree(sql.data);
}

/* The manual mode and when it was last set. */
static void
manual_mode(char *mode, Size len, TimestampTz *changed_at)
{
	bool		isnull;

	if (SPI_execute("SELECT mode, changed_at FROM hasched.state", true, 1) != SPI_OK_SELECT)
		elog(ERROR, "hasched: reading the mode failed");
	if (SPI_processed != 1)
	{
		strlcpy(mode, "normal", len);
		*changed_at = 0;
		return;
	}
	strlcpy(mode, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), len);
	*changed_at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
													SPI_tuptable->tupdesc, 2, &isnull));
}

/*
 * First round of this process: an automatic mode that an earlier process
 * (or the old primary, before a failover) entered and never left is not in
 * force here: record that it ended.
 */
static void
reconcile_events(const HsDegradeStatus *st, TimestampTz now)
{
	static const char *const kinds[2] = {"read_only_auto", "holdback"};

	for (int i = 0; i < 2; i++)
	{
		bool		in_force = i == 0 ? st->read_only : st->holdback;
		char	   *sql;

		sql = psprintf("SELECT detail->>'action', at FROM hasched.event WHERE kind = '%s'"
					   " ORDER BY at DESC, id DESC LIMIT 1", kinds[i]);
		if (SPI_execute(sql, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "hasched: reading the last %s event failed", kinds[i]);
		if (SPI_processed == 1 && !in_force)
		{
			char	   *action = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
			bool		isnull;
			TimestampTz at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
															   SPI_tuptable->tupdesc, 2, &isnull));

			if (action != NULL && strcmp(action, "enter") == 0)
				write_event(kinds[i], "leave", NULL,
							"the scheduler started anew (a restart or a failover): automatic modes start off",
							at, now);
		}
	}
}

/* Is the next evaluation due (about once a second)? */
bool
hs_degrade_due(void)
{
	return GetCurrentTimestamp() - last_measured >= MEASURE_INTERVAL_US;
}

/*
 * The primary's scheduler, about once a second (in a transaction of its
 * own, connected to SPI): measure the signals, then enter or leave the
 * automatic read-only mode and the hold-back, with an event for each.
 */
void
hs_degrade_round(void)
{
	TimestampTz now = GetCurrentTimestamp();
	HsDegradeStatus st;
	Signal		sig[2];
	char		mode[32];
	TimestampTz mode_changed_at;
	int64		dwell = (int64) hs_degrade_min_dwell * 1000;
	int			worst = -1;
	bool		any_above = false;
	bool		all_below_exit = true;

	hs_degrade_status(&st);
	if (!reconciled)
	{
		reconcile_events(&st, now);
		reconciled = true;
	}
	measure_backlog(&st, now);
	measure_sync_lag(&st, now);
	st.measured_at = now;
	last_measured = now;
	manual_mode(mode, sizeof(mode), &mode_changed_at);
	strlcpy(st.manual_mode, mode, sizeof(st.manual_mode));
	st.manual_since = mode_changed_at;

	/* the automatic read-only mode */
	read_only_signals(&st, sig);
	for (int i = 0; i < 2; i++)
	{
		any_above |= sig[i].above;
		all_below_exit &= sig[i].below_exit;
		if (sig[i].enabled && (worst < 0 || sig[i].load > sig[worst].load))
			worst = i;
	}
	if (st.read_only)
	{
		if (mode_changed_at >= st.read_only_since)
		{
			write_event("read_only_auto", "leave", worst >= 0 ? &sig[worst] : NULL,
						psprintf("overridden by set_mode('%s'); the automatic mode begins again only after every signal fell below its exit threshold",
								 mode), st.read_only_since, now);
			st.read_only = false;
			st.overridden = true;
			st.read_only_since = now;
		}
		else if (all_below_exit && now - st.read_only_since >= dwell)
		{
			write_event("read_only_auto", "leave", worst >= 0 ? &sig[worst] : NULL,
						"every signal is below its exit threshold", st.read_only_since, now);
			st.read_only = false;
			st.read_only_since = now;
		}
		else if (worst >= 0)
			strlcpy(st.read_only_why, sig[worst].text, sizeof(st.read_only_why));
	}
	else if (st.overridden)
	{
		if (all_below_exit)
			st.overridden = false;
	}
	else if (any_above && now - st.read_only_since >= dwell)
	{
		int			first = sig[0].above ? 0 : 1;

		write_event("read_only_auto", "enter", &sig[first], sig[first].text, 0, now);
		st.read_only = true;
		st.read_only_since = now;
		strlcpy(st.read_only_why, sig[first].text, sizeof(st.read_only_why));
	}

	/* the hold-back of lower priorities */
	{
		Signal		hb;

		memset(&hb, 0, sizeof(hb));
		hb.name = "backlog";
		signal_eval(&hb, st.backlog, hs_holdback_backlog);
		if (!st.holdback && hb.above && now - st.holdback_since >= dwell)
		{
			write_event("holdback", "enter", &hb,
						psprintf("the backlog is %lld due jobs, hasched.holdback_backlog is %d: medium jobs wait %d ms, low jobs %d ms",
								 (long long) st.backlog,
								 hs_holdback_backlog, hs_holdback_medium, hs_holdback_low),
						0, now);
			st.holdback = true;
			st.holdback_since = now;
		}
		else if (st.holdback && hb.below_exit &&
				 (now - st.holdback_since >= dwell || !hb.enabled))
		{
			write_event("holdback", "leave", &hb,
						hb.enabled ? "the backlog is below the exit threshold" :
						"hasched.holdback_backlog is 0", st.holdback_since, now);
			st.holdback = false;
			st.holdback_since = now;
		}
		for (int p = 0; p < HS_NUM_PRIORITIES; p++)
		{
			int			prio = p + HS_PRIORITY_MIN;

			st.holdback_us[p] = prio >= HS_PRIORITY_LOW ? (int64) hs_holdback_low * 1000 :
				prio >= HS_PRIORITY_MEDIUM ? (int64) hs_holdback_medium * 1000 : 0;
		}
	}

	SpinLockAcquire(&degrade->mutex);
	/* the scheduler is the only writer: its copy is the state */
	degrade->st = st;
	SpinLockRelease(&degrade->mutex);
	pg_atomic_write_u32(&degrade->read_only, st.read_only ? 1 : 0);
	pg_atomic_write_u32(&degrade->holdback, st.holdback ? 1 : 0);
}

/*
 * The delays of the hold-back per priority, as an SQL array literal of
 * microseconds (index 1 is priority 0), all 0 while it is not in force:
 * the scheduler's look for due SQL jobs uses it.
 */
char *
hs_degrade_holdback_sql(void)
{
	HsDegradeStatus st;
	StringInfoData s;

	hs_degrade_status(&st);
	initStringInfo(&s);
	appendStringInfoString(&s, "'{");
	for (int p = 0; p < HS_NUM_PRIORITIES; p++)
		appendStringInfo(&s, "%s%lld", p ? "," : "",
						 (long long) (st.holdback ? st.holdback_us[p] : 0));
	appendStringInfoString(&s, "}'::bigint[]");
	return s.data;
}
