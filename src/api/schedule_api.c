/*-------------------------------------------------------------------------
 *
 * schedule_api.c
 *		SQL functions for periodic jobs: schedule, alter_schedule (pause,
 *		resume), unschedule, schedule_next.
 *		Thin: read and check the arguments, refuse on a standby, then one
 *		call into core (schedule.c) as the extension owner.
 *
 * IDENTIFICATION
 *		src/api/schedule_api.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "pgtime.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "common/cron.h"
#include "core/hasched.h"

PG_FUNCTION_INFO_V1(hasched_schedule);
PG_FUNCTION_INFO_V1(hasched_alter_schedule);
PG_FUNCTION_INFO_V1(hasched_unschedule);
PG_FUNCTION_INFO_V1(hasched_schedule_next);

Datum
hasched_schedule_next(PG_FUNCTION_ARGS)
{
	char	   *spec = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *zone = text_to_cstring(PG_GETARG_TEXT_PP(1));
	TimestampTz after = PG_GETARG_TIMESTAMPTZ(2);
	CronSpec	cs;
	TimestampTz next;

	hs_parse_spec(spec, &cs);
	next = hs_schedule_next_time(&cs, hs_find_timezone(zone), after);
	if (TIMESTAMP_IS_NOEND(next))
		PG_RETURN_NULL();
	PG_RETURN_TIMESTAMPTZ(next);
}

static const char *
check_choice(const char *what, const char *value, const char *const *choices)
{
	for (int i = 0; choices[i]; i++)
		if (strcmp(value, choices[i]) == 0)
			return value;
	ereport(ERROR,
			(errcode(HS_ERRCODE_INVALID_ARGUMENT),
			 errmsg("invalid %s policy \"%s\"", what, value),
			 errhint("Use %s.", strcmp(what, "misfire") == 0 ?
					 "skip or run_once" : "skip, queue or allow")));
	return NULL;				/* keep compiler quiet */
}

/* The schedule name of alter_schedule() and unschedule(): not null. */
static char *
schedule_name_arg(FunctionCallInfo fcinfo)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("name must not be null")));
	return text_to_cstring(PG_GETARG_TEXT_PP(0));
}

/*
 * What schedule() and alter_schedule() return after changing a schedule:
 * its next run, NULL when it has none (paused); the scheduler is woken at
 * commit to pick the change up.
 */
static Datum
next_run_result(FunctionCallInfo fcinfo, TimestampTz next)
{
	hs_wake_scheduler_at_commit();
	if (TIMESTAMP_IS_NOEND(next))
		PG_RETURN_NULL();
	PG_RETURN_TIMESTAMPTZ(next);
}

/*
 * schedule(name, spec, queue, payload, priority, timezone, misfire, overlap,
 *			tenant, replace, active) returns the next run, NULL when created
 * paused.  (The 0.1.0 SQL declaration has no active: until ALTER EXTENSION
 * hasched UPDATE, calls come with ten arguments.)
 */
Datum
hasched_schedule(PG_FUNCTION_ARGS)
{
	static const char *const misfires[] = {"skip", "run_once", NULL};
	static const char *const overlaps[] = {"skip", "queue", "allow", NULL};
	Oid			caller = GetUserId();
	char	   *name;
	char	   *spec;
	char	   *queue;
	char	   *zone;
	char	   *tenant;
	Oid			tenant_oid;
	const char *misfire;
	const char *overlap;
	bool		replace;
	bool		active = true;
	int			priority;
	CronSpec	cs;
	TimestampTz next;

	for (int i = 0; i < 8; i++)
		if (PG_ARGISNULL(i))
			ereport(ERROR,
					(errcode(HS_ERRCODE_INVALID_ARGUMENT),
					 errmsg("name, spec, queue, payload, priority, timezone, misfire and overlap must not be null")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	spec = text_to_cstring(PG_GETARG_TEXT_PP(1));
	queue = text_to_cstring(PG_GETARG_TEXT_PP(2));
	zone = text_to_cstring(PG_GETARG_TEXT_PP(5));
	hs_check_text_arg("schedule name", name, HS_QUEUE_NAME_MAX - 1);
	if (strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-") != strlen(name))
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("invalid schedule name \"%s\"", name),
				 errhint("Use letters, digits and _ . : - only.")));
	hs_parse_spec(spec, &cs);
	priority = hs_priority_arg(text_to_cstring(PG_GETARG_TEXT_PP(4)));
	misfire = check_choice("misfire", text_to_cstring(PG_GETARG_TEXT_PP(6)), misfires);
	overlap = check_choice("overlap", text_to_cstring(PG_GETARG_TEXT_PP(7)), overlaps);
	replace = PG_ARGISNULL(9) ? false : PG_GETARG_BOOL(9);
	if (PG_NARGS() > 10)
	{
		if (PG_ARGISNULL(10))
			ereport(ERROR,
					(errcode(HS_ERRCODE_INVALID_ARGUMENT),
					 errmsg("active must not be null"),
					 errhint("Pass active => false to create the schedule paused, true (the default) to start it.")));
		active = PG_GETARG_BOOL(10);
	}
	tenant = PG_ARGISNULL(8) ? NULL : pstrdup(NameStr(*PG_GETARG_NAME(8)));
	if (tenant == NULL)
		tenant = (hs_tenant && hs_tenant[0]) ? pstrdup(hs_tenant) :
			GetUserNameFromId(caller, false);
	tenant_oid = hs_tenant_role(tenant);
	if (!hs_tenant_visible(caller, tenant_oid))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to schedule jobs for tenant \"%s\"", tenant),
				 errhint("Ask an administrator to GRANT %s TO %s.",
						 quote_identifier(tenant),
						 quote_identifier(GetUserNameFromId(caller, false)))));
	next = hs_schedule_next_time(&cs, hs_find_timezone(zone), GetCurrentTimestamp());
	if (TIMESTAMP_IS_NOEND(next) && cs.every_usec > 0)
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_SCHEDULE),
				 errmsg("schedule \"%s\" never fires: its @every interval reaches past the last time PostgreSQL can store", spec),
				 errhint("Use a shorter @every interval; timestamps end in the year 294276.")));
	if (TIMESTAMP_IS_NOEND(next))
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_SCHEDULE),
				 errmsg("schedule \"%s\" never fires", spec),
				 errhint("Check the day and month fields, e.g. February has no 30th.")));
	hs_require_primary("create schedules");

	next = hs_schedule_save(name, spec, zone, queue, PG_GETARG_DATUM(3), (int16) priority,
							tenant_oid, misfire, overlap, replace, active, next, caller);
	return next_run_result(fcinfo, next);
}

/*
 * alter_schedule(name, active) pauses (false) or resumes (true) a schedule;
 * returns its next run, NULL while paused.
 */
Datum
hasched_alter_schedule(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	char	   *name;
	bool		active;

	name = schedule_name_arg(fcinfo);
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("active must not be null"),
				 errhint("Pass active => false to pause the schedule, active => true to resume it.")));
	active = PG_GETARG_BOOL(1);
	hs_require_primary("change schedules");

	return next_run_result(fcinfo, hs_schedule_set_active(name, active, caller));
}

Datum
hasched_unschedule(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	char	   *name;

	name = schedule_name_arg(fcinfo);
	hs_require_primary("remove schedules");

	hs_schedule_delete(name, caller);
	PG_RETURN_VOID();
}
