/*-------------------------------------------------------------------------
 *
 * util.c
 *		The job state machine (and the trigger that enforces it), priority
 *		names, lease tokens, retry backoff, tenant visibility and small
 *		helpers shared by the SQL API.
 *
 * Every change of a job's state goes through hasched_job_state_trigger, so
 * the table of allowed transitions below is the only place that decides
 * which are possible.
 *
 * IDENTIFICATION
 *		src/util.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <math.h>

#include "access/htup_details.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/rel.h"

#include "hasched.h"

PG_FUNCTION_INFO_V1(hasched_job_state_trigger);
PG_FUNCTION_INFO_V1(hasched_backoff_delay);
PG_FUNCTION_INFO_V1(hasched_tenant_visible);
PG_FUNCTION_INFO_V1(hasched_priority_value);

static const char *const state_names[HS_NUM_STATES] = {
	"scheduled", "pending", "running", "dispatched",
	"succeeded", "failed", "dead", "cancelled"
};

/*
 * allowed[from][to].  Waiting states (scheduled, pending, failed) lead to
 * running (leased), dispatched (sent to a broker) or cancelled; a lease
 * ends in succeeded, failed (another attempt after backoff), dead or
 * cancelled; retry() brings dead and cancelled jobs back; succeeded is
 * final.
 */
static const bool allowed[HS_NUM_STATES][HS_NUM_STATES] = {
	/* to:           sched  pend   run    disp   succ   fail   dead   canc */
	/* scheduled */ {false, true, true, true, false, false, false, true},
	/* pending   */ {true, false, true, true, false, false, false, true},
	/* running   */ {false, false, false, false, true, true, true, true},
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

/* The ranges a job's numbers must keep (CHECK constraints, done here). */
static void
check_job_ranges(TupleDesc tupdesc, HeapTuple tup)
{
	bool		isnull;
	int16		priority = DatumGetInt16(heap_getattr(tup, SPI_fnumber(tupdesc, "priority"), tupdesc, &isnull));
	int32		attempt = DatumGetInt32(heap_getattr(tup, SPI_fnumber(tupdesc, "attempt"), tupdesc, &isnull));
	int32		max_attempts = DatumGetInt32(heap_getattr(tup, SPI_fnumber(tupdesc, "max_attempts"), tupdesc, &isnull));
	Interval   *timeout = DatumGetIntervalP(heap_getattr(tup, SPI_fnumber(tupdesc, "timeout"), tupdesc, &isnull));

	if (priority < HS_PRIORITY_MIN || priority > HS_PRIORITY_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("job priority %d is out of range 0..9", priority)));
	if (attempt < 0 || max_attempts < 1)
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("job attempt must be at least 0 and max_attempts at least 1, not %d and %d",
						attempt, max_attempts)));
	if (isnull || hs_interval_usec(timeout) <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("job timeout must be positive")));
}

Datum
hasched_job_state_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	tupdesc;
	HeapTuple	newtup;
	int			state_att;
	int			run_at_att;
	int			id_att;
	bool		isnull;
	HsJobState	to;
	bool		becomes_claimable;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		elog(ERROR, "hasched_job_state_trigger: must be fired before, for each row");

	tupdesc = trigdata->tg_relation->rd_att;
	state_att = SPI_fnumber(tupdesc, "state");
	run_at_att = SPI_fnumber(tupdesc, "run_at");
	id_att = SPI_fnumber(tupdesc, "id");
	if (state_att <= 0 || run_at_att <= 0 || id_att <= 0)
		elog(ERROR, "hasched_job_state_trigger: table has no state, run_at or id column");

	newtup = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ?
		trigdata->tg_newtuple : trigdata->tg_trigtuple;

	to = state_from_datum(TupleDescAttr(tupdesc, state_att - 1)->atttypid,
						  heap_getattr(newtup, state_att, tupdesc, &isnull));
	check_job_ranges(tupdesc, newtup);

	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
	{
		if (to != HS_STATE_SCHEDULED && to != HS_STATE_PENDING)
			ereport(ERROR,
					(errcode(HS_ERRCODE_INVALID_TRANSITION),
					 errmsg("a new job cannot start in state %s", hs_state_name(to)),
					 errhint("Submit jobs with hasched.submit(); they start scheduled or pending.")));
		becomes_claimable = true;
	}
	else if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		HeapTuple	oldtup = trigdata->tg_trigtuple;
		HsJobState	from;
		bool		run_at_changed;
		Datum		old_run_at;
		Datum		new_run_at;

		from = state_from_datum(TupleDescAttr(tupdesc, state_att - 1)->atttypid,
								heap_getattr(oldtup, state_att, tupdesc, &isnull));
		if (from != to && !hs_transition_allowed(from, to))
			ereport(ERROR,
					(errcode(HS_ERRCODE_INVALID_TRANSITION),
					 errmsg("job %lld cannot go from %s to %s",
							(long long) DatumGetInt64(heap_getattr(oldtup, id_att, tupdesc, &isnull)),
							hs_state_name(from), hs_state_name(to)),
					 errdetail("That transition is not in the hasched job state machine.")));

		old_run_at = heap_getattr(oldtup, run_at_att, tupdesc, &isnull);
		new_run_at = heap_getattr(newtup, run_at_att, tupdesc, &isnull);
		run_at_changed = DatumGetTimestampTz(old_run_at) != DatumGetTimestampTz(new_run_at);
		becomes_claimable = hs_state_is_waiting(to) &&
			(!hs_state_is_waiting(from) || run_at_changed);
	}
	else
		elog(ERROR, "hasched_job_state_trigger: must be fired for INSERT or UPDATE");

	/*
	 * A job that becomes claimable: register this transaction as a writer
	 * first, then make sure run_at is not before now.  Claim cursors rely
	 * on both (see claim.c).
	 */
	if (becomes_claimable)
	{
		TimestampTz run_at;
		TimestampTz now;

		hs_writer_note();
		now = GetCurrentTimestamp();
		run_at = DatumGetTimestampTz(heap_getattr(newtup, run_at_att, tupdesc, &isnull));
		if (run_at < now)
		{
			int			cols[1] = {run_at_att};
			Datum		vals[1] = {TimestampTzGetDatum(now)};
			bool		nulls[1] = {false};

			newtup = heap_modify_tuple_by_cols(newtup, tupdesc, 1, cols, vals, nulls);
			run_at = now;
		}
		hs_note_claimable(run_at);
	}

	return PointerGetDatum(newtup);
}

/* ------------------------------------------------------------------------
 * Priorities
 * ------------------------------------------------------------------------ */

/* Returns 0..9, or -1 when the text is not a priority. */
int
hs_parse_priority(const char *name)
{
	const char *p = name;
	char	   *end;
	long		v;

	if (pg_strcasecmp(name, "high") == 0)
		return HS_PRIORITY_HIGH;
	if (pg_strcasecmp(name, "medium") == 0)
		return HS_PRIORITY_MEDIUM;
	if (pg_strcasecmp(name, "low") == 0)
		return HS_PRIORITY_LOW;

	while (isspace((unsigned char) *p))
		p++;
	if (!isdigit((unsigned char) *p))
		return -1;
	errno = 0;
	v = strtol(p, &end, 10);
	while (isspace((unsigned char) *end))
		end++;
	if (errno != 0 || *end != '\0' || v < HS_PRIORITY_MIN || v > HS_PRIORITY_MAX)
		return -1;
	return (int) v;
}

/* A priority argument: its value, or an error naming it. */
int16
hs_priority_arg(const char *name)
{
	int			p = hs_parse_priority(name);

	if (p < 0)
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_PRIORITY),
				 errmsg("invalid priority \"%s\"", name),
				 errhint("Use high, medium, low, or a number from 0 (most urgent) to 9.")));
	return (int16) p;
}

Datum
hasched_priority_value(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT16(hs_priority_arg(text_to_cstring(PG_GETARG_TEXT_PP(0))));
}

/* ------------------------------------------------------------------------
 * Retry backoff
 * ------------------------------------------------------------------------ */

/* An interval as microseconds; a month counts as 30 days. */
int64
hs_interval_usec(const Interval *iv)
{
	return iv->time + (int64) iv->day * USECS_PER_DAY +
		(int64) iv->month * DAYS_PER_MONTH * USECS_PER_DAY;
}

/*
 * Delay before the attempt after `attempt` failed ones: the exponential
 * step d = min(cap, base * 2^(attempt-1)), then "equal jitter": half of d
 * fixed, the other half scaled by jitter in [0, 1].  Never below base/2,
 * never above cap.
 */
int64
hs_backoff_usec(int attempt, int64 base_usec, int64 cap_usec, double jitter)
{
	int64		d = base_usec;

	if (attempt < 1)
		attempt = 1;
	if (jitter < 0)
		jitter = 0;
	if (jitter > 1)
		jitter = 1;
	for (int i = 1; i < attempt && d < cap_usec; i++)
	{
		if (d > PG_INT64_MAX / 2)
		{
			d = cap_usec;
			break;
		}
		d *= 2;
	}
	if (d > cap_usec)
		d = cap_usec;
	return d / 2 + (int64) llround(jitter * (double) (d - d / 2));
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

	result = palloc0(sizeof(Interval));
	result->time = hs_backoff_usec(attempt, base_usec, cap_usec, jitter);
	PG_RETURN_INTERVAL_P(result);
}

/* ------------------------------------------------------------------------
 * Lease tokens: "epoch:attempt:lease_id"
 * ------------------------------------------------------------------------ */

char *
hs_format_token(int32 epoch, int32 attempt, int64 lease_id)
{
	return psprintf("%d:%d:%lld", epoch, attempt, (long long) lease_id);
}

bool
hs_parse_token(const char *token, int32 *epoch, int32 *attempt, int64 *lease_id)
{
	long long	e,
				a,
				l;
	int			consumed = 0;

	if (sscanf(token, "%lld:%lld:%lld%n", &e, &a, &l, &consumed) != 3 ||
		token[consumed] != '\0' || !isdigit((unsigned char) token[0]) ||
		e < 0 || e > PG_INT32_MAX || a < 0 || a > PG_INT32_MAX || l < 0)
		return false;
	*epoch = (int32) e;
	*attempt = (int32) a;
	*lease_id = (int64) l;
	return true;
}

/* ------------------------------------------------------------------------
 * Tenants
 * ------------------------------------------------------------------------ */

/*
 * May roleid see the jobs of tenant?  Yes when it has the privileges of the
 * tenant role (membership with inheritance, or superuser) or of
 * hasched_admin.  A tenant whose role was dropped is visible to admins only.
 */
bool
hs_role_visible(Oid roleid, const char *tenant)
{
	Oid			tenant_oid = get_role_oid(tenant, true);
	Oid			admin_oid;

	if (OidIsValid(tenant_oid) && has_privs_of_role(roleid, tenant_oid))
		return true;
	admin_oid = get_role_oid("hasched_admin", true);
	return OidIsValid(admin_oid) && has_privs_of_role(roleid, admin_oid);
}

Datum
hasched_tenant_visible(PG_FUNCTION_ARGS)
{
	Name		tenant = PG_GETARG_NAME(0);

	PG_RETURN_BOOL(hs_role_visible(GetUserId(), NameStr(*tenant)));
}

/* ------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------ */

/*
 * Prepare and keep a plan; the caller caches it in a static.  Plans are
 * generic: the statements are short and their best plan does not depend on
 * the values, so planning each execution anew would be wasted.
 */
SPIPlanPtr
hs_prepare(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, argtypes, CURSOR_OPT_GENERIC_PLAN);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	return plan;
}

void
hs_unknown_queue(const char *queue)
{
	ereport(ERROR,
			(errcode(HS_ERRCODE_UNKNOWN_QUEUE),
			 errmsg("queue \"%s\" does not exist", queue),
			 errhint("Create it with INSERT INTO hasched.queue (name) VALUES (%s), or list the queues with SELECT name FROM hasched.queue.",
					 quote_literal_cstr(queue))));
}

/* The "sql" string of a payload (a job of an sql queue), or NULL. */
char *
hs_payload_sql(Datum payload)
{
	Jsonb	   *jb = DatumGetJsonbP(payload);
	JsonbValue	key;
	JsonbValue *v;

	key.type = jbvString;
	key.val.string.val = "sql";
	key.val.string.len = 3;
	v = JB_ROOT_IS_OBJECT(jb) ?
		findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &key) : NULL;
	if (v == NULL || v->type != jbvString || v->val.string.len == 0)
		return NULL;
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* Refuse an empty or over-long text argument. */
void
hs_check_text_arg(const char *what, const char *value, int maxlen)
{
	if (value[0] == '\0')
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("%s must not be empty", what)));
	if ((int) strlen(value) > maxlen)
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("%s is too long (%d bytes)", what, (int) strlen(value)),
				 errdetail("At most %d bytes are allowed.", maxlen)));
}
