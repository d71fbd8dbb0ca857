/*-------------------------------------------------------------------------
 *
 * schedule.c
 *		Periodic jobs in core: specs and their next times, saving and
 *		deleting schedules, and the scheduler's firing of due schedules.
 *
 * A spec is parsed by src/common/cron.c (plain C, fuzzed) into a CronSpec;
 * this file turns wall-clock times in the schedule's time zone into
 * instants and back with PostgreSQL's time zone code.  A run is submitted
 * through the same path as submit() (hs_submit_one), for the schedule's
 * tenant and owner.
 *
 * Misfires: a run whose time passed more than hasched.misfire_threshold ago
 * (no primary was up, or the scheduler was stopped) is skipped, or run once
 * now, by the schedule's misfire policy; either way the schedule then goes
 * on from now.  Overlap: while the previous run's job has not finished, a
 * new run is skipped, queued (one run is kept for when the previous ends)
 * or allowed in parallel.
 *
 * IDENTIFICATION
 *		src/core/schedule.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "pgtime.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/datetime.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "common/cron.h"
#include "core/hasched.h"

/* Parse a spec or raise JQ019 with the parser's message. */
void
hs_parse_spec(const char *spec, CronSpec *cs)
{
	char		err[CRON_ERRLEN];

	if (!cron_parse(spec, cs, err, sizeof(err)))
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_SCHEDULE),
				 errmsg("invalid schedule \"%s\": %s", spec, err),
				 errhint("Use cron with 5 fields (minute hour day month weekday) or 6 (seconds first), @every <n> <unit>, or @hourly, @daily, @weekly, @monthly, @yearly.")));
}

pg_tz *
hs_find_timezone(const char *name)
{
	pg_tz	   *tz = pg_tzset(name);

	if (tz == NULL)
		ereport(ERROR,
				(errcode(HS_ERRCODE_UNKNOWN_TIMEZONE),
				 errmsg("unknown time zone \"%s\"", name),
				 errhint("Use a name from pg_timezone_names, such as UTC or Europe/Berlin.")));
	return tz;
}

/*
 * The first instant after `after` at which the spec fires in tz, or
 * DT_NOEND when it never does.  For @every, the interval after `after`.
 */
TimestampTz
hs_schedule_next_time(const CronSpec *cs, pg_tz *tz, TimestampTz after)
{
	struct pg_tm tm;
	fsec_t		fsec;
	int			tzoff;
	CronTime	from;
	CronTime	next;
	TimestampTz result;

	if (cs->every_usec > 0)
	{
		/* an interval past the end of time never fires */
		if (cs->every_usec >= END_TIMESTAMP - after)
			return DT_NOEND;
		return after + cs->every_usec;
	}

	if (timestamp2tm(after, &tzoff, &tm, &fsec, NULL, tz) != 0)
		return DT_NOEND;
	from = (CronTime) {tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec};

	/* a wall-clock time that a DST change skipped comes out later: retry after it */
	for (int tries = 0; tries < 4; tries++)
	{
		if (!cron_next(cs, &from, &next))
			return DT_NOEND;
		memset(&tm, 0, sizeof(tm));
		tm.tm_year = next.year;
		tm.tm_mon = next.month;
		tm.tm_mday = next.mday;
		tm.tm_hour = next.hour;
		tm.tm_min = next.minute;
		tm.tm_sec = next.second;
		tzoff = DetermineTimeZoneOffset(&tm, tz);
		if (tm2timestamp(&tm, 0, &tzoff, &result) != 0)
			return DT_NOEND;
		if (result > after)
			return result;
		from = next;
	}
	return DT_NOEND;
}

/*
 * Save a schedule (insert, or with replace update the caller's own of that
 * name); returns its next run, DT_NOEND when it is saved paused (active
 * false: no next run).  caller: the role that called schedule().  Inside
 * SPI, as the extension owner; the arguments are validated.
 */
static TimestampTz
hs_schedule_save_spi(const char *name, const char *spec, const char *zone,
				 const char *queue, Datum payload, int16 priority,
				 Oid tenant, const char *misfire, const char *overlap,
				 bool replace, bool active, TimestampTz next, Oid caller)
{
	static SPIPlanPtr plan = NULL;
	char		nulls[12];
	bool		isnull;
	Datum		saved;

	hs_check_schedule_target(queue, payload);
	/*
	 * A schedule of that name: replaced only when asked to and when it is
	 * the caller's (another tenant's reads as taken, like any name in use).
	 */
	{
		Datum		nv[1];

		nv[0] = CStringGetTextDatum(name);
		if (SPI_execute_with_args("SELECT tenant FROM hasched.schedule WHERE name = $1 FOR UPDATE",
								  1, (Oid[]) {TEXTOID}, nv, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "hasched: reading schedule failed");
		if (SPI_processed == 1 &&
			(!replace ||
			 !hs_tenant_visible(caller, DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
																	   SPI_tuptable->tupdesc, 1,
																	   &(bool) {false})))))
			ereport(ERROR,
					(errcode(HS_ERRCODE_DUPLICATE_SCHEDULE),
					 errmsg("schedule \"%s\" already exists", name),
					 errhint(replace ? "Schedule names are shared by all tenants: choose another name." :
							 "Pass replace => true to change it, or choose another name.")));
	}
	hs_plan(&plan, "INSERT INTO hasched.schedule AS s (name, spec, timezone, queue, payload,"
			" priority, tenant, owner, misfire, overlap, next_run_at, active)"
			" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
			" ON CONFLICT (name) DO UPDATE SET spec = excluded.spec,"
			" timezone = excluded.timezone, queue = excluded.queue,"
			" payload = excluded.payload, priority = excluded.priority,"
			" tenant = excluded.tenant, owner = excluded.owner,"
			" misfire = excluded.misfire, overlap = excluded.overlap,"
			" next_run_at = excluded.next_run_at, active = excluded.active,"
			" queued_fires = 0"
			" RETURNING next_run_at",
			12, TEXTOID, TEXTOID, TEXTOID, TEXTOID, JSONBOID, INT2OID,
			REGROLEOID, REGROLEOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, BOOLOID);
	memset(nulls, ' ', sizeof(nulls));
	if (!active)
		nulls[10] = 'n';
	/* the schedule is the caller's SQL: its runs have the caller's rights */
	if (SPI_execute_plan(plan,
						 (Datum[]) {CStringGetTextDatum(name), CStringGetTextDatum(spec),
							CStringGetTextDatum(zone), CStringGetTextDatum(queue), payload,
							Int16GetDatum(priority), ObjectIdGetDatum(tenant), ObjectIdGetDatum(caller),
							CStringGetTextDatum(misfire), CStringGetTextDatum(overlap),
							TimestampTzGetDatum(next), BoolGetDatum(active)},
						 nulls, false, 0) != SPI_OK_INSERT_RETURNING ||
		SPI_processed != 1)
		elog(ERROR, "hasched: saving schedule \"%s\" failed", name);
	saved = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? DT_NOEND : DatumGetTimestampTz(saved);
}

/*
 * Lock the caller's schedule of that name, or raise JQ022 when there is none
 * that the caller may see (another tenant's reads as missing).  Leaves the
 * row (tenant, spec, timezone, active, next_run_at) in SPI_tuptable.
 */
static void
lock_own_schedule(const char *name, Oid caller)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[1];

	hs_plan(&plan, "SELECT tenant, spec, timezone, active, next_run_at"
			" FROM hasched.schedule WHERE name = $1 FOR UPDATE",
			1, TEXTOID);
	values[0] = CStringGetTextDatum(name);
	if (SPI_execute_plan(plan, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "hasched: reading schedule failed");
	if (SPI_processed != 1 ||
		!hs_tenant_visible(caller, DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
																  SPI_tuptable->tupdesc, 1,
																  &(bool) {false}))))
		ereport(ERROR,
				(errcode(HS_ERRCODE_UNKNOWN_SCHEDULE),
				 errmsg("schedule \"%s\" does not exist", name),
				 errhint("List your schedules with SELECT name FROM hasched.schedules.")));
}

/*
 * Delete the caller's schedule of that name (JQ022 when there is none that
 * the caller may see).  Inside SPI, as the owner.
 */
static void
hs_schedule_delete_spi(const char *name, Oid caller)
{
	Datum		values[1];

	lock_own_schedule(name, caller);
	values[0] = CStringGetTextDatum(name);
	if (SPI_execute_with_args("DELETE FROM hasched.schedule WHERE name = $1", 1,
							  (Oid[]) {TEXTOID}, values, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "hasched: deleting schedule failed");
}

/*
 * Pause (active false) or resume the caller's schedule of that name
 * (JQ022 when there is none that the caller may see); returns its next run,
 * DT_NOEND while paused.  A paused schedule has no next run and no queued
 * run; a resumed one goes on from now, so the runs it missed while paused
 * are not made up (and no misfire is recorded for them).  Changing nothing
 * (pausing a paused one, resuming an active one) leaves the row as it is.
 * Inside SPI, as the owner.
 */
static TimestampTz
hs_schedule_set_active_spi(const char *name, bool active, Oid caller)
{
	static SPIPlanPtr plan = NULL;
	HeapTuple	row;
	TupleDesc	desc;
	bool		isnull;
	bool		was_active;
	Datum		current;
	TimestampTz next = DT_NOEND;
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};

	lock_own_schedule(name, caller);
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	was_active = DatumGetBool(SPI_getbinval(row, desc, 4, &isnull));
	if (was_active == active)
	{
		current = SPI_getbinval(row, desc, 5, &isnull);
		return isnull ? DT_NOEND : DatumGetTimestampTz(current);
	}
	if (active)
	{
		CronSpec	cs;

		hs_parse_spec(SPI_getvalue(row, desc, 2), &cs);
		next = hs_schedule_next_time(&cs, hs_find_timezone(SPI_getvalue(row, desc, 3)),
									 GetCurrentTimestamp());
	}

	hs_plan(&plan, "UPDATE hasched.schedule SET active = $2, next_run_at = $3,"
			" queued_fires = 0 WHERE name = $1",
			3, TEXTOID, BOOLOID, TIMESTAMPTZOID);
	values[0] = CStringGetTextDatum(name);
	values[1] = BoolGetDatum(active);
	values[2] = TimestampTzGetDatum(next);
	if (TIMESTAMP_IS_NOEND(next))
		nulls[2] = 'n';
	if (SPI_execute_plan(plan, values, nulls, false, 0) != SPI_OK_UPDATE || SPI_processed != 1)
		elog(ERROR, "hasched: changing schedule \"%s\" failed", name);
	return next;
}

/*
 * The three changes the API makes, each in a privileged section of its own
 * (as the extension owner, inside SPI) for the caller's schedule.
 */
TimestampTz
hs_schedule_save(const char *name, const char *spec, const char *zone,
				 const char *queue, Datum payload, int16 priority,
				 Oid tenant, const char *misfire, const char *overlap,
				 bool replace, bool active, TimestampTz next, Oid caller)
{
	HsPrivileged priv;

	hs_privileged_enter(&priv);
	SPI_connect();
	next = hs_schedule_save_spi(name, spec, zone, queue, payload, priority, tenant,
								misfire, overlap, replace, active, next, caller);
	SPI_finish();
	hs_privileged_leave(&priv);
	return next;
}

TimestampTz
hs_schedule_set_active(const char *name, bool active, Oid caller)
{
	HsPrivileged priv;
	TimestampTz next;

	hs_privileged_enter(&priv);
	SPI_connect();
	next = hs_schedule_set_active_spi(name, active, caller);
	SPI_finish();
	hs_privileged_leave(&priv);
	return next;
}

void
hs_schedule_delete(const char *name, Oid caller)
{
	HsPrivileged priv;

	hs_privileged_enter(&priv);
	SPI_connect();
	hs_schedule_delete_spi(name, caller);
	SPI_finish();
	hs_privileged_leave(&priv);
}

/* ------------------------------------------------------------------------
 * Firing due schedules (the scheduler, inside its transaction and SPI)
 * ------------------------------------------------------------------------ */

typedef struct DueSchedule
{
	char	   *name;
	char	   *spec;
	char	   *zone;
	char	   *queue;
	Datum		payload;
	int16		priority;
	Oid			tenant;
	Oid			owner;
	char	   *misfire;
	char	   *overlap;
	TimestampTz next_run_at;
	bool		has_next;
	int32		queued_fires;
	bool		last_active;
} DueSchedule;

/*
 * An event about a schedule, for its tenant's eyes (and administrators'):
 * hasched.event shows other roles only the events of no tenant.
 */
static void
log_event(const char *kind, const DueSchedule *d, const char *detail)
{
	Datum		values[4];

	values[0] = CStringGetTextDatum(kind);
	values[1] = CStringGetTextDatum(d->name);
	values[2] = CStringGetTextDatum(detail ? detail : "");
	values[3] = ObjectIdGetDatum(d->tenant);
	if (SPI_execute_with_args("INSERT INTO hasched.event (kind, detail, tenant)"
							  " VALUES ($1, jsonb_build_object('schedule', $2::text, 'detail', $3::text), $4)",
							  4, (Oid[]) {TEXTOID, TEXTOID, TEXTOID, REGROLEOID}, values, NULL, false,
							  0) != SPI_OK_INSERT)
		elog(ERROR, "hasched: writing an event failed");
}

/*
 * A schedule whose owner or tenant was dropped (or whose tenant may no
 * longer be one) stops: it is deactivated, with an event that says why,
 * rather than refused once a run.  An administrator who turns it on again
 * sees it stop again until its roles are put right.
 */
static void
deactivate(const DueSchedule *d, const char *why)
{
	Datum		values[1];

	ereport(LOG,
			(errmsg("hasched: schedule \"%s\" deactivated: %s", d->name, why)));
	log_event("schedule_deactivated", d, why);
	values[0] = CStringGetTextDatum(d->name);
	if (SPI_execute_with_args("UPDATE hasched.schedule SET active = false WHERE name = $1",
							  1, (Oid[]) {TEXTOID}, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "hasched: deactivating schedule \"%s\" failed", d->name);
}

/*
 * Submit one run of a schedule in a subtransaction: a refusal (quota, a
 * dropped tenant, a queue removed) is logged as an event and does not stop
 * the other schedules.  Returns the job id, or 0.
 */
typedef struct ScheduleRun
{
	DueSchedule *d;
	TimestampTz fire_at;
	int64		id;
} ScheduleRun;

static void
submit_run_step(void *arg)
{
	ScheduleRun *r = arg;
	DueSchedule *d = r->d;
	HsSubmit	a;

	memset(&a, 0, sizeof(a));
	a.queue = d->queue;
	a.priority = d->priority;
	a.run_at = GetCurrentTimestamp();
	a.tenant = hs_role_name(d->tenant);
	a.tenant_oid = d->tenant;
	a.owner = d->owner;
	a.submitted_by = d->owner;
	a.schedule = d->name;
	a.fire_at = r->fire_at;
	r->id = hs_submit_one(&a, d->payload, NULL);
}

static int64
submit_run(DueSchedule *d, TimestampTz fire_at)
{
	ScheduleRun r = {d, fire_at, 0};
	ErrorData  *edata = hs_run_isolated(submit_run_step, &r);

	if (edata == NULL)
		return r.id;
	ereport(LOG,
			(errmsg("hasched: run of schedule \"%s\" refused: %s", d->name, edata->message)));
	log_event("schedule_refused", d, edata->message);
	return 0;
}

/*
 * Fire every due schedule; returns the earliest next_run_at of the active
 * schedules (DT_NOEND if none), for the scheduler's next wake-up.
 */
TimestampTz
hs_fire_due_schedules(TimestampTz now)
{
	static SPIPlanPtr due_plan = NULL;
	static SPIPlanPtr update_plan = NULL;
	static SPIPlanPtr next_plan = NULL;
	int64		misfire_usec = (int64) hs_misfire_threshold * 1000;
	DueSchedule *due;
	uint64		ndue;
	Datum		values[1];
	bool		isnull;
	TimestampTz earliest = DT_NOEND;

	if (due_plan == NULL)
	{
		Oid			types[1] = {TIMESTAMPTZOID};

		due_plan = hs_prepare("SELECT s.name, s.spec, s.timezone, s.queue, s.payload, s.priority,"
							  " s.tenant, s.owner, s.misfire, s.overlap, s.next_run_at,"
							  " s.queued_fires,"
							  " EXISTS (SELECT 1 FROM hasched.job j WHERE j.id = s.last_job_id"
							  "   AND j.state IN ('scheduled', 'pending', 'running', 'dispatched', 'failed'))"
							  " FROM hasched.schedule s"
							  " WHERE s.active AND (s.next_run_at <= $1 OR s.queued_fires > 0)"
							  " ORDER BY s.next_run_at FOR UPDATE SKIP LOCKED", 1, types);
		update_plan = hs_prepare("UPDATE hasched.schedule SET next_run_at = $2,"
								 " last_run_at = coalesce($3, last_run_at),"
								 " last_job_id = coalesce($4, last_job_id), queued_fires = $5"
								 " WHERE name = $1", 5,
								 (Oid[]) {TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT8OID, INT4OID});
		next_plan = hs_prepare("SELECT min(next_run_at) FROM hasched.schedule WHERE active", 0, NULL);
	}

	values[0] = TimestampTzGetDatum(now);
	if (SPI_execute_plan(due_plan, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "hasched: reading due schedules failed");
	ndue = SPI_processed;
	due = palloc0(sizeof(DueSchedule) * (ndue + 1));
	for (uint64 i = 0; i < ndue; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		DueSchedule *d = &due[i];
		Datum		v;

		d->name = SPI_getvalue(tup, desc, 1);
		d->spec = SPI_getvalue(tup, desc, 2);
		d->zone = SPI_getvalue(tup, desc, 3);
		d->queue = SPI_getvalue(tup, desc, 4);
		d->payload = datumCopy(SPI_getbinval(tup, desc, 5, &isnull), false, -1);
		d->priority = DatumGetInt16(SPI_getbinval(tup, desc, 6, &isnull));
		d->tenant = DatumGetObjectId(SPI_getbinval(tup, desc, 7, &isnull));
		d->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 8, &isnull));
		d->misfire = SPI_getvalue(tup, desc, 9);
		d->overlap = SPI_getvalue(tup, desc, 10);
		v = SPI_getbinval(tup, desc, 11, &isnull);
		d->has_next = !isnull;
		d->next_run_at = isnull ? DT_NOEND : DatumGetTimestampTz(v);
		d->queued_fires = DatumGetInt32(SPI_getbinval(tup, desc, 12, &isnull));
		d->last_active = DatumGetBool(SPI_getbinval(tup, desc, 13, &isnull));
	}

	for (uint64 i = 0; i < ndue; i++)
	{
		DueSchedule *d = &due[i];
		CronSpec	cs;
		char		err[CRON_ERRLEN];
		pg_tz	   *tz;
		TimestampTz next = d->next_run_at;
		TimestampTz fired_at = 0;
		int64		job = 0;
		int32		queued = d->queued_fires;
		Datum		uv[5];
		char		un[5] = {' ', ' ', ' ', ' ', ' '};
		char	   *why_not = hs_schedule_roles_refusal(d->owner, d->tenant);

		if (why_not)
		{
			deactivate(d, why_not);
			continue;
		}
		tz = pg_tzset(d->zone);
		if (!cron_parse(d->spec, &cs, err, sizeof(err)) || tz == NULL)
		{
			/* cannot happen through schedule(); a hand-edited row: park it */
			log_event("schedule_invalid", d, tz == NULL ? "unknown time zone" : err);
			next = DT_NOEND;
		}
		else
		{
			/* a queued run whose predecessor has finished goes first */
			if (queued > 0 && !d->last_active)
			{
				job = submit_run(d, now);
				fired_at = now;
				queued = 0;
				d->last_active = job != 0;
			}

			if (d->has_next && d->next_run_at <= now)
			{
				TimestampTz due_at = d->next_run_at;
				bool		missed = now - due_at > misfire_usec;

				if (missed && strcmp(d->misfire, "skip") == 0)
					log_event("misfire_skipped", d, timestamptz_to_str(due_at));
				else if (d->last_active && strcmp(d->overlap, "skip") == 0)
					log_event("overlap_skipped", d, timestamptz_to_str(due_at));
				else if (d->last_active && strcmp(d->overlap, "queue") == 0)
					queued = 1;
				else
				{
					job = submit_run(d, due_at);
					fired_at = due_at;
				}

				/* next run: after this one, or after now when runs were missed */
				next = hs_schedule_next_time(&cs, tz, missed ? now : due_at);
				for (int k = 0; k < 1000 && !TIMESTAMP_IS_NOEND(next) &&
					 now - next > misfire_usec; k++)
					next = hs_schedule_next_time(&cs, tz, next);
				if (!TIMESTAMP_IS_NOEND(next) && now - next > misfire_usec)
					next = hs_schedule_next_time(&cs, tz, now);
			}
		}

		uv[0] = CStringGetTextDatum(d->name);
		if (TIMESTAMP_IS_NOEND(next))
			un[1] = 'n';
		else
			uv[1] = TimestampTzGetDatum(next);
		if (fired_at == 0)
			un[2] = 'n';
		else
			uv[2] = TimestampTzGetDatum(fired_at);
		if (job == 0)
			un[3] = 'n';
		else
			uv[3] = Int64GetDatum(job);
		uv[4] = Int32GetDatum(queued);
		if (SPI_execute_plan(update_plan, uv, un, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "hasched: updating schedule \"%s\" failed", d->name);
	}

	if (SPI_execute_plan(next_plan, NULL, NULL, true, 1) == SPI_OK_SELECT && SPI_processed == 1)
	{
		Datum		v = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			earliest = DatumGetTimestampTz(v);
	}
	/* a queued run waits for its predecessor: look again soon */
	for (uint64 i = 0; i < ndue; i++)
		if (due[i].queued_fires > 0 || strcmp(due[i].overlap, "queue") == 0)
			earliest = Min(earliest, now + 100 * 1000);
	return earliest;
}
