/*-------------------------------------------------------------------------
 *
 * admin_api.c
 *		SQL functions for operators and everyone: health(), executors(),
 *		claim_cursors(), degradation(), and the pure helpers backoff_delay(),
 *		priority_value(), tenant_visible(); set_mode()'s wake-up.
 *
 * health() and executors() read shared memory only, so they answer on a
 * standby too and never wait on a table.
 *
 * IDENTIFICATION
 *		src/api/admin_api.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/spin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "core/hasched.h"

PG_FUNCTION_INFO_V1(hasched_health);
PG_FUNCTION_INFO_V1(hasched_executors);
PG_FUNCTION_INFO_V1(hasched_circuits);
PG_FUNCTION_INFO_V1(hasched_wake_workers);
PG_FUNCTION_INFO_V1(hasched_claim_cursors);
PG_FUNCTION_INFO_V1(hasched_backoff_delay);
PG_FUNCTION_INFO_V1(hasched_tenant_visible);
PG_FUNCTION_INFO_V1(hasched_tenant_visible_role);
PG_FUNCTION_INFO_V1(hasched_priority_value);
PG_FUNCTION_INFO_V1(hasched_degradation);

static const char *const exec_state_names[] = {"free", "starting", "idle", "woken", "busy"};

/* health(): a row per component (src/core/health.c). */
Datum
hasched_health(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HsHealthRow rows[HS_HEALTH_MAX_ROWS];
	int			n;

	InitMaterializedSRF(fcinfo, 0);
	n = hs_health_report(rows);
	for (int i = 0; i < n; i++)
	{
		Datum		out[3];
		bool		nulls[3] = {false};

		out[0] = CStringGetTextDatum(rows[i].component);
		out[1] = CStringGetTextDatum(rows[i].status);
		out[2] = CStringGetTextDatum(rows[i].detail);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, out, nulls);
	}
	return (Datum) 0;
}

Datum
hasched_executors(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	for (int i = 0; i < hs_max_executors; i++)
	{
		HsExecutorSlot s;
		Datum		out[5];
		bool		nulls[5] = {false};

		SpinLockAcquire(&hs_shared->mutex);
		s = hs_executors[i];
		SpinLockRelease(&hs_shared->mutex);
		out[0] = Int32GetDatum(i);
		out[1] = Int32GetDatum(s.pid);
		out[2] = CStringGetTextDatum(exec_state_names[s.state]);
		if (s.state == HS_EXEC_BUSY)
			out[3] = Int64GetDatum(s.job_id);
		else
			nulls[3] = true;
		if (s.since)
			out[4] = TimestampTzGetDatum(s.since);
		else
			nulls[4] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, out, nulls);
	}
	return (Datum) 0;
}

/* claim_cursors(): the claim cursors in this server's shared memory. */
Datum
hasched_claim_cursors(PG_FUNCTION_ARGS)
{
	InitMaterializedSRF(fcinfo, 0);
	hs_claim_cursors_report((ReturnSetInfo *) fcinfo->resultinfo);
	return (Datum) 0;
}

/* set_mode(): wake the scheduler and an executor when the mode commits. */
Datum
hasched_wake_workers(PG_FUNCTION_ARGS)
{
	hs_note_claimable((Datum) 0, GetCurrentTimestamp());
	hs_wake_scheduler_at_commit();
	PG_RETURN_VOID();
}

Datum
hasched_priority_value(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT16(hs_priority_arg(text_to_cstring(PG_GETARG_TEXT_PP(0))));
}

Datum
hasched_backoff_delay(PG_FUNCTION_ARGS)
{
	int32		attempt = PG_GETARG_INT32(0);
	Interval   *base = PG_GETARG_INTERVAL_P(1);
	Interval   *cap = PG_GETARG_INTERVAL_P(2);
	float8		jitter = PG_GETARG_FLOAT8(3);
	Interval   *result;
	int64		base_usec = hs_interval_usec(base);
	int64		cap_usec = hs_interval_usec(cap);

	if (attempt < 1)
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("attempt must be at least 1, not %d", attempt)));
	if (base_usec <= 0 || cap_usec < base_usec)
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("backoff base must be positive and no larger than the cap"),
				 errdetail("base %lld us, cap %lld us.", (long long) base_usec, (long long) cap_usec)));
	if (isnan(jitter) || jitter < 0 || jitter > 1)
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("jitter must be between 0 and 1, not %g", jitter)));

	/* no delay longer than hasched.max_timeout, whatever the queue says */
	cap_usec = Min(cap_usec, hs_max_timeout_usec());
	base_usec = Min(base_usec, cap_usec);

	result = palloc0(sizeof(Interval));
	result->time = hs_backoff_usec(attempt, base_usec, cap_usec, jitter);
	PG_RETURN_INTERVAL_P(result);
}

Datum
hasched_tenant_visible(PG_FUNCTION_ARGS)
{
	Name		tenant = PG_GETARG_NAME(0);

	PG_RETURN_BOOL(hs_role_visible(GetUserId(), NameStr(*tenant)));
}

/* tenant_visible(regrole): the row-level security of jobs, schedules, events */
Datum
hasched_tenant_visible_role(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(hs_tenant_visible(GetUserId(), PG_GETARG_OID(0)));
}

/*
 * degradation(): the automatic read-only mode and the hold-back as this
 * server's scheduler last decided them (src/core/degrade.c), from shared
 * memory.
 */
Datum
hasched_degradation(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HsDegradeStatus st;
	Datum		out[10];
	bool		nulls[10] = {false};
	Interval   *iv;

	InitMaterializedSRF(fcinfo, 0);
	hs_degrade_status(&st);
	out[0] = BoolGetDatum(st.read_only);
	if (st.read_only)
		out[1] = CStringGetTextDatum(st.read_only_why);
	else
		nulls[1] = true;
	if (st.read_only_since != 0)
		out[2] = TimestampTzGetDatum(st.read_only_since);
	else
		nulls[2] = true;
	out[3] = BoolGetDatum(st.overridden);
	out[4] = BoolGetDatum(st.holdback);
	if (st.holdback_since != 0)
		out[5] = TimestampTzGetDatum(st.holdback_since);
	else
		nulls[5] = true;
	if (st.backlog >= 0)
		out[6] = Int64GetDatum(st.backlog);
	else
		nulls[6] = true;
	if (st.oldest_due != 0)
		out[7] = TimestampTzGetDatum(st.oldest_due);
	else
		nulls[7] = true;
	if (st.sync_lag_us >= 0)
	{
		iv = palloc0(sizeof(Interval));
		iv->time = st.sync_lag_us;
		out[8] = IntervalPGetDatum(iv);
	}
	else
		nulls[8] = true;
	if (st.measured_at != 0)
		out[9] = TimestampTzGetDatum(st.measured_at);
	else
		nulls[9] = true;
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, out, nulls);
	return (Datum) 0;
}

/*
 * circuits(): the RabbitMQ dispatcher's circuit breakers of this server
 * (src/core/circuit.c), from shared memory.
 */
Datum
hasched_circuits(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HsCircuitInfo *c = palloc(sizeof(HsCircuitInfo) * HS_MAX_CIRCUITS);
	int			n;

	InitMaterializedSRF(fcinfo, 0);
	n = hs_circuit_snapshot(c, HS_MAX_CIRCUITS);
	for (int i = 0; i < n; i++)
	{
		Datum		out[8];
		bool		nulls[8] = {false};

		out[0] = CStringGetTextDatum(hs_circuit_kind_name(c[i].kind));
		out[1] = CStringGetTextDatum(c[i].name);
		out[2] = CStringGetTextDatum(hs_circuit_state_name(c[i].state));
		out[3] = TimestampTzGetDatum(c[i].since);
		out[4] = Int64GetDatum(c[i].window_calls);
		out[5] = Int64GetDatum(c[i].window_failures);
		out[6] = Int64GetDatum(c[i].total_failures);
		if (c[i].last_error[0])
			out[7] = CStringGetTextDatum(c[i].last_error);
		else
			nulls[7] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, out, nulls);
	}
	return (Datum) 0;
}
