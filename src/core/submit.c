/*-------------------------------------------------------------------------
 *
 * submit.c
 *		The submit path: load the queue, mode and tenant limits, refuse what
 *		must be refused, insert the job (idempotently: the same key of the
 *		same tenant is the same job) and charge the tenant's quotas.  Used by
 *		submit(), submit_many() and the runs of schedules.
 *
 * A refusal at any step is an error, so nothing of the submit remains.
 *
 * IDENTIFICATION
 *		src/core/submit.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "catalog/pg_type.h"
#include "parser/parser.h"
#include "tcop/utility.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"

#include "core/hasched.h"

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

void
hs_check_payload(Datum payload, int index)
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

/*
 * The values of the columns every new job of this submit shares: $1..$9.
 * Tenant, owner and submitter are roles (regrole columns), by OID.
 */
#define N_COMMON	9
static void
common_values(const SubmitArgs *a, const SubmitContext *ctx, Datum *values)
{
	values[0] = CStringGetTextDatum(a->queue);
	values[1] = ObjectIdGetDatum(a->tenant_oid);
	values[2] = ObjectIdGetDatum(a->owner);
	values[3] = Int16GetDatum(a->priority);
	values[4] = CStringGetTextDatum(a->run_at > GetCurrentTimestamp() ? "scheduled" : "pending");
	values[5] = TimestampTzGetDatum(a->run_at);
	values[6] = Int32GetDatum(a->max_attempts > 0 ? a->max_attempts : ctx->default_max_attempts);
	values[7] = IntervalPGetDatum(a->timeout ? a->timeout : ctx->default_timeout);
	values[8] = ObjectIdGetDatum(a->submitted_by);
}

#define INSERT_COLUMNS \
	"INSERT INTO hasched.job (queue, tenant, owner, priority, state, run_at," \
	" max_attempts, timeout, submitted_by, idempotency_key, payload, schedule, fire_at) "
#define ON_KEY_CONFLICT \
	" ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
static Oid	common_types[N_COMMON] = {TEXTOID, REGROLEOID, REGROLEOID, INT2OID, TEXTOID,
TIMESTAMPTZOID, INT4OID, INTERVALOID, REGROLEOID};

/*
 * The jobs of sql queues carry their SQL in payload->>'sql': it must be
 * there, parse, and hold no transaction control statement, or the submit
 * is refused (JQ018) rather than failing at run time.
 */
static void
check_sql_payload(Datum payload, int index)
{
	char	   *sql = hs_payload_sql(payload);
	MemoryContext oldcxt = CurrentMemoryContext;
	List	   *volatile stmts = NIL;
	ListCell   *lc;
	int			n = 0;

	if (sql == NULL)
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_SQL),
				 index < 0 ? errmsg("the payload of a job of an sql queue needs an \"sql\" string") :
				 errmsg("payload %d of jobs of an sql queue needs an \"sql\" string", index),
				 errhint("Submit {\"sql\": \"...\"}; the statement runs as you, with the job's timeout.")));

	PG_TRY();
	{
		stmts = raw_parser(sql, RAW_PARSE_DEFAULT);
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

	/*
	 * A job runs inside the transaction that records its outcome: COMMIT,
	 * ROLLBACK, SAVEPOINT and the like cannot work there (SPI refuses them).
	 */
	foreach(lc, stmts)
	{
		Node	   *stmt = ((RawStmt *) lfirst(lc))->stmt;

		n++;
		if (IsA(stmt, TransactionStmt))
			ereport(ERROR,
					(errcode(HS_ERRCODE_INVALID_SQL),
					 errmsg("transaction control statements are not allowed in a job's SQL"),
					 errdetail("Statement %d of the job is %s.", n,
							   GetCommandTagName(CreateCommandTag(stmt))),
					 errhint("A job runs in one transaction, which hasched commits together with the job's outcome; to commit in steps, submit one job per step.")));
	}
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
	Datum		values[N_COMMON + 4];
	char		nulls[N_COMMON + 4];
	int64		id;
	bool		isnull;

	load_submit_context(a, &ctx);
	if (strcmp(ctx.transport, "sql") == 0)
		check_sql_payload(payload, -1);

	if (insert_plan == NULL)
	{
		Oid			types[N_COMMON + 4];

		memcpy(types, common_types, sizeof(common_types));
		types[N_COMMON] = TEXTOID;
		types[N_COMMON + 1] = JSONBOID;
		types[N_COMMON + 2] = TEXTOID;
		types[N_COMMON + 3] = TIMESTAMPTZOID;
		insert_plan = hs_prepare(INSERT_COLUMNS
								 "VALUES ($1, $2, $3, $4, $5::hasched.job_state, $6, $7, $8, $9, $10,"
								 " $11, $12, $13)"
								 ON_KEY_CONFLICT " RETURNING id", N_COMMON + 4, types);
	}
	memset(nulls, ' ', sizeof(nulls));
	common_values(a, &ctx, values);
	if (key)
		values[N_COMMON] = CStringGetTextDatum(key);
	else
		nulls[N_COMMON] = 'n';
	values[N_COMMON + 1] = payload;
	if (a->schedule)
	{
		values[N_COMMON + 2] = CStringGetTextDatum(a->schedule);
		values[N_COMMON + 3] = TimestampTzGetDatum(a->fire_at);
	}
	else
		nulls[N_COMMON + 2] = nulls[N_COMMON + 3] = 'n';
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
			Oid			types[2] = {REGROLEOID, TEXTOID};

			lookup_plan = hs_prepare("SELECT id FROM hasched.job"
									 " WHERE tenant = $1 AND idempotency_key = $2", 2, types);
		}
		lv[0] = values[1];
		lv[1] = values[N_COMMON];
		if (SPI_execute_plan(lookup_plan, lv, NULL, false, 1) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "hasched: job with idempotency key \"%s\" not found", key);
		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	return id;
}

typedef struct KeyId
{
	char		key[HS_MAX_KEY_BYTES + 1];
	int64		id;
} KeyId;

/*
 * Insert one job per payload in one statement (idempotently per key) and
 * charge the tenant for the jobs inserted.  Returns the job ids in payload
 * order, allocated with SPI_palloc (they outlive SPI_finish).  The caller
 * is connected to SPI and runs as the extension owner; a's fields, the
 * payloads and keys are validated.  With no payloads (n = 0) only the
 * queue, the mode and the tenant's tier are checked, and NULL returned.
 */
Datum *
hs_submit_many(const HsSubmit *a, ArrayType *payloads, Datum *pay_elems, int n,
			   ArrayType *keys, Datum *key_elems, bool *key_nulls)
{
	static SPIPlanPtr insert_plan = NULL;
	static SPIPlanPtr lookup_plan = NULL;
	SubmitContext ctx;
	Datum		values[N_COMMON + 2];
	char		nulls[N_COMMON + 2];
	Datum	   *ids;
	HTAB	   *by_key = NULL;
	uint64		inserted;
	int			next_unkeyed = 0;
	int64	   *unkeyed_ids;
	int			n_unkeyed = 0;

	load_submit_context(a, &ctx);
	if (n == 0)
		return NULL;
	if (strcmp(ctx.transport, "sql") == 0)
		for (int i = 0; i < n; i++)
			check_sql_payload(pay_elems[i], i + 1);

	if (insert_plan == NULL)
	{
		Oid			types[N_COMMON + 2];

		memcpy(types, common_types, sizeof(common_types));
		types[N_COMMON] = JSONBARRAYOID;
		types[N_COMMON + 1] = TEXTARRAYOID;
		insert_plan = hs_prepare(INSERT_COLUMNS
								 "SELECT $1, $2, $3, $4, $5::hasched.job_state, $6, $7, $8, $9, u.k, u.p,"
								 " NULL, NULL"
								 " FROM unnest($10, $11) WITH ORDINALITY AS u (p, k, ord)"
								 " ORDER BY u.ord"
								 ON_KEY_CONFLICT " RETURNING id, idempotency_key", N_COMMON + 2, types);
	}
	memset(nulls, ' ', sizeof(nulls));
	common_values(a, &ctx, values);
	values[N_COMMON] = PointerGetDatum(payloads);
	if (keys)
		values[N_COMMON + 1] = PointerGetDatum(keys);
	else
		values[N_COMMON + 1] = PointerGetDatum(construct_empty_array(TEXTOID));
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
			Oid			types[2] = {REGROLEOID, TEXTARRAYOID};

			lookup_plan = hs_prepare("SELECT idempotency_key, id FROM hasched.job"
									 " WHERE tenant = $1 AND idempotency_key = ANY ($2)",
									 2, types);
		}
		lv[0] = values[1];
		lv[1] = PointerGetDatum(keys);
		if (SPI_execute_plan(lookup_plan, lv, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "hasched: looking up idempotency keys failed");

		memset(&info, 0, sizeof(info));
		info.keysize = HS_MAX_KEY_BYTES + 1;
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

	hs_quota_charge(a->tenant, ctx.tier, (int64) inserted, ctx.has_day_limit,
					ctx.jobs_per_day, ctx.has_rate, ctx.rate_per_second, ctx.burst);

	return ids;
}
