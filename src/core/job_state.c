/*-------------------------------------------------------------------------
 *
 * job_state.c
 *		The job state machine: the table of allowed transitions, the trigger
 *		that enforces it on every write of hasched.job, and every statement
 *		of hasched that changes a job's state (lease, complete, fail, expire,
 *		retry after a failover or a lost executor, cancel, retry).
 *
 * An attempt ends in one of two ways: success (complete), or a failed
 * attempt that either retries (state failed, run_at after a backoff or
 * now) or, with its attempts spent or no retry wanted, goes dead.  The
 * second is written once, in end_attempt_sql(), and used by fail(), by the
 * expiry of leases, and by the scheduler for attempts whose process went
 * away (a failover, an executor that exited).
 *
 * IDENTIFICATION
 *		src/core/job_state.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/rel.h"

#include "core/hasched.h"

PG_FUNCTION_INFO_V1(hasched_job_state_trigger);

static const char *const state_names[HS_NUM_STATES] = {
	"scheduled", "pending", "running", "dispatched",
	"succeeded", "failed", "dead", "cancelled"
};

/*
 * allowed[from][to].  Waiting states (scheduled, pending, failed) lead to
 * running (leased), dispatched (sent to a broker) or cancelled; a lease
 * ends in succeeded, failed (another attempt after backoff), dead or
 * cancelled, or goes back to pending when an executor gives back a job it
 * claimed and never started (the attempt is not counted); retry() brings
 * dead and cancelled jobs back; succeeded is final.
 */
static const bool allowed[HS_NUM_STATES][HS_NUM_STATES] = {
	/* to:           sched  pend   run    disp   succ   fail   dead   canc */
	/* scheduled */ {false, true, true, true, false, false, false, true},
	/* pending   */ {true, false, true, true, false, false, false, true},
	/* running   */ {false, true, false, false, true, true, true, true},
	/* dispatched */ {false, true, true, false, true, true, true, true},
	/* succeeded */ {false, false, false, false, false, false, false, false},
	/* failed    */ {false, true, true, true, false, false, false, true},
	/* dead      */ {false, true, false, false, false, false, false, false},
	/* cancelled */ {false, true, false, false, false, false, false, false},
};

const char *
hs_state_name(HsJobState state)
{
	Assert(state >= 0 && state < HS_NUM_STATES);
	return state_names[state];
}

HsJobState
hs_state_from_name(const char *name)
{
	for (int i = 0; i < HS_NUM_STATES; i++)
		if (strcmp(name, state_names[i]) == 0)
			return (HsJobState) i;
	elog(ERROR, "unknown job state \"%s\"", name);
	return HS_STATE_PENDING;	/* keep compiler quiet */
}

bool
hs_transition_allowed(HsJobState from, HsJobState to)
{
	return allowed[from][to];
}

/* Waiting states are the ones in the claim index. */
bool
hs_state_is_waiting(HsJobState state)
{
	return state == HS_STATE_SCHEDULED || state == HS_STATE_PENDING ||
		state == HS_STATE_FAILED;
}

/* ------------------------------------------------------------------------
 * The state trigger
 * ------------------------------------------------------------------------ */

/* enum OIDs of hasched.job_state, looked up once per type OID */
static Oid	state_type_oid = InvalidOid;
static Oid	state_oids[HS_NUM_STATES];

static HsJobState
state_from_datum(Oid typoid, Datum value)
{
	Oid			oid = DatumGetObjectId(value);

	if (typoid != state_type_oid)
	{
		for (int i = 0; i < HS_NUM_STATES; i++)
			state_oids[i] = DatumGetObjectId(DirectFunctionCall2(enum_in,
																 CStringGetDatum(state_names[i]),
																 ObjectIdGetDatum(typoid)));
		state_type_oid = typoid;
	}
	for (int i = 0; i < HS_NUM_STATES; i++)
		if (state_oids[i] == oid)
			return (HsJobState) i;
	elog(ERROR, "unknown job state OID %u", oid);
	return HS_STATE_PENDING;	/* keep compiler quiet */
}

/*
 * The attribute numbers of the columns the trigger reads, found by name once
 * per tuple descriptor (and checked by name at every use, so a changed
 * table is never read by stale numbers).
 */
typedef enum JobAtt
{
	ATT_ID, ATT_QUEUE, ATT_PRIORITY, ATT_STATE, ATT_RUN_AT, ATT_ATTEMPT,
	ATT_MAX_ATTEMPTS, ATT_TIMEOUT, NUM_JOB_ATTS
} JobAtt;

static const char *const job_att_names[NUM_JOB_ATTS] = {
	"id", "queue", "priority", "state", "run_at", "attempt", "max_attempts", "timeout"
};

static TupleDesc job_atts_desc = NULL;
static int	job_atts[NUM_JOB_ATTS];

static const int *
job_attnums(TupleDesc tupdesc)
{
	bool		valid = tupdesc == job_atts_desc;

	for (int i = 0; i < NUM_JOB_ATTS && valid; i++)
	{
		Form_pg_attribute att;

		valid = job_atts[i] <= tupdesc->natts;
		if (!valid)
			break;
		att = TupleDescAttr(tupdesc, job_atts[i] - 1);
		valid = !att->attisdropped &&
			strcmp(NameStr(att->attname), job_att_names[i]) == 0;
	}
	if (!valid)
	{
		for (int i = 0; i < NUM_JOB_ATTS; i++)
		{
			job_atts[i] = SPI_fnumber(tupdesc, job_att_names[i]);
			if (job_atts[i] <= 0)
				elog(ERROR, "hasched_job_state_trigger: table has no column %s",
					 job_att_names[i]);
		}
		job_atts_desc = tupdesc;
	}
	return job_atts;
}

/*
 * The ranges a job's numbers must keep (CHECK constraints, done here).  The
 * timeout is held to hasched.max_timeout only when it is set (a new row, or
 * a changed timeout): a row from before the bound (or a lower one) still
 * changes state, and its executor refuses to run it, saying why.  oldslot:
 * the row before an UPDATE, NULL for an INSERT.
 */
static void
check_job_ranges(TupleTableSlot *slot, TupleTableSlot *oldslot, const int *atts)
{
	bool		isnull;
	int16		priority = DatumGetInt16(slot_getattr(slot, atts[ATT_PRIORITY], &isnull));
	int32		attempt = DatumGetInt32(slot_getattr(slot, atts[ATT_ATTEMPT], &isnull));
	int32		max_attempts = DatumGetInt32(slot_getattr(slot, atts[ATT_MAX_ATTEMPTS], &isnull));
	Datum		timeout = slot_getattr(slot, atts[ATT_TIMEOUT], &isnull);

	if (priority < HS_PRIORITY_MIN || priority > HS_PRIORITY_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("job priority %d is out of range 0..9", priority)));
	if (attempt < 0 || max_attempts < 1)
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("job attempt must be at least 0 and max_attempts at least 1, not %d and %d",
						attempt, max_attempts)));
	if (isnull || hs_interval_usec(DatumGetIntervalP(timeout)) <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("job timeout must be positive")));
	if (oldslot != NULL)
	{
		bool		oldnull;
		Datum		old = slot_getattr(oldslot, atts[ATT_TIMEOUT], &oldnull);

		if (!oldnull && memcmp(DatumGetIntervalP(old), DatumGetIntervalP(timeout),
							   sizeof(Interval)) == 0)
			return;
	}
	hs_check_interval_arg("timeout", DatumGetIntervalP(timeout));
}

/*
 * Who may INSERT a job row as it is given: in any state, with its run_at
 * kept even when past (the ranges are still checked).  pg_restore does
 * that: COPY puts back jobs running, finished, failed, with their history.
 * A superuser may, when writing directly (not through hasched's functions,
 * which run as the extension owner in a security-restricted context, nor
 * a SECURITY DEFINER function, nor a job run by an executor).  Everyone
 * else, and hasched itself, keeps the rule that a new job starts scheduled
 * or pending, with run_at not before now.
 *
 * A waiting job restored with a run_at in the past may sit behind a claim
 * cursor of its queue that moved in the meantime: the next rescan from the
 * head (hasched.claim_rewind_interval) finds it.  In a freshly restored
 * server there is no cursor yet.
 */
static bool
insert_as_restored(void)
{
	return superuser() && !InLocalUserIdChange() && !InSecurityRestrictedOperation();
}

/*
 * Count a transition for /metrics (metrics.c; added to shared memory when
 * the transaction commits).  A start counts the delay from the job being
 * due (its run_at) to now; a start from dispatched is not a new attempt.
 */
static void
count_transition(HsJobState from, HsJobState to, TimestampTz run_at)
{
	switch (to)
	{
		case HS_STATE_RUNNING:
			if (from != HS_STATE_DISPATCHED)
				hs_metrics_start_delay(run_at, GetCurrentTimestamp());
			break;
		case HS_STATE_DISPATCHED:
			hs_metrics_start_delay(run_at, GetCurrentTimestamp());
			break;
		case HS_STATE_SUCCEEDED:
			hs_metrics_count(HS_CTR_SUCCEEDED, 1);
			break;
		case HS_STATE_FAILED:
			hs_metrics_count(HS_CTR_FAILED, 1);
			break;
		case HS_STATE_DEAD:
			hs_metrics_count(HS_CTR_DEAD, 1);
			break;
		case HS_STATE_CANCELLED:
			hs_metrics_count(HS_CTR_CANCELLED, 1);
			break;
		default:
			break;
	}
}

/*
 * The columns are read from the trigger's slots, which deform the tuple
 * once for all of them.
 */
Datum
hasched_job_state_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	tupdesc;
	const int  *atts;
	HeapTuple	newtup;
	TupleTableSlot *newslot;
	Oid			state_type;
	bool		isnull;
	HsJobState	to;
	bool		becomes_claimable;
	bool		as_given = false;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		elog(ERROR, "hasched_job_state_trigger: must be fired before, for each row");

	tupdesc = trigdata->tg_relation->rd_att;
	atts = job_attnums(tupdesc);
	state_type = TupleDescAttr(tupdesc, atts[ATT_STATE] - 1)->atttypid;

	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		newtup = trigdata->tg_newtuple;
		newslot = trigdata->tg_newslot;
	}
	else
	{
		newtup = trigdata->tg_trigtuple;
		newslot = trigdata->tg_trigslot;
	}

	to = state_from_datum(state_type, slot_getattr(newslot, atts[ATT_STATE], &isnull));
	check_job_ranges(newslot,
					 TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ? trigdata->tg_trigslot : NULL,
					 atts);

	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
	{
		as_given = insert_as_restored();
		if (!as_given && to != HS_STATE_SCHEDULED && to != HS_STATE_PENDING)
			ereport(ERROR,
					(errcode(HS_ERRCODE_INVALID_TRANSITION),
					 errmsg("a new job cannot start in state %s", hs_state_name(to)),
					 errhint("Submit jobs with hasched.submit(); they start scheduled or pending.")));
		becomes_claimable = hs_state_is_waiting(to);
		if (!as_given)
			hs_metrics_count(HS_CTR_SUBMITTED, 1);
	}
	else if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		TupleTableSlot *oldslot = trigdata->tg_trigslot;
		HsJobState	from;
		bool		run_at_changed;
		Datum		old_run_at;
		Datum		new_run_at;

		from = state_from_datum(state_type, slot_getattr(oldslot, atts[ATT_STATE], &isnull));
		if (from != to && !hs_transition_allowed(from, to))
			ereport(ERROR,
					(errcode(HS_ERRCODE_INVALID_TRANSITION),
					 errmsg("job %lld cannot go from %s to %s",
							(long long) DatumGetInt64(slot_getattr(oldslot, atts[ATT_ID], &isnull)),
							hs_state_name(from), hs_state_name(to)),
					 errdetail("That transition is not in the hasched job state machine.")));

		old_run_at = slot_getattr(oldslot, atts[ATT_RUN_AT], &isnull);
		new_run_at = slot_getattr(newslot, atts[ATT_RUN_AT], &isnull);
		run_at_changed = DatumGetTimestampTz(old_run_at) != DatumGetTimestampTz(new_run_at);
		becomes_claimable = hs_state_is_waiting(to) &&
			(!hs_state_is_waiting(from) || run_at_changed);
		if (from != to)
			count_transition(from, to, DatumGetTimestampTz(old_run_at));

		/*
		 * For the claim cursors (claim.c): this transaction holds a waiting
		 * row locked, so claims may pass it; if it rolls back, the row is
		 * waiting again where they passed.  A row it leaves waiting with
		 * the same run_at (a hand UPDATE of priority, queue or payload) may
		 * be behind the cursors of its new place: reset those at its end.
		 */
		if (hs_state_is_waiting(from))
		{
			int			queue_att = atts[ATT_QUEUE];

			hs_claim_note_locked(TextDatumGetCString(slot_getattr(oldslot, queue_att, &isnull)));
			if (hs_state_is_waiting(to) && !run_at_changed)
				hs_claim_note_reset_at_end(TextDatumGetCString(slot_getattr(newslot, queue_att,
																			&isnull)));
		}
	}
	else
		elog(ERROR, "hasched_job_state_trigger: must be fired for INSERT or UPDATE");

	/*
	 * A job that becomes claimable: register this transaction as a writer
	 * first, then make sure run_at is not before the time it registered
	 * (if it is, it becomes now).  Claim cursors rely on both (see
	 * claim.c).  A submit computes run_at after registering, so its rows
	 * need no change here.  A restored row keeps its run_at (see
	 * insert_as_restored).
	 */
	if (becomes_claimable)
	{
		TimestampTz run_at;
		TimestampTz since;

		since = hs_writer_note();
		run_at = DatumGetTimestampTz(slot_getattr(newslot, atts[ATT_RUN_AT], &isnull));
		if (run_at < since && !as_given)
		{
			TimestampTz now = GetCurrentTimestamp();
			int			cols[1] = {atts[ATT_RUN_AT]};
			Datum		vals[1] = {TimestampTzGetDatum(now)};
			bool		nulls[1] = {false};

			newtup = heap_modify_tuple_by_cols(newtup, tupdesc, 1, cols, vals, nulls);
			run_at = now;
		}
		hs_note_claimable(slot_getattr(newslot, atts[ATT_QUEUE], &isnull), run_at);
	}

	return PointerGetDatum(newtup);
}

/* ------------------------------------------------------------------------
 * Leasing: the claim's UPDATE of the rows it picked (claim.c builds the
 * rest of the statement around it)
 * ------------------------------------------------------------------------ */

/*
 * The UPDATE that leases the rows whose ctids the CTE "c" holds.  Its
 * parameters: $2 now, $4 lease, $5 worker, $6 whether the lease also covers
 * the job's timeout, $7 the epoch of the current timeline (claim.c).
 */
const char *
hs_lease_update_sql(void)
{
	return "UPDATE hasched.job j"
		" SET state = 'running', attempt = j.attempt + 1,"
		" epoch = $7,"
		" lease_id = nextval('hasched.lease_id_seq'),"
		" lease_until = $2 + $4 + CASE WHEN $6"
		"   THEN least(j.timeout, " HS_TIMEOUT_CAP_SQL ") ELSE interval '0' END,"
		" worker = $5, started_at = $2,"
		" finished_at = NULL"
		" WHERE j.ctid = ANY (ARRAY(SELECT c.ctid FROM c))"
		" RETURNING j.id, j.epoch, j.attempt, j.lease_id, j.payload,"
		" j.priority, pg_get_userbyid(j.tenant), j.timeout, j.lease_until, j.run_at,"
		" j.owner, j.submitted_by";
}

/* ------------------------------------------------------------------------
 * Reports on a lease: heartbeat, complete, fail
 * ------------------------------------------------------------------------ */

static void
lease_params(const HsLease *lease, Datum *values)
{
	values[0] = Int64GetDatum(lease->job_id);
	values[1] = Int32GetDatum(lease->epoch);
	values[2] = Int32GetDatum(lease->attempt);
	values[3] = Int64GetDatum(lease->lease_id);
}

/* lease_params of a batch: $1 to $4 the arrays of n leases' keys */
static void
lease_array_params(int n, Datum *ids, Datum *epochs, Datum *attempts,
				   Datum *lease_ids, Datum *values)
{
	values[0] = hs_int8_array(ids, n);
	values[1] = hs_int4_array(epochs, n);
	values[2] = hs_int4_array(attempts, n);
	values[3] = hs_int8_array(lease_ids, n);
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
void
hs_stale_lease(const HsLease *lease, const char *what)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[1];

	hs_plan(&plan, "SELECT state::text FROM hasched.job WHERE id = $1",
			1, INT8OID);
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

/*
 * Extend the lease to lease_iv from now (lease_null: the queue's lease).
 * Returns the new end; a stale lease is an error.  Inside SPI, as the owner.
 */
TimestampTz
hs_report_heartbeat(const HsLease *lease, Datum lease_iv, bool lease_null)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	bool		isnull;

	hs_plan(&plan, "UPDATE hasched.job j SET lease_until = clock_timestamp() +"
			" coalesce($5, (SELECT q.lease FROM hasched.queue q WHERE q.name = j.queue),"
			" interval '30 seconds')"
			" WHERE" LEASE_MATCH " RETURNING lease_until",
			5, INT8OID, INT4OID, INT4OID, INT8OID, INTERVALOID);
	lease_params(lease, values);
	if (lease_null)
		nulls[4] = 'n';
	else
		values[4] = lease_iv;
	if (SPI_execute_plan(plan, values, nulls, false, 1) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "hasched: heartbeat failed");
	if (SPI_processed == 0)
		hs_stale_lease(lease, "heartbeat");
	return DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
											 SPI_tuptable->tupdesc, 1, &isnull));
}

/* A result larger than hasched.max_result_bytes is refused (JQ012). */
void
hs_check_result_size(int64 job_id, Datum result)
{
	Size		size = toast_raw_datum_size(result);

	if (size > (Size) hs_max_result_bytes)
		ereport(ERROR,
				(errcode(HS_ERRCODE_PAYLOAD_TOO_LARGE),
				 errmsg("the result of job %lld is larger than hasched.max_result_bytes (%s)",
						(long long) job_id, GetConfigOptionByName("hasched.max_result_bytes", NULL, false)),
				 errdetail("It is %zu bytes. Nothing was recorded.", size),
				 errhint("Keep large results outside hasched (in a table, an object store) and return a reference to them; or raise hasched.max_result_bytes.")));
}

/*
 * Idempotent reports.  A worker whose report committed but whose reply was
 * lost (a failover between the commit and the reply, a broken connection)
 * sends the same report again with the same token.  That retry must succeed
 * without changing anything, while a token that never recorded this
 * attempt's outcome stays stale (JQ006).  How to tell them apart:
 *  - a success is the job row itself, which keeps the epoch, attempt and
 *    lease id of the attempt that succeeded (succeeded is final);
 *  - a failure recorded by fail() is the run row of that lease with outcome
 *    'failed' (lease ids are unique; an expired lease, a cancel or a
 *    failover writes another outcome, so a late report of those attempts
 *    is still stale).
 * The checks take a fresh snapshot (read_only = false): a retry that raced
 * with the first report waited for its row lock, and must see it committed.
 */
static bool
completed_by_lease(const HsLease *lease)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[4];

	hs_plan(&plan, "SELECT 1 FROM hasched.job WHERE id = $1 AND state::text = 'succeeded'"
			" AND epoch = $2 AND attempt = $3 AND lease_id = $4",
			4, INT8OID, INT4OID, INT4OID, INT8OID);
	lease_params(lease, values);
	if (SPI_execute_plan(plan, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "hasched: reading job failed");
	return SPI_processed > 0;
}

/*
 * The job's state now (an enum Datum) when the lease's failure was recorded
 * by fail(), else (Datum) 0.
 */
static Datum
failed_by_lease(const HsLease *lease)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[4];
	bool		isnull;

	hs_plan(&plan, "SELECT j.state FROM hasched.job j WHERE j.id = $1 AND EXISTS"
			" (SELECT 1 FROM hasched.job_run r WHERE r.job_id = $1 AND r.attempt = $3"
			" AND r.epoch = $2 AND r.lease_id = $4 AND r.outcome = 'failed')",
			4, INT8OID, INT4OID, INT4OID, INT8OID);
	lease_params(lease, values);
	if (SPI_execute_plan(plan, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "hasched: reading job failed");
	if (SPI_processed == 0)
		return (Datum) 0;
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
}

/*
 * Record the success of the lease's attempt.  True when recorded now, or
 * when this lease had already recorded it (a retried report: nothing
 * changes); false when the lease is not the job's current one (nothing
 * changed).  Inside SPI, as the owner.
 */
bool
hs_report_complete(const HsLease *lease, Datum result, bool result_null)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

	if (!result_null)
		hs_check_result_size(lease->job_id, result);
	hs_plan(&plan, "UPDATE hasched.job"
			" SET state = 'succeeded', finished_at = clock_timestamp(),"
			" result = $5, lease_until = NULL, last_error = NULL"
			" WHERE" LEASE_MATCH,
			5, INT8OID, INT4OID, INT4OID, INT8OID, JSONBOID);
	lease_params(lease, values);
	values[4] = result;
	if (result_null)
		nulls[4] = 'n';
	if (SPI_execute_plan(plan, values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "hasched: complete failed");
	return SPI_processed > 0 || completed_by_lease(lease);
}

/*
 * Record the success of n leases in one statement.  Returns how many
 * matched their job's current lease; the ids of those are left in
 * SPI_tuptable (column 1).  results: a jsonb[] with one element per job, or
 * results_null.  Inside SPI, as the owner.
 */
uint64
hs_report_complete_many(int n, Datum *ids, Datum *epochs, Datum *attempts,
						Datum *leases, Datum results, bool results_null)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

	hs_plan(&plan, "WITH i AS (SELECT * FROM unnest($1, $2, $3, $4, $5)"
			"   AS i (id, epoch, attempt, lease_id, result))"
			" UPDATE hasched.job j"
			" SET state = 'succeeded', finished_at = clock_timestamp(),"
			" result = i.result, lease_until = NULL, last_error = NULL"
			" FROM i WHERE j.id = i.id AND j.state::text = 'running' AND j.epoch = i.epoch"
			" AND j.attempt = i.attempt AND j.lease_id = i.lease_id"
			" RETURNING j.id",
			5, INT8ARRAYOID, INT4ARRAYOID, INT4ARRAYOID, INT8ARRAYOID, JSONBARRAYOID);
	lease_array_params(n, ids, epochs, attempts, leases, values);
	if (results_null)
		nulls[4] = 'n';
	else
		values[4] = results;
	if (SPI_execute_plan(plan, values, nulls, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "hasched: complete failed");
	return SPI_processed;
}

/*
 * Of n leases, the jobs that already succeeded under them (retried reports
 * of a batch): returns how many; their ids are left in SPI_tuptable
 * (column 1).  Inside SPI, as the owner.
 */
uint64
hs_completed_already_many(int n, Datum *ids, Datum *epochs, Datum *attempts,
						  Datum *leases)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[4];

	hs_plan(&plan, "SELECT j.id FROM unnest($1, $2, $3, $4) AS i (id, epoch, attempt, lease_id)"
			" JOIN hasched.job j ON j.id = i.id AND j.state::text = 'succeeded'"
			" AND j.epoch = i.epoch AND j.attempt = i.attempt AND j.lease_id = i.lease_id",
			4, INT8ARRAYOID, INT4ARRAYOID, INT4ARRAYOID, INT8ARRAYOID);
	lease_array_params(n, ids, epochs, attempts, leases, values);
	if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "hasched: reading jobs failed");
	return SPI_processed;
}

/*
 * The one statement that ends attempts as failed: another attempt while
 * attempts remain and `retry` holds (after a backoff when `backoff`, else
 * due now), otherwise dead; a run row records each ended attempt with
 * `outcome`.  filter selects the rows (alias j); retry and error are SQL
 * expressions.  Returns the statement's text; the new states come back as
 * its rows.
 */
static char *
end_attempt_sql(const char *filter, const char *retry, const char *error,
				const char *outcome, bool backoff)
{
	const char *again = psprintf("(%s) AND j.attempt < j.max_attempts", retry);

	return psprintf("WITH u AS (UPDATE hasched.job j SET"
					" state = CASE WHEN %s"
					"   THEN 'failed'::hasched.job_state ELSE 'dead'::hasched.job_state END,"
					" run_at = CASE WHEN %s THEN %s ELSE j.run_at END,"
					" finished_at = CASE WHEN %s THEN NULL ELSE clock_timestamp() END,"
					" last_error = %s, lease_until = NULL"
					" WHERE %s"
					" RETURNING j.id, j.attempt, j.epoch, j.lease_id, j.worker, j.started_at,"
					" j.state, j.last_error)"
					" INSERT INTO hasched.job_run (job_id, attempt, epoch, lease_id, worker,"
					" started_at, outcome, error)"
					" SELECT id, attempt, epoch, lease_id, worker, started_at, %s, last_error FROM u"
					" RETURNING (SELECT u.state FROM u WHERE u.id = job_id)",
					again, again,
					backoff ?
					"clock_timestamp() + hasched.backoff_delay(j.attempt,"
					" coalesce((SELECT q.backoff_base FROM hasched.queue q WHERE q.name = j.queue), interval '1 second'),"
					" coalesce((SELECT q.backoff_max FROM hasched.queue q WHERE q.name = j.queue), interval '1 hour'),"
					" random())" : "clock_timestamp()",
					again, error, filter, quote_literal_cstr(outcome));
}

/*
 * Record a failed attempt of the lease: retried after backoff (when retry
 * and attempts remain) or dead.  The error is kept up to
 * hasched.max_error_bytes.  Returns the new state (an enum Datum); when
 * this lease had already recorded its failure (a retried report), nothing
 * changes and the job's state now is returned; (Datum) 0 when the lease is
 * not the job's current one.
 */
Datum
hs_report_fail(const HsLease *lease, const char *error, bool retry)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[6];
	bool		isnull;

	hs_plan(&plan, end_attempt_sql("j.id = $1 AND j.state::text = 'running' AND j.epoch = $2"
			" AND j.attempt = $3 AND j.lease_id = $4",
			"$6", "$5", "failed", true),
			6, INT8OID, INT4OID, INT4OID, INT8OID, TEXTOID, BOOLOID);
	lease_params(lease, values);
	values[4] = CStringGetTextDatum(hs_clip_error(error));
	values[5] = BoolGetDatum(retry);
	if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "hasched: fail failed");
	if (SPI_processed == 0)
		return failed_by_lease(lease);
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
}

/*
 * Running jobs whose lease ended before upto and not before from (DT_NOBEGIN:
 * every one): failed attempts.  Returns how many.  The scan of
 * job_active_idx takes each queue's range [from, upto) as its condition
 * (queue = ANY (the queues) AND lease_until >= from AND lease_until < upto,
 * the times passed in: clock_timestamp() cannot be an index condition).  It
 * walks the entries of leases that ended in that range only, not the whole
 * index: under an old snapshot the index keeps a dead entry for every job
 * claimed since, and the scheduler runs this every round (over the leases
 * that ended since its last round; see requeue_expired_leases).
 */
uint64
hs_requeue_expired(TimestampTz from, TimestampTz upto)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[2];

	if (plan == NULL)
	{
		Oid			types[2] = {TIMESTAMPTZOID, TIMESTAMPTZOID};

		plan = hs_prepare(end_attempt_sql("j.ctid = ANY (ARRAY(SELECT x.ctid FROM hasched.job x"
										  " WHERE x.queue = ANY (ARRAY(SELECT q.name FROM hasched.queue q))"
										  " AND x.lease_until < $1 AND x.lease_until >= $2"
										  " AND x.state = 'running'"
										  " FOR UPDATE SKIP LOCKED))",
										  "true",
										  "'lease expired at ' || j.lease_until::text",
										  "lease_expired", true),
						  2, types);
	}
	values[0] = TimestampTzGetDatum(upto);
	values[1] = TimestampTzGetDatum(from);
	if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "hasched: requeue failed");
	return SPI_processed;
}

/*
 * requeue_expired() for one job: the scheduler's fallback when requeueing
 * every expired lease in one statement failed on some row.
 */
uint64
hs_requeue_expired_job(int64 job_id)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[1];

	hs_plan(&plan, end_attempt_sql("j.id = $1 AND j.state = 'running'"
			" AND j.lease_until < clock_timestamp()",
			"true",
			"'lease expired at ' || j.lease_until::text",
			"lease_expired", true),
			1, INT8OID);
	values[0] = Int64GetDatum(job_id);
	if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "hasched: requeue of job %lld failed", (long long) job_id);
	return SPI_processed;
}

/*
 * start(): a worker that received a job's message from the broker starts
 * it (the message contract: README, "RabbitMQ transport", Messages).  The
 * job must hold the message's token:
 *  - dispatched under it: it becomes running, its lease (the queue's) from
 *    now on;
 *  - running under it (a redelivery: the worker that started it died before
 *    acking the message): the lease is renewed from now, for the new worker;
 *  - its attempt under that token already ended with an outcome recorded
 *    (complete, or fail): nothing changes and false is returned, so that
 *    the worker drops the message without running it;
 *  - still waiting with the attempt and lease before that token's (the
 *    dispatcher published the message and has not yet committed its
 *    confirm: the broker can deliver before it confirms): asked again every
 *    millisecond for up to START_WAIT_MS, in READ COMMITTED (each try sees
 *    what committed since), then JQ006 as below;
 *  - anything else (re-dispatched under a new token, cancelled, requeued
 *    after a failover or an expired lease): JQ006, nothing changed.
 * On true, SPI_tuptable holds one row (payload, timeout, lease_until).
 * Inside SPI, as the owner.
 *
 * (Without the wait, an idle worker's start() met the job still pending
 * for 194 of 200 messages in bench step 11: an ERROR in the server log for
 * each, and 5 ms more before the worker's own retry.)
 */
#define START_WAIT_MS 20

/*
 * The job waits to be marked dispatched under this lease (see above), or
 * has been marked since the UPDATE looked (the dispatcher committed
 * between the two statements: seen in TAP 054, a start refused 1 ms after
 * the delivery, the job dispatched under that very token).  Either way
 * the UPDATE is worth another try.
 */
static bool
dispatch_in_flight(const HsLease *lease)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[4];

	hs_plan(&plan, "SELECT 1 FROM hasched.job j WHERE j.id = $1"
			" AND ((j.state IN ('scheduled', 'pending', 'failed')"
			"   AND j.attempt + 1 = $2 AND (j.lease_id IS NULL OR j.lease_id < $3))"
			"  OR (j.state IN ('dispatched', 'running')"
			"   AND j.attempt = $2 AND j.lease_id = $3 AND j.epoch = $4))",
			4, INT8OID, INT4OID, INT8OID, INT4OID);
	values[0] = Int64GetDatum(lease->job_id);
	values[1] = Int32GetDatum(lease->attempt);
	values[2] = Int64GetDatum(lease->lease_id);
	values[3] = Int32GetDatum(lease->epoch);
	if (SPI_execute_plan(plan, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "hasched: reading job %lld failed", (long long) lease->job_id);
	return SPI_processed > 0;
}

bool
hs_start_dispatched(const HsLease *lease, const char *worker)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	int			waited = 0;

	hs_plan(&plan, "UPDATE hasched.job j SET state = 'running',"
			" started_at = clock_timestamp(),"
			" lease_until = clock_timestamp() + coalesce((SELECT q.lease"
			"   FROM hasched.queue q WHERE q.name = j.queue), interval '30 seconds'),"
			" worker = coalesce($5, j.worker)"
			" WHERE j.id = $1 AND j.state::text IN ('dispatched', 'running')"
			" AND j.epoch = $2 AND j.attempt = $3 AND j.lease_id = $4"
			" RETURNING j.payload, j.timeout, j.lease_until",
			5, INT8OID, INT4OID, INT4OID, INT8OID, TEXTOID);
	lease_params(lease, values);
	if (worker != NULL)
		values[4] = CStringGetTextDatum(worker);
	else
		nulls[4] = 'n';
	for (;;)
	{
		if (SPI_execute_plan(plan, values, nulls, false, 0) != SPI_OK_UPDATE_RETURNING)
			elog(ERROR, "hasched: starting job %lld failed", (long long) lease->job_id);
		if (SPI_processed > 0)
			return true;
		if (completed_by_lease(lease) || failed_by_lease(lease) != (Datum) 0)
			return false;
		if (waited >= START_WAIT_MS || IsolationUsesXactSnapshot() ||
			!dispatch_in_flight(lease))
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		waited++;
	}
	hs_stale_lease(lease, "start");
}

/*
 * start() of many messages in one statement (the array form, what
 * hasched-worker sends with the reports of its finished jobs): for each
 * lease, what hs_start_dispatched() decides, but as an outcome in out[i]
 * instead of an error, so that one stale message does not undo the others
 * (nor the reports sent in the same transaction):
 *  - HS_START_RUN: started (or renewed: a redelivery); payload, timeout
 *    and lease_until set;
 *  - HS_START_FINISHED: that attempt's outcome is already recorded;
 *  - HS_START_STALE: the token is not the job's lease (state NULL: no
 *    such job).
 * The jobs are started in one UPDATE; those it did not match are looked at
 * one by one (a rare path: redeliveries, cancels), and those whose
 * dispatch is in flight are tried again, together, every millisecond for
 * up to START_WAIT_MS in all.  The leases go to the UPDATE in job id
 * order, and the rows it returns are matched to them by binary search.
 * The datums are copied into outcxt.  Inside SPI, as the owner.
 */
static int
cmp_lease_by_id(const void *a, const void *b)
{
	const HsLease *x = *(const HsLease *const *) a;
	const HsLease *y = *(const HsLease *const *) b;

	return x->job_id < y->job_id ? -1 : x->job_id > y->job_id;
}

void
hs_start_dispatched_many(const HsLease *leases, int n, const char *worker,
						 HsStartResult *out, MemoryContext outcxt)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr state_plan = NULL;
	const HsLease **todo = palloc(sizeof(HsLease *) * (n + 1));
	bool	   *run = palloc0(sizeof(bool) * (n + 1));	/* todo[i] started */
	int		   *todo_ix = palloc(sizeof(int) * (n + 1));
	Datum	   *ids = palloc(sizeof(Datum) * (n + 1));
	Datum	   *epochs = palloc(sizeof(Datum) * (n + 1));
	Datum	   *attempts = palloc(sizeof(Datum) * (n + 1));
	Datum	   *lease_ids = palloc(sizeof(Datum) * (n + 1));
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	int			ntodo = n;
	int			waited = 0;
	int			nother = 0;

	hs_plan(&plan, "UPDATE hasched.job j SET state = 'running',"
			" started_at = clock_timestamp(),"
			" lease_until = clock_timestamp() + coalesce((SELECT q.lease"
			"   FROM hasched.queue q WHERE q.name = j.queue), interval '30 seconds'),"
			" worker = coalesce($5, j.worker)"
			" FROM unnest($1, $2, $3, $4) AS l (id, epoch, attempt, lease_id)"
			" WHERE j.id = l.id AND j.state::text IN ('dispatched', 'running')"
			" AND j.epoch = l.epoch AND j.attempt = l.attempt AND j.lease_id = l.lease_id"
			" RETURNING j.id, j.epoch, j.attempt, j.lease_id, j.payload, j.timeout, j.lease_until",
			5, INT8ARRAYOID, INT4ARRAYOID, INT4ARRAYOID, INT8ARRAYOID, TEXTOID);
	for (int i = 0; i < n; i++)
	{
		todo[i] = &leases[i];
		out[i].outcome = HS_START_STALE;
		out[i].state = NULL;
	}
	qsort(todo, n, sizeof(HsLease *), cmp_lease_by_id);
	if (worker != NULL)
		values[4] = CStringGetTextDatum(worker);
	else
		nulls[4] = 'n';

	while (ntodo > 0)
	{
		int			nnext = 0;

		for (int i = 0; i < ntodo; i++)
		{
			run[i] = false;
			ids[i] = Int64GetDatum(todo[i]->job_id);
			epochs[i] = Int32GetDatum(todo[i]->epoch);
			attempts[i] = Int32GetDatum(todo[i]->attempt);
			lease_ids[i] = Int64GetDatum(todo[i]->lease_id);
		}
		lease_array_params(ntodo, ids, epochs, attempts, lease_ids, values);
		if (SPI_execute_plan(plan, values, nulls, false, 0) != SPI_OK_UPDATE_RETURNING)
			elog(ERROR, "hasched: starting jobs failed");

		/* the rows started: every message of theirs (a job given twice) runs */
		for (uint64 k = 0; k < SPI_processed; k++)
		{
			HeapTuple	tup = SPI_tuptable->vals[k];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
			int32		epoch = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
			int32		attempt = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
			int64		lease_id = DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull));

			int			lo = 0,
						hi = ntodo;

			/* the first lease of that job in todo[] (sorted by job id) */
			while (lo < hi)
			{
				int			mid = lo + (hi - lo) / 2;

				if (todo[mid]->job_id < id)
					lo = mid + 1;
				else
					hi = mid;
			}
			for (int i = lo; i < ntodo && todo[i]->job_id == id; i++)
			{
				const HsLease *l = todo[i];
				HsStartResult *r;
				MemoryContext old;

				if (run[i] || l->epoch != epoch || l->attempt != attempt ||
					l->lease_id != lease_id)
					continue;
				r = &out[l - leases];
				r->outcome = HS_START_RUN;
				old = MemoryContextSwitchTo(outcxt);
				r->payload = datumCopy(SPI_getbinval(tup, desc, 5, &isnull), false, -1);
				r->payload_null = isnull;
				r->timeout = datumCopy(SPI_getbinval(tup, desc, 6, &isnull), false, sizeof(Interval));
				r->lease_until = SPI_getbinval(tup, desc, 7, &isnull);
				r->state = pstrdup("running");
				MemoryContextSwitchTo(old);
				run[i] = true;
			}
		}

		/* the others: finished, stale, or (a dispatch in flight) worth another try */
		for (int i = 0; i < ntodo; i++)
		{
			const HsLease *l = todo[i];

			if (run[i])
				continue;
			if (completed_by_lease(l) || failed_by_lease(l) != (Datum) 0)
				out[l - leases].outcome = HS_START_FINISHED;
			else if (waited < START_WAIT_MS && !IsolationUsesXactSnapshot() &&
					 dispatch_in_flight(l))
			{
				todo[nnext++] = l;
				continue;
			}
			todo_ix[nother++] = (int) (l - leases);
		}
		ntodo = nnext;
		if (ntodo > 0)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 1L, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
			waited++;
		}
	}

	/* the state now of the jobs not started (NULL: no such job) */
	hs_plan(&state_plan, "SELECT state::text FROM hasched.job WHERE id = $1", 1, INT8OID);
	for (int k = 0; k < nother; k++)
	{
		HsStartResult *r = &out[todo_ix[k]];

		values[0] = Int64GetDatum(leases[todo_ix[k]].job_id);
		if (SPI_execute_plan(state_plan, values, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "hasched: reading job failed");
		if (SPI_processed > 0)
			r->state = MemoryContextStrdup(outcxt, SPI_getvalue(SPI_tuptable->vals[0],
																SPI_tuptable->tupdesc, 1));
	}
}

/*
 * An executor starts a job it claimed earlier in a batch: the attempt (its
 * started_at, and the lease, which covers the job's timeout) starts now;
 * lease_until keeps its distance from started_at.  False when the lease is
 * no longer the job's (cancelled or requeued meanwhile): then the job must
 * not run.
 */
bool
hs_restamp_lease(const HsLease *lease)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[4];

	hs_plan(&plan, "UPDATE hasched.job SET started_at = clock_timestamp(),"
			" lease_until = clock_timestamp() + (lease_until - started_at)"
			" WHERE" LEASE_MATCH,
			4, INT8OID, INT4OID, INT4OID, INT8OID);
	lease_params(lease, values);
	if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "hasched: stamping the start of job %lld failed", (long long) lease->job_id);
	return SPI_processed > 0;
}

/*
 * Give back jobs an executor claimed and never started: pending again, due
 * now, the attempt not counted.  Leases that are no longer their job's are
 * left alone.  Returns how many went back.
 */
uint64
hs_release_leases(const HsLease *leases, int n)
{
	static SPIPlanPtr plan = NULL;
	Datum	   *ids;
	Datum	   *epochs;
	Datum	   *attempts;
	Datum	   *lease_ids;
	Datum		values[4];

	if (n <= 0)
		return 0;
	hs_plan(&plan, "UPDATE hasched.job j SET state = 'pending', attempt = j.attempt - 1,"
			" epoch = NULL, lease_id = NULL, lease_until = NULL, worker = NULL,"
			" started_at = NULL, run_at = clock_timestamp()"
			" FROM unnest($1, $2, $3, $4) AS l (id, epoch, attempt, lease_id)"
			" WHERE j.id = l.id AND j.state::text = 'running' AND j.epoch = l.epoch"
			" AND j.attempt = l.attempt AND j.lease_id = l.lease_id",
			4, INT8ARRAYOID, INT4ARRAYOID, INT4ARRAYOID, INT8ARRAYOID);
	ids = palloc(sizeof(Datum) * n);
	epochs = palloc(sizeof(Datum) * n);
	attempts = palloc(sizeof(Datum) * n);
	lease_ids = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
	{
		ids[i] = Int64GetDatum(leases[i].job_id);
		epochs[i] = Int32GetDatum(leases[i].epoch);
		attempts[i] = Int32GetDatum(leases[i].attempt);
		lease_ids[i] = Int64GetDatum(leases[i].lease_id);
	}
	lease_array_params(n, ids, epochs, attempts, lease_ids, values);
	if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "hasched: giving back unstarted jobs failed");
	return SPI_processed;
}

/*
 * End the attempts that filter selects (running jobs whose process went
 * away: a failover, an executor that exited) and make them due now: the
 * attempt counts, but it did not fail on its own, so there is no backoff.
 */
uint64
hs_end_attempts_now(const char *filter, const char *why, const char *outcome)
{
	if (SPI_execute(end_attempt_sql(filter, "true", quote_literal_cstr(why), outcome, false),
					false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "hasched: retrying jobs failed");
	return SPI_processed;
}

/* ------------------------------------------------------------------------
 * The RabbitMQ dispatcher's outbox (workers/dispatcher.c)
 *
 * A job of an amqp queue stays waiting while its message is published; only
 * the broker's confirm makes it dispatched, with the attempt and token the
 * message carries.  If the job changed meanwhile (cancelled, or published
 * again by a dispatcher that took over) the row does not match, and the
 * message is stale: start() refuses its token.
 * ------------------------------------------------------------------------ */

/*
 * Mark the confirmed jobs dispatched: ids[i] with the new attempts[i] and
 * lease_ids[i] of its message, under epoch, its dispatch lease
 * (hasched.dispatch_lease) from now.  Returns how many rows matched.
 */
uint64
hs_mark_dispatched(int n, Datum *ids, Datum *attempts, Datum *lease_ids, int32 epoch)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[5];

	if (n <= 0)
		return 0;
	hs_plan(&plan, "UPDATE hasched.job j SET state = 'dispatched', attempt = d.attempt,"
			" epoch = $4, lease_id = d.lease_id,"
			" lease_until = clock_timestamp() + $5 * interval '1 millisecond',"
			" worker = NULL, started_at = NULL, finished_at = NULL"
			" FROM unnest($1, $2, $3) AS d (id, attempt, lease_id)"
			" WHERE j.id = d.id AND j.attempt = d.attempt - 1"
			" AND j.state::text IN ('scheduled', 'pending', 'failed')",
			5, INT8ARRAYOID, INT4ARRAYOID, INT8ARRAYOID, INT4OID, INT4OID);
	values[0] = hs_int8_array(ids, n);
	values[1] = hs_int4_array(attempts, n);
	values[2] = hs_int8_array(lease_ids, n);
	values[3] = Int32GetDatum(epoch);
	values[4] = Int32GetDatum(hs_dispatch_lease);
	if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "hasched: marking jobs dispatched failed");
	return SPI_processed;
}

/*
 * Publishes that failed (nack, returned, connection lost, no confirm in
 * time): the jobs stay waiting, with the error in last_error.
 */
void
hs_note_publish_failed(int n, Datum *ids, Datum *errors)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[2];

	if (n <= 0)
		return;
	hs_plan(&plan, "UPDATE hasched.job j SET last_error = d.error"
			" FROM unnest($1, $2) AS d (id, error)"
			" WHERE j.id = d.id AND j.state::text IN ('scheduled', 'pending', 'failed')",
			2, INT8ARRAYOID, TEXTARRAYOID);
	values[0] = hs_int8_array(ids, n);
	values[1] = PointerGetDatum(construct_array(errors, n, TEXTOID, -1, false, TYPALIGN_INT));
	if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "hasched: recording publish errors failed");
}

/*
 * Dispatched jobs that no worker started: within their dispatch lease, or
 * before a failover (dispatched under an epoch older than `epoch`).  Each
 * such attempt ends (outcome dispatch_expired) and the job is due again now
 * (or dead when its attempts are spent), to be published again under a new
 * attempt and token.  Returns how many.
 */
uint64
hs_redispatch_expired(int32 epoch)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[1];

	/*
	 * Two range scans of job_dispatched_idx (epoch, lease_until): an older
	 * epoch, or this one with its lease over.  Epochs only grow and a job is
	 * dispatched under the epoch its dispatcher read, so none is newer than
	 * $1.  statement_timestamp(), not clock_timestamp(): a volatile bound
	 * cannot be an index condition.  At most HS_REDISPATCH_LIMIT rows a call.
	 */
	hs_plan(&plan, end_attempt_sql("j.ctid = ANY (ARRAY(SELECT x.ctid FROM hasched.job x"
			" WHERE x.state = 'dispatched'"
			" AND (x.epoch < $1 OR (x.epoch = $1 AND x.lease_until < statement_timestamp()))"
			" LIMIT " CppAsString2(HS_REDISPATCH_LIMIT) " FOR UPDATE SKIP LOCKED))",
			"true",
			"CASE WHEN j.epoch < $1 THEN 'dispatched under epoch '"
			" || j.epoch || ' and not started before the failover'"
			" ELSE 'not started within hasched.dispatch_lease (until '"
			" || j.lease_until::text || ')' END",
			"dispatch_expired", false),
			1, INT4OID);
	values[0] = Int32GetDatum(epoch);
	if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "hasched: re-dispatching expired jobs failed");
	return SPI_processed;
}

/* ------------------------------------------------------------------------
 * cancel() and retry()
 * ------------------------------------------------------------------------ */

typedef struct JobRow
{
	HsJobState	state;
	char	   *queue;
	int64		lease_id;		/* of the attempt under way, else 0 */
} JobRow;

/*
 * Read a job the caller may act on, locked; as "does not exist" when it is
 * another tenant's, so that job ids of other tenants reveal nothing.
 */
static void
read_own_job(int64 job_id, Oid caller, JobRow *row)
{
	static SPIPlanPtr peek_plan = NULL;
	static SPIPlanPtr lock_plan = NULL;
	Datum		values[1];
	bool		isnull;

	if (peek_plan == NULL)
	{
		Oid			types[1] = {INT8OID};

		peek_plan = hs_prepare("SELECT tenant, queue FROM hasched.job WHERE id = $1",
							   1, types);
		lock_plan = hs_prepare("SELECT state::text, coalesce(lease_id, 0) FROM hasched.job"
							   " WHERE id = $1 FOR UPDATE",
							   1, types);
	}
	values[0] = Int64GetDatum(job_id);
	if (SPI_execute_plan(peek_plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "hasched: reading job failed");
	if (SPI_processed != 1 ||
		!hs_tenant_visible(caller, DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
																  SPI_tuptable->tupdesc, 1, &isnull))))
		ereport(ERROR,
				(errcode(HS_ERRCODE_UNKNOWN_JOB),
				 errmsg("job %lld does not exist", (long long) job_id),
				 errhint("You see the jobs of the tenants whose role you are a member of.")));
	row->queue = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);

	/* locking a waiting job: a rollback must rewind the claim cursors */
	hs_claim_note_locked(row->queue);
	if (SPI_execute_plan(lock_plan, values, NULL, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "hasched: locking job %lld failed", (long long) job_id);
	row->state = hs_state_from_name(SPI_getvalue(SPI_tuptable->vals[0],
												 SPI_tuptable->tupdesc, 1));
	row->lease_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
												SPI_tuptable->tupdesc, 2, &isnull));
}

/*
 * cancel(): a waiting job is cancelled; a running one too, and its executor
 * is told to stop when this transaction commits.  False when the job had
 * already finished.  Inside SPI, as the owner.
 */
bool
hs_cancel_job(int64 job_id, Oid caller)
{
	static SPIPlanPtr plan = NULL;
	JobRow		row;
	Datum		values[2];

	read_own_job(job_id, caller, &row);
	if (!hs_transition_allowed(row.state, HS_STATE_CANCELLED))
		return false;

	hs_plan(&plan, "WITH u AS (UPDATE hasched.job SET state = 'cancelled',"
			" finished_at = clock_timestamp(), lease_until = NULL"
			" WHERE id = $1"
			" RETURNING id, attempt, epoch, lease_id, worker, started_at)"
			" INSERT INTO hasched.job_run (job_id, attempt, epoch, lease_id,"
			" worker, started_at, outcome, error)"
			" SELECT id, attempt, epoch, lease_id, worker, started_at,"
			" 'cancelled', 'cancelled by ' || session_user FROM u WHERE $2",
			2, INT8OID, BOOLOID);
	values[0] = Int64GetDatum(job_id);
	/* a run row only for an attempt that was under way */
	values[1] = BoolGetDatum(row.state == HS_STATE_RUNNING ||
							 row.state == HS_STATE_DISPATCHED);
	if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "hasched: cancelling job %lld failed", (long long) job_id);
	if (row.state == HS_STATE_RUNNING)
		hs_executor_cancel_at_commit(job_id, row.lease_id);
	return true;
}

/* retry(): a dead, failed or cancelled job is pending again, due now. */
void
hs_retry_job(int64 job_id, Oid caller)
{
	static SPIPlanPtr plan = NULL;
	JobRow		row;

	read_own_job(job_id, caller, &row);
	if (row.state != HS_STATE_DEAD && row.state != HS_STATE_FAILED &&
		row.state != HS_STATE_CANCELLED)
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_TRANSITION),
				 errmsg("job %lld is %s; only dead, failed or cancelled jobs can be retried",
						(long long) job_id, hs_state_name(row.state))));

	hs_plan(&plan, "UPDATE hasched.job SET state = 'pending', run_at = clock_timestamp(),"
			" max_attempts = greatest(max_attempts, attempt + 1), finished_at = NULL"
			" WHERE id = $1",
			1, INT8OID);
	if (SPI_execute_plan(plan, (Datum[]) {Int64GetDatum(job_id)}, NULL, false, 0) != SPI_OK_UPDATE ||
		SPI_processed != 1)
		elog(ERROR, "hasched: retrying job %lld failed", (long long) job_id);
}
