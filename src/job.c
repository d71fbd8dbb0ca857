/*-------------------------------------------------------------------------
 *
 * job.c
 *		Submitting jobs (submit, submit_many) and the administrative
 *		transitions of the job API (cancel, retry).
 *
 * A submit validates every argument before it touches a table, checks the
 * operating mode and the caller's right to the tenant, inserts the job
 * (idempotently: the same key of the same tenant returns the same job),
 * then charges the tenant's rate limit and daily quota.  A refusal at any
 * step is an error, so nothing of the submit remains.
 *
 * IDENTIFICATION
 *		src/job.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "parser/parser.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "hasched.h"

PG_FUNCTION_INFO_V1(hasched_submit);
PG_FUNCTION_INFO_V1(hasched_submit_many);
PG_FUNCTION_INFO_V1(hasched_cancel);
PG_FUNCTION_INFO_V1(hasched_retry);

#define MAX_KEY_BYTES		255
#define MAX_SUBMIT_BATCH	100000

typedef HsSubmit SubmitArgs;

/* The queue, mode and tenant limits that apply to a submit. */
typedef struct SubmitContext
{
	char	   *transport;
	Interval   *default_timeout;
	int32		default_max_attempts;
	char	   *tier;
	bool		has_day_limit;
	int64		jobs_per_day;
	bool		has_rate;
	double		rate_per_second;
	int32		burst;
} SubmitContext;

static void
check_payload(Datum payload, int index)
{
	Size		size = toast_raw_datum_size(payload) - VARHDRSZ;

	if (size > (Size) hs_max_payload_bytes)
		ereport(ERROR,
				(errcode(HS_ERRCODE_PAYLOAD_TOO_LARGE),
				 index < 0 ?
				 errmsg("payload of %zu bytes is larger than hasched.max_payload_bytes (%d)",
						size, hs_max_payload_bytes) :
				 errmsg("payload %d of %zu bytes is larger than hasched.max_payload_bytes (%d)",
						index, size, hs_max_payload_bytes),
				 errhint("Keep large data elsewhere and pass a reference to it, or ask an administrator to raise hasched.max_payload_bytes.")));
}

/*
 * Read and check the arguments that submit and submit_many share:
 * 0 queue, 2 priority, 3 run_at, 5 max_attempts, 6 timeout, 7 tenant.
 */
static void
read_submit_args(FunctionCallInfo fcinfo, SubmitArgs *a)
{
	Oid			caller = GetUserId();
	Oid			tenant_oid;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("queue must not be null")));
	a->queue = text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (PG_ARGISNULL(2))
		a->priority = HS_PRIORITY_MEDIUM;
	else
		a->priority = hs_priority_arg(text_to_cstring(PG_GETARG_TEXT_PP(2)));

	a->run_at = GetCurrentTimestamp();
	if (!PG_ARGISNULL(3))
	{
		TimestampTz t = PG_GETARG_TIMESTAMPTZ(3);

		if (TIMESTAMP_NOT_FINITE(t))
			ereport(ERROR,
					(errcode(HS_ERRCODE_INVALID_ARGUMENT),
					 errmsg("run_at must be a finite time"),
					 errhint("Leave run_at out (or NULL) to run the job now.")));
		if (t > a->run_at)
			a->run_at = t;
	}

	a->max_attempts = 0;
	if (!PG_ARGISNULL(5))
	{
		a->max_attempts = PG_GETARG_INT32(5);
		if (a->max_attempts < 1)
			ereport(ERROR,
					(errcode(HS_ERRCODE_INVALID_ARGUMENT),
					 errmsg("max_attempts must be at least 1, not %d", a->max_attempts)));
	}

	a->timeout = NULL;
	if (!PG_ARGISNULL(6))
	{
		a->timeout = PG_GETARG_INTERVAL_P(6);
		if (hs_interval_usec(a->timeout) <= 0)
			ereport(ERROR,
					(errcode(HS_ERRCODE_INVALID_ARGUMENT),
					 errmsg("timeout must be positive")));
	}

	if (!PG_ARGISNULL(7))
		a->tenant = pstrdup(NameStr(*PG_GETARG_NAME(7)));
	else if (hs_tenant != NULL && hs_tenant[0] != '\0')
		a->tenant = pstrdup(hs_tenant);
	else
		a->tenant = GetUserNameFromId(caller, false);
	if (a->tenant[0] == '\0')
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("tenant must not be empty")));
	tenant_oid = get_role_oid(a->tenant, true);
	if (!OidIsValid(tenant_oid))
		ereport(ERROR,
				(errcode(HS_ERRCODE_UNKNOWN_TENANT),
				 errmsg("tenant \"%s\" does not exist", a->tenant),
				 errdetail("A tenant is a role; its members see and cancel its jobs."),
				 errhint("Create it with CREATE ROLE %s NOLOGIN and grant it to the roles that submit for it.",
						 quote_identifier(a->tenant))));
	if (!hs_role_visible(caller, a->tenant))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to submit jobs for tenant \"%s\"", a->tenant),
				 errhint("Ask an administrator to GRANT %s TO %s.",
						 quote_identifier(a->tenant),
						 quote_identifier(GetUserNameFromId(caller, false)))));
	a->owner = GetUserNameFromId(caller, false);
	a->schedule = NULL;
	a->fire_at = 0;
}

/* Load queue defaults, the mode and the tenant's limits; refuse if needed. */
static void
load_submit_context(const SubmitArgs *a, SubmitContext *ctx)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[3];
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	char	   *mode;

	if (plan == NULL)
	{
		Oid			types[3] = {TEXTOID, NAMEOID, TEXTOID};

		plan = hs_prepare("SELECT q.default_timeout, q.default_max_attempts, s.mode,"
						  " coalesce(t.tier, $3), r.name IS NOT NULL,"
						  " coalesce(t.jobs_per_day, r.jobs_per_day),"
						  " coalesce(t.rate_per_second, r.rate_per_second),"
						  " coalesce(t.burst, r.burst), s.reason, q.transport"
						  " FROM hasched.queue q CROSS JOIN hasched.state s"
						  " LEFT JOIN hasched.tenant t ON t.name = $2"
						  " LEFT JOIN hasched.tier r ON r.name = coalesce(t.tier, $3)"
						  " WHERE q.name = $1", 3, types);
	}
	values[0] = CStringGetTextDatum(a->queue);
	values[1] = DirectFunctionCall1(namein, CStringGetDatum(a->tenant));
	values[2] = CStringGetTextDatum(hs_default_tier ? hs_default_tier : "free");
	if (SPI_execute_plan(plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "hasched: reading queue settings failed");
	if (SPI_processed == 0)
		hs_unknown_queue(a->queue);
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;

	mode = SPI_getvalue(tup, desc, 3);
	if (strcmp(mode, "read_only") == 0)
	{
		char	   *reason = SPI_getvalue(tup, desc, 9);

		ereport(ERROR,
				(errcode(HS_ERRCODE_READ_ONLY_MODE),
				 errmsg("hasched is in read-only mode: submissions are refused"),
				 reason ? errdetail("Reason given: %s.", reason) : 0,
				 errhint("Retry later. Claims and reports still work, so the backlog drains; an administrator ends the mode with SELECT hasched.set_mode('normal').")));
	}

	ctx->transport = SPI_getvalue(tup, desc, 10);
	ctx->default_timeout = DatumGetIntervalP(SPI_getbinval(tup, desc, 1, &isnull));
	ctx->default_max_attempts = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
	ctx->tier = SPI_getvalue(tup, desc, 4);
	if (!DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull)))
		ereport(ERROR,
				(errcode(HS_ERRCODE_UNKNOWN_TENANT),
				 errmsg("tier \"%s\" of tenant \"%s\" does not exist", ctx->tier, a->tenant),
				 errhint("Add the tier to hasched.tier, or set hasched.default_tier to an existing one.")));
	ctx->jobs_per_day = DatumGetInt64(SPI_getbinval(tup, desc, 6, &isnull));
	ctx->has_day_limit = !isnull;
	ctx->rate_per_second = DatumGetFloat8(SPI_getbinval(tup, desc, 7, &isnull));
	ctx->has_rate = !isnull;
	ctx->burst = DatumGetInt32(SPI_getbinval(tup, desc, 8, &isnull));
	if (isnull)
		ctx->burst = 1;
}

/* The values of the columns every new job of this submit shares: $1..$8. */
static void
common_values(const SubmitArgs *a, const SubmitContext *ctx, Datum *values)
{
	values[0] = CStringGetTextDatum(a->queue);
	values[1] = DirectFunctionCall1(namein, CStringGetDatum(a->tenant));
	values[2] = DirectFunctionCall1(namein, CStringGetDatum(a->owner));
	values[3] = Int16GetDatum(a->priority);
	values[4] = CStringGetTextDatum(a->run_at > GetCurrentTimestamp() ? "scheduled" : "pending");
	values[5] = TimestampTzGetDatum(a->run_at);
	values[6] = Int32GetDatum(a->max_attempts > 0 ? a->max_attempts : ctx->default_max_attempts);
	values[7] = IntervalPGetDatum(a->timeout ? a->timeout : ctx->default_timeout);
}

#define INSERT_COLUMNS \
	"INSERT INTO hasched.job (queue, tenant, owner, priority, state, run_at," \
	" max_attempts, timeout, idempotency_key, payload, schedule, fire_at) "
#define ON_KEY_CONFLICT \
	" ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
static Oid	common_types[8] = {TEXTOID, NAMEOID, NAMEOID, INT2OID, TEXTOID,
TIMESTAMPTZOID, INT4OID, INTERVALOID};

/*
 * The jobs of sql queues carry their SQL in payload->>'sql': it must be
 * there and parse, or the submit is refused (JQ018) rather than failing at
 * run time.
 */
static void
check_sql_payload(Datum payload, int index)
{
	char	   *sql = hs_payload_sql(payload);
	MemoryContext oldcxt = CurrentMemoryContext;

	if (sql == NULL)
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_SQL),
				 index < 0 ? errmsg("the payload of a job of an sql queue needs an \"sql\" string") :
				 errmsg("payload %d of jobs of an sql queue needs an \"sql\" string", index),
				 errhint("Submit {\"sql\": \"...\"}; the statement runs as you, with the job's timeout.")));

	PG_TRY();
	{
		(void) raw_parser(sql, RAW_PARSE_DEFAULT);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_SQL),
				 errmsg("the SQL of the job does not parse: %s", edata->message),
				 errdetail("SQL: %s", sql),
				 errhint("Fix the statement; it is checked when the job is submitted.")));
	}
	PG_END_TRY();
}

/*
 * For schedule(): the queue must exist, and a schedule of an sql queue must
 * carry SQL that parses.  Inside SPI, as the owner.
 */
void
hs_check_schedule_target(const char *queue, Datum payload)
{
	Datum		values[1];
	char	   *transport;

	values[0] = CStringGetTextDatum(queue);
	if (SPI_execute_with_args("SELECT transport FROM hasched.queue WHERE name = $1",
							  1, (Oid[]) {TEXTOID}, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "hasched: reading queue failed");
	if (SPI_processed == 0)
		hs_unknown_queue(queue);
	transport = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (strcmp(transport, "sql") == 0)
		check_sql_payload(payload, -1);
}

/*
 * Insert one job (or find the one with the same idempotency key) and charge
 * the tenant for it.  The caller is connected to SPI and runs as the
 * extension owner; a's fields are validated.  Used by submit() and by the
 * scheduler for the runs of schedules.
 */
int64
hs_submit_one(const HsSubmit *a, Datum payload, const char *key)
{
	static SPIPlanPtr insert_plan = NULL;
	static SPIPlanPtr lookup_plan = NULL;
	SubmitContext ctx;
	Datum		values[12];
	char		nulls[12];
	int64		id;
	bool		isnull;

	load_submit_context(a, &ctx);
	if (strcmp(ctx.transport, "sql") == 0)
		check_sql_payload(payload, -1);

	if (insert_plan == NULL)
	{
		Oid			types[12];

		memcpy(types, common_types, sizeof(common_types));
		types[8] = TEXTOID;
		types[9] = JSONBOID;
		types[10] = TEXTOID;
		types[11] = TIMESTAMPTZOID;
		insert_plan = hs_prepare(INSERT_COLUMNS
								 "VALUES ($1, $2, $3, $4, $5::hasched.job_state, $6, $7, $8, $9, $10,"
								 " $11, $12)"
								 ON_KEY_CONFLICT " RETURNING id", 12, types);
	}
	memset(nulls, ' ', sizeof(nulls));
	common_values(a, &ctx, values);
	if (key)
		values[8] = CStringGetTextDatum(key);
	else
		nulls[8] = 'n';
	values[9] = payload;
	if (a->schedule)
	{
		values[10] = CStringGetTextDatum(a->schedule);
		values[11] = TimestampTzGetDatum(a->fire_at);
	}
	else
		nulls[10] = nulls[11] = 'n';
	if (SPI_execute_plan(insert_plan, values, nulls, false, 1) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "hasched: inserting the job failed");

	if (SPI_processed == 1)
	{
		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		hs_quota_charge(a->tenant, ctx.tier, 1, ctx.has_day_limit, ctx.jobs_per_day,
						ctx.has_rate, ctx.rate_per_second, ctx.burst);
	}
	else
	{
		/* the key was used before: that job is this submit's job */
		Datum		lv[2];

		if (lookup_plan == NULL)
		{
			Oid			types[2] = {NAMEOID, TEXTOID};

			lookup_plan = hs_prepare("SELECT id FROM hasched.job"
									 " WHERE tenant = $1 AND idempotency_key = $2", 2, types);
		}
		lv[0] = values[1];
		lv[1] = values[8];
		if (SPI_execute_plan(lookup_plan, lv, NULL, false, 1) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "hasched: job with idempotency key \"%s\" not found", key);
		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	return id;
}

Datum
hasched_submit(PG_FUNCTION_ARGS)
{
	SubmitArgs	a;
	HsPrivileged priv;
	char	   *key = NULL;
	int64		id;

	read_submit_args(fcinfo, &a);
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("payload must not be null"),
				 errhint("Pass '{}' for a job without payload.")));
	check_payload(PG_GETARG_DATUM(1), -1);
	if (!PG_ARGISNULL(4))
	{
		key = text_to_cstring(PG_GETARG_TEXT_PP(4));
		hs_check_text_arg("idempotency_key", key, MAX_KEY_BYTES);
	}
	hs_require_primary("submit jobs");
	hs_force_submit_commit_level();

	hs_privileged_enter(&priv);
	SPI_connect();
	id = hs_submit_one(&a, PG_GETARG_DATUM(1), key);
	SPI_finish();
	hs_privileged_leave(&priv);
	PG_RETURN_INT64(id);
}

typedef struct KeyId
{
	char		key[MAX_KEY_BYTES + 1];
	int64		id;
} KeyId;

Datum
hasched_submit_many(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr insert_plan = NULL;
	static SPIPlanPtr lookup_plan = NULL;
	SubmitArgs	a;
	SubmitContext ctx;
	HsPrivileged priv;
	ArrayType  *payloads;
	ArrayType  *keys = NULL;
	Datum	   *pay_elems;
	bool	   *pay_nulls;
	int			n;
	Datum	   *key_elems = NULL;
	bool	   *key_nulls = NULL;
	int			nkeys = 0;
	Datum		values[10];
	char		nulls[10];
	Datum	   *ids;
	HTAB	   *by_key = NULL;
	uint64		inserted;
	int			next_unkeyed = 0;
	int64	   *unkeyed_ids;
	int			n_unkeyed = 0;
	ArrayType  *result;

	read_submit_args(fcinfo, &a);
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("payloads must not be null")));
	payloads = PG_GETARG_ARRAYTYPE_P(1);
	if (ARR_NDIM(payloads) > 1)
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("payloads must be a one-dimensional array")));
	deconstruct_array(payloads, JSONBOID, -1, false, TYPALIGN_INT,
					  &pay_elems, &pay_nulls, &n);
	if (n > MAX_SUBMIT_BATCH)
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("cannot submit %d jobs in one call", n),
				 errhint("Submit at most %d jobs per call.", MAX_SUBMIT_BATCH)));
	for (int i = 0; i < n; i++)
	{
		if (pay_nulls[i])
			ereport(ERROR,
					(errcode(HS_ERRCODE_INVALID_ARGUMENT),
					 errmsg("payload %d is null", i + 1),
					 errhint("Pass '{}' for a job without payload.")));
		check_payload(pay_elems[i], i + 1);
	}
	if (!PG_ARGISNULL(4))
	{
		keys = PG_GETARG_ARRAYTYPE_P(4);
		if (ARR_NDIM(keys) > 1)
			ereport(ERROR,
					(errcode(HS_ERRCODE_INVALID_ARGUMENT),
					 errmsg("idempotency_keys must be a one-dimensional array")));
		deconstruct_array(keys, TEXTOID, -1, false, TYPALIGN_INT,
						  &key_elems, &key_nulls, &nkeys);
		if (nkeys != n)
			ereport(ERROR,
					(errcode(HS_ERRCODE_INVALID_ARGUMENT),
					 errmsg("%d idempotency keys given for %d payloads", nkeys, n),
					 errhint("Give one key per payload (NULL for a job without one), or none.")));
		for (int i = 0; i < n; i++)
			if (!key_nulls[i])
				hs_check_text_arg("idempotency key", TextDatumGetCString(key_elems[i]),
								  MAX_KEY_BYTES);
	}
	hs_require_primary("submit jobs");
	if (n == 0)
		PG_RETURN_ARRAYTYPE_P(construct_empty_array(INT8OID));
	hs_force_submit_commit_level();

	hs_privileged_enter(&priv);
	SPI_connect();
	load_submit_context(&a, &ctx);
	if (strcmp(ctx.transport, "sql") == 0)
		for (int i = 0; i < n; i++)
			check_sql_payload(pay_elems[i], i + 1);

	if (insert_plan == NULL)
	{
		Oid			types[10];

		memcpy(types, common_types, sizeof(common_types));
		types[8] = JSONBARRAYOID;
		types[9] = TEXTARRAYOID;
		insert_plan = hs_prepare(INSERT_COLUMNS
								 "SELECT $1, $2, $3, $4, $5::hasched.job_state, $6, $7, $8, u.k, u.p,"
								 " NULL, NULL"
								 " FROM unnest($9, $10) WITH ORDINALITY AS u (p, k, ord)"
								 " ORDER BY u.ord"
								 ON_KEY_CONFLICT " RETURNING id, idempotency_key", 10, types);
	}
	memset(nulls, ' ', sizeof(nulls));
	common_values(&a, &ctx, values);
	values[8] = PointerGetDatum(payloads);
	if (keys)
		values[9] = PointerGetDatum(keys);
	else
		values[9] = PointerGetDatum(construct_empty_array(TEXTOID));
	if (SPI_execute_plan(insert_plan, values, nulls, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "hasched: inserting the jobs failed");
	inserted = SPI_processed;

	unkeyed_ids = palloc(sizeof(int64) * (inserted + 1));
	for (uint64 i = 0; i < inserted; i++)
	{
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
													 SPI_tuptable->tupdesc, 1, &isnull));

		(void) SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull);
		if (isnull)
			unkeyed_ids[n_unkeyed++] = id;
	}

	if (keys)
	{
		HASHCTL		info;
		Datum		lv[2];

		if (lookup_plan == NULL)
		{
			Oid			types[2] = {NAMEOID, TEXTARRAYOID};

			lookup_plan = hs_prepare("SELECT idempotency_key, id FROM hasched.job"
									 " WHERE tenant = $1 AND idempotency_key = ANY ($2)",
									 2, types);
		}
		lv[0] = values[1];
		lv[1] = PointerGetDatum(keys);
		if (SPI_execute_plan(lookup_plan, lv, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "hasched: looking up idempotency keys failed");

		memset(&info, 0, sizeof(info));
		info.keysize = MAX_KEY_BYTES + 1;
		info.entrysize = sizeof(KeyId);
		info.hcxt = CurrentMemoryContext;
		by_key = hash_create("hasched submit_many keys", Max(SPI_processed, 16), &info,
							 HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			char	   *k = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
			KeyId	   *e = hash_search(by_key, k, HASH_ENTER, NULL);

			e->id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
												SPI_tuptable->tupdesc, 2, &isnull));
		}
	}

	ids = SPI_palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
	{
		if (keys && !key_nulls[i])
		{
			char	   *k = TextDatumGetCString(key_elems[i]);
			KeyId	   *e = hash_search(by_key, k, HASH_FIND, NULL);

			if (e == NULL)
				elog(ERROR, "hasched: job with idempotency key \"%s\" not found", k);
			ids[i] = Int64GetDatum(e->id);
		}
		else
		{
			if (next_unkeyed >= n_unkeyed)
				elog(ERROR, "hasched: fewer jobs inserted than payloads without a key");
			ids[i] = Int64GetDatum(unkeyed_ids[next_unkeyed++]);
		}
	}

	hs_quota_charge(a.tenant, ctx.tier, (int64) inserted, ctx.has_day_limit,
					ctx.jobs_per_day, ctx.has_rate, ctx.rate_per_second, ctx.burst);

	SPI_finish();
	hs_privileged_leave(&priv);

	result = construct_array(ids, n, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
	PG_RETURN_ARRAYTYPE_P(result);
}

/* ------------------------------------------------------------------------
 * cancel() and retry()
 * ------------------------------------------------------------------------ */

typedef struct JobRow
{
	HsJobState	state;
	char	   *queue;
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
	char	   *tenant;

	if (peek_plan == NULL)
	{
		Oid			types[1] = {INT8OID};

		peek_plan = hs_prepare("SELECT tenant::text, queue FROM hasched.job WHERE id = $1",
							   1, types);
		lock_plan = hs_prepare("SELECT state::text FROM hasched.job WHERE id = $1 FOR UPDATE",
							   1, types);
	}
	values[0] = Int64GetDatum(job_id);
	if (SPI_execute_plan(peek_plan, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "hasched: reading job failed");
	tenant = SPI_processed == 1 ?
		SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1) : NULL;
	if (tenant == NULL || !hs_role_visible(caller, tenant))
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
}

Datum
hasched_cancel(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64		job_id;
	Oid			caller = GetUserId();
	HsPrivileged priv;
	JobRow		row;
	Datum		values[2];
	bool		done = false;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("job_id must not be null")));
	job_id = PG_GETARG_INT64(0);
	hs_require_primary("cancel jobs");

	hs_privileged_enter(&priv);
	SPI_connect();
	read_own_job(job_id, caller, &row);

	if (hs_transition_allowed(row.state, HS_STATE_CANCELLED))
	{
		if (plan == NULL)
		{
			Oid			types[2] = {INT8OID, BOOLOID};

			plan = hs_prepare("WITH u AS (UPDATE hasched.job SET state = 'cancelled',"
							  " finished_at = clock_timestamp(), lease_until = NULL"
							  " WHERE id = $1"
							  " RETURNING id, attempt, epoch, lease_id, worker, started_at)"
							  " INSERT INTO hasched.job_run (job_id, attempt, epoch, lease_id,"
							  " worker, started_at, outcome, error)"
							  " SELECT id, attempt, epoch, lease_id, worker, started_at,"
							  " 'cancelled', 'cancelled by ' || session_user FROM u WHERE $2",
							  2, types);
		}
		values[0] = Int64GetDatum(job_id);
		/* a run row only for an attempt that was under way */
		values[1] = BoolGetDatum(row.state == HS_STATE_RUNNING ||
								 row.state == HS_STATE_DISPATCHED);
		if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "hasched: cancelling job %lld failed", (long long) job_id);
		if (row.state == HS_STATE_RUNNING)
			hs_executor_cancel_at_commit(job_id);
		done = true;
	}

	SPI_finish();
	hs_privileged_leave(&priv);
	PG_RETURN_BOOL(done);
}

Datum
hasched_retry(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64		job_id;
	Oid			caller = GetUserId();
	HsPrivileged priv;
	JobRow		row;
	Datum		values[1];

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("job_id must not be null")));
	job_id = PG_GETARG_INT64(0);
	hs_require_primary("retry jobs");

	hs_privileged_enter(&priv);
	SPI_connect();
	read_own_job(job_id, caller, &row);

	if (row.state != HS_STATE_DEAD && row.state != HS_STATE_FAILED &&
		row.state != HS_STATE_CANCELLED)
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_TRANSITION),
				 errmsg("job %lld is %s; only dead, failed or cancelled jobs can be retried",
						(long long) job_id, hs_state_name(row.state))));

	if (plan == NULL)
	{
		Oid			types[1] = {INT8OID};

		plan = hs_prepare("UPDATE hasched.job SET state = 'pending', run_at = clock_timestamp(),"
						  " max_attempts = greatest(max_attempts, attempt + 1), finished_at = NULL"
						  " WHERE id = $1", 1, types);
	}
	values[0] = Int64GetDatum(job_id);
	if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_UPDATE || SPI_processed != 1)
		elog(ERROR, "hasched: retrying job %lld failed", (long long) job_id);

	SPI_finish();
	hs_privileged_leave(&priv);
	PG_RETURN_VOID();
}
