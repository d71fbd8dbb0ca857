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
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "fmgr.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "parser/parser.h"
#include "rewrite/rewriteHandler.h"
#include "tcop/utility.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "core/hasched.h"

PG_FUNCTION_INFO_V1(hasched_config_changed);

typedef HsSubmit SubmitArgs;

/* The queue, mode and tenant limits that apply to a submit. */
typedef struct SubmitContext
{
	char		transport[16];
	bool		is_sql;
	Interval	default_timeout;
	int32		default_max_attempts;
	char		tier[NAMEDATALEN];
	bool		tier_exists;
	bool		read_only;
	bool		mode_normal;	/* the automatic read-only mode may apply */
	TimestampTz mode_changed_at;	/* when set_mode() last set the mode */
	char	   *reason;			/* of the mode, NULL if none given */
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

/* ------------------------------------------------------------------------
 * The submit context cache
 *
 * A submit needs its queue's defaults, the mode and its tenant's limits,
 * from four small tables that rarely change.  Each backend keeps what it
 * read in a local hash table keyed by (queue, tenant, hasched.default_tier).
 * A statement trigger on each of the four tables (hasched.config_changed)
 * queues a relcache invalidation of the table; PostgreSQL sends it to every
 * backend when the writing transaction commits (and replays it locally on
 * abort), and context_cache_inval empties the cache.  A submit whose
 * transaction starts after a change committed therefore sees it.
 *
 * A load reads the tables with a snapshot taken after the cache was found
 * wanting, and keeps the row only if no invalidation arrived meanwhile: a
 * change that commits after that snapshot sends its invalidation later, so
 * it cannot be missed.
 * ------------------------------------------------------------------------ */

typedef struct ContextKey
{
	char		queue[HS_QUEUE_NAME_MAX];
	char		tenant[NAMEDATALEN];
	char		default_tier[NAMEDATALEN];
} ContextKey;

typedef struct ContextEntry
{
	ContextKey	key;
	SubmitContext ctx;
} ContextEntry;

#define CONTEXT_CACHE_MAX	1024

static HTAB *context_cache = NULL;
static MemoryContext context_cxt = NULL;
static bool context_stale = false;
static bool context_usable = false;	/* the invalidation triggers exist */
static uint64 context_invals = 0;
static Oid	config_relids[4];

static void
context_cache_inval(Datum arg, Oid relid)
{
	for (int i = 0; i < lengthof(config_relids); i++)
		if (!OidIsValid(relid) || config_relids[i] == relid)
		{
			context_invals++;
			context_stale = true;
			return;
		}
}

/* An empty cache, made or emptied at a submit (never in the callback). */
static void
context_cache_reset(void)
{
	HASHCTL		info;
	Oid			nsp = get_namespace_oid("hasched", false);
	static const char *const names[4] = {"queue", "tenant", "tier", "state"};

	if (context_cxt == NULL)
	{
		context_cxt = AllocSetContextCreate(CacheMemoryContext,
											"hasched submit contexts",
											ALLOCSET_SMALL_SIZES);
		CacheRegisterRelcacheCallback(context_cache_inval, (Datum) 0);
	}
	else
		MemoryContextReset(context_cxt);
	for (int i = 0; i < lengthof(names); i++)
		config_relids[i] = get_relname_relid(names[i], nsp);

	/*
	 * Without the triggers (the 0.2.0 library on a schema not yet updated
	 * from 0.1.0) nothing is kept; creating them invalidates the tables, and
	 * the next reset finds them.
	 */
	context_usable = OidIsValid(LookupFuncName(list_make2(makeString("hasched"),
														  makeString("config_changed")),
											   0, NULL, true));
	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(ContextKey);
	info.entrysize = sizeof(ContextEntry);
	info.hcxt = context_cxt;
	context_cache = hash_create("hasched submit contexts", 64, &info,
								HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	context_stale = false;
}

/* Read the context from the tables, with a snapshot taken now. */
static bool
read_submit_context(const SubmitArgs *a, const char *default_tier, SubmitContext *ctx)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[3];
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	char	   *v;

	hs_plan(&plan, "SELECT q.default_timeout, q.default_max_attempts, s.mode,"
			" coalesce(t.tier, $3), r.name IS NOT NULL,"
			" coalesce(t.jobs_per_day, r.jobs_per_day),"
			" coalesce(t.rate_per_second, r.rate_per_second),"
			" coalesce(t.burst, r.burst), s.reason, q.transport, s.changed_at"
			" FROM hasched.queue q CROSS JOIN hasched.state s"
			" LEFT JOIN hasched.tenant t ON t.name = $2"
			" LEFT JOIN hasched.tier r ON r.name = coalesce(t.tier, $3)"
			" WHERE q.name = $1",
			3, TEXTOID, NAMEOID, TEXTOID);
	values[0] = CStringGetTextDatum(a->queue);
	values[1] = DirectFunctionCall1(namein, CStringGetDatum(a->tenant));
	values[2] = CStringGetTextDatum(default_tier);
	if (SPI_execute_snapshot(plan, values, NULL, GetLatestSnapshot(), InvalidSnapshot,
							 true, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "hasched: reading queue settings failed");
	if (SPI_processed == 0)
		return false;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;

	memset(ctx, 0, sizeof(*ctx));
	v = SPI_getvalue(tup, desc, 3);
	ctx->read_only = strcmp(v, "read_only") == 0;
	ctx->mode_normal = strcmp(v, "normal") == 0;
	ctx->mode_changed_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 11, &isnull));
	ctx->reason = SPI_getvalue(tup, desc, 9);
	strlcpy(ctx->transport, SPI_getvalue(tup, desc, 10), sizeof(ctx->transport));
	ctx->is_sql = strcmp(ctx->transport, "sql") == 0;
	ctx->default_timeout = *DatumGetIntervalP(SPI_getbinval(tup, desc, 1, &isnull));
	ctx->default_max_attempts = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
	strlcpy(ctx->tier, SPI_getvalue(tup, desc, 4), sizeof(ctx->tier));
	ctx->tier_exists = DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull));
	ctx->jobs_per_day = DatumGetInt64(SPI_getbinval(tup, desc, 6, &isnull));
	ctx->has_day_limit = !isnull;
	ctx->rate_per_second = DatumGetFloat8(SPI_getbinval(tup, desc, 7, &isnull));
	ctx->has_rate = !isnull;
	ctx->burst = DatumGetInt32(SPI_getbinval(tup, desc, 8, &isnull));
	if (isnull)
		ctx->burst = 1;
	return true;
}

/*
 * Queue defaults, the mode and the tenant's limits, from the cache or the
 * tables; refuse if needed.  Inside SPI, as the extension owner.
 */
static void
load_submit_context(const SubmitArgs *a, SubmitContext *ctx)
{
	const char *default_tier = hs_default_tier ? hs_default_tier : "free";
	ContextKey	key;
	ContextEntry *e = NULL;
	bool		cacheable;

	if (context_cache == NULL || context_stale)
		context_cache_reset();
	cacheable = context_usable &&
		strlen(a->queue) < sizeof(key.queue) &&
		strlen(a->tenant) < sizeof(key.tenant) &&
		strlen(default_tier) < sizeof(key.default_tier);
	if (cacheable)
	{
		memset(&key, 0, sizeof(key));
		strcpy(key.queue, a->queue);
		strcpy(key.tenant, a->tenant);
		strcpy(key.default_tier, default_tier);
		e = hash_search(context_cache, &key, HASH_FIND, NULL);
	}
	if (e != NULL)
		*ctx = e->ctx;
	else
	{
		uint64		invals = context_invals;

		if (!read_submit_context(a, default_tier, ctx))
			hs_unknown_queue(a->queue);
		if (cacheable && !context_stale && context_invals == invals)
		{
			if (hash_get_num_entries(context_cache) >= CONTEXT_CACHE_MAX)
				context_cache_reset();
			e = hash_search(context_cache, &key, HASH_ENTER, NULL);
			e->ctx = *ctx;
			if (ctx->reason)
				e->ctx.reason = MemoryContextStrdup(context_cxt, ctx->reason);
		}
	}

	if (ctx->read_only)
		hs_metrics_count_now(HS_CTR_REFUSED_READ_ONLY);
	if (ctx->read_only)
		ereport(ERROR,
				(errcode(HS_ERRCODE_READ_ONLY_MODE),
				 errmsg("hasched is in read-only mode: submissions are refused"),
				 ctx->reason ? errdetail("Reason given: %s.", ctx->reason) : 0,
				 errhint("Retry later. Claims and reports still work, so the backlog drains; an administrator ends the mode with SELECT hasched.set_mode('normal').")));
	/* overload: the scheduler's automatic read-only mode (degrade.c) */
	if (ctx->mode_normal)
		hs_degrade_check_submit(ctx->mode_changed_at);
	if (!ctx->tier_exists)
		ereport(ERROR,
				(errcode(HS_ERRCODE_UNKNOWN_TENANT),
				 errmsg("tier \"%s\" of tenant \"%s\" does not exist", ctx->tier, a->tenant),
				 errhint("Add the tier to hasched.tier, or set hasched.default_tier to an existing one.")));
}

/*
 * Statement trigger on hasched.queue, tenant, tier and state: every
 * session's submit context cache is emptied once the change commits.
 */
Datum
hasched_config_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "hasched_config_changed: must be fired as a trigger");
	CacheInvalidateRelcache(trigdata->tg_relation);
	return PointerGetDatum(NULL);
}

/*
 * The values of the columns every new job of this submit shares: $1..$9.
 * Tenant, owner and submitter are roles (regrole columns), by OID.
 * The transaction registers as one that makes jobs claimable before run_at
 * is set, so that the state trigger finds run_at in order and keeps the row.
 */
static void
common_values(const SubmitArgs *a, const SubmitContext *ctx, Datum *values)
{
	TimestampTz since = hs_writer_note();
	TimestampTz now = GetCurrentTimestamp();

	values[0] = CStringGetTextDatum(a->queue);
	values[1] = ObjectIdGetDatum(a->tenant_oid);
	values[2] = ObjectIdGetDatum(a->owner);
	values[3] = Int16GetDatum(a->priority);
	values[4] = BoolGetDatum(a->run_at > now);
	values[5] = TimestampTzGetDatum(Max(a->run_at, since));
	values[6] = Int32GetDatum(a->max_attempts > 0 ? a->max_attempts : ctx->default_max_attempts);
	values[7] = IntervalPGetDatum(a->timeout ? a->timeout : &ctx->default_timeout);
	values[8] = ObjectIdGetDatum(a->submitted_by);
}

/* $5: whether the job starts scheduled (else pending); constants, no cast at run time */
#define JOB_STATE_5 \
	"CASE WHEN $5 THEN 'scheduled'::hasched.job_state ELSE 'pending'::hasched.job_state END"
#define INSERT_COLUMNS \
	"INSERT INTO hasched.job (queue, tenant, owner, priority, state, run_at," \
	" max_attempts, timeout, submitted_by, idempotency_key, payload, schedule, fire_at) "
#define ON_KEY_CONFLICT \
	" ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
#define N_COMMON	9
static Oid	common_types[N_COMMON] = {TEXTOID, REGROLEOID, REGROLEOID, INT2OID, BOOLOID,
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

/* ------------------------------------------------------------------------
 * The direct insert
 *
 * A job without an idempotency key goes into hasched.job through the
 * executor's simple-insert entry point, the one logical replication applies
 * rows with (ExecSimpleRelationInsert): the row triggers (hasched's state
 * trigger), the NOT NULL constraints, the heap and every index, as the
 * INSERT statement would, without a plan, a projection or SPI.  The columns
 * the submit does not set get the table's own defaults (id, attempt,
 * created_at), evaluated from their stored expressions.  Whenever the table
 * has a trigger this path would not fire (a statement trigger, a transition
 * table), the INSERT statement is used instead.
 * ------------------------------------------------------------------------ */

/* The columns a submit sets, in the order of submit_columns below. */
typedef enum SubmitCol
{
	COL_QUEUE, COL_TENANT, COL_OWNER, COL_PRIORITY, COL_STATE, COL_RUN_AT,
	COL_MAX_ATTEMPTS, COL_TIMEOUT, COL_SUBMITTED_BY, COL_PAYLOAD, COL_SCHEDULE,
	COL_FIRE_AT, COL_ID, NUM_SUBMIT_COLS
} SubmitCol;

static const char *const submit_columns[NUM_SUBMIT_COLS] = {
	"queue", "tenant", "owner", "priority", "state", "run_at",
	"max_attempts", "timeout", "submitted_by", "payload", "schedule", "fire_at", "id"
};

/*
 * What the direct insert knows of hasched.job's tuple descriptor: the
 * numbers of the columns above, and the default expressions of the others,
 * kept as long as the relcache keeps the same descriptor (and checked by
 * name and by the text of each default at every use).
 */
typedef struct JobLayout
{
	TupleDesc	desc;
	int			att[NUM_SUBMIT_COLS];
	int			ndefaults;
	AttrNumber *def_att;
	char	  **def_text;		/* adbin, to recognise the expression */
	Expr	  **def_expr;
	Oid			state_type;
	Datum		state_scheduled;
	Datum		state_pending;
} JobLayout;

static JobLayout job_layout;
static MemoryContext job_layout_cxt = NULL;

static const char *
stored_default(TupleDesc desc, AttrNumber attnum)
{
	TupleConstr *constr = desc->constr;

	for (int i = 0; constr != NULL && i < constr->num_defval; i++)
		if (constr->defval[i].adnum == attnum)
			return constr->defval[i].adbin;
	return NULL;
}

static bool
job_layout_valid(TupleDesc desc)
{
	if (desc != job_layout.desc)
		return false;
	for (int i = 0; i < NUM_SUBMIT_COLS; i++)
	{
		Form_pg_attribute att;

		if (job_layout.att[i] > desc->natts)
			return false;
		att = TupleDescAttr(desc, job_layout.att[i] - 1);
		if (att->attisdropped || strcmp(NameStr(att->attname), submit_columns[i]) != 0)
			return false;
	}
	for (int i = 0; i < job_layout.ndefaults; i++)
	{
		const char *text = stored_default(desc, job_layout.def_att[i]);

		if (text == NULL || strcmp(text, job_layout.def_text[i]) != 0)
			return false;
	}
	return true;
}

static void
job_layout_build(Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	MemoryContext old;
	int			n = 0;

	if (job_layout_cxt == NULL)
		job_layout_cxt = AllocSetContextCreate(CacheMemoryContext,
											   "hasched job layout",
											   ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(job_layout_cxt);
	memset(&job_layout, 0, sizeof(job_layout));
	old = MemoryContextSwitchTo(job_layout_cxt);

	for (int i = 0; i < NUM_SUBMIT_COLS; i++)
	{
		job_layout.att[i] = SPI_fnumber(desc, submit_columns[i]);
		if (job_layout.att[i] <= 0)
			elog(ERROR, "hasched: hasched.job has no column %s", submit_columns[i]);
	}
	job_layout.def_att = palloc(sizeof(AttrNumber) * desc->natts);
	job_layout.def_text = palloc(sizeof(char *) * desc->natts);
	job_layout.def_expr = palloc(sizeof(Expr *) * desc->natts);
	for (AttrNumber attnum = 1; attnum <= desc->natts; attnum++)
	{
		const char *text = stored_default(desc, attnum);
		bool		set = false;

		for (int i = 0; i < NUM_SUBMIT_COLS - 1; i++)	/* id takes its default */
			set |= job_layout.att[i] == attnum;
		if (set || text == NULL || TupleDescAttr(desc, attnum - 1)->attisdropped)
			continue;
		job_layout.def_att[n] = attnum;
		job_layout.def_text[n] = pstrdup(text);
		job_layout.def_expr[n] = (Expr *) build_column_default(rel, attnum);
		n++;
	}
	job_layout.ndefaults = n;

	job_layout.state_type = TupleDescAttr(desc, job_layout.att[COL_STATE] - 1)->atttypid;
	job_layout.state_scheduled = DirectFunctionCall2(enum_in, CStringGetDatum("scheduled"),
													 ObjectIdGetDatum(job_layout.state_type));
	job_layout.state_pending = DirectFunctionCall2(enum_in, CStringGetDatum("pending"),
												   ObjectIdGetDatum(job_layout.state_type));
	MemoryContextSwitchTo(old);
	job_layout.desc = desc;
}

/* Does the table have only triggers that ExecSimpleRelationInsert fires? */
static bool
direct_insert_possible(Relation rel)
{
	TriggerDesc *td = rel->trigdesc;

	return rel->rd_rel->relkind == RELKIND_RELATION &&
		(td == NULL ||
		 !(td->trig_insert_before_statement || td->trig_insert_after_statement ||
		   td->trig_insert_instead_row || td->trig_insert_new_table));
}

/*
 * Insert one job without a key; returns false (having done nothing) when
 * the table needs the INSERT statement.  Inside SPI, as the owner.
 */
static bool
insert_direct(const HsSubmit *a, const SubmitContext *ctx, Datum payload, int64 *id)
{
	Oid			relid = get_relname_relid("job", get_namespace_oid("hasched", false));
	Relation	rel;
	EState	   *estate;
	RangeTblEntry *rte;
	ResultRelInfo *rri;
	TupleTableSlot *slot;
	ExprContext *econtext;
	TupleDesc	desc;
	Datum	   *values;
	bool	   *nulls;
	TimestampTz since;
	TimestampTz now;
	bool		isnull;

	if (!OidIsValid(relid))
		return false;
	rel = table_open(relid, RowExclusiveLock);
	if (!direct_insert_possible(rel))
	{
		table_close(rel, NoLock);
		return false;
	}
	desc = RelationGetDescr(rel);
	if (!job_layout_valid(desc))
		job_layout_build(rel);

	estate = CreateExecutorState();
	rte = makeNode(RangeTblEntry);
	rte->rtekind = RTE_RELATION;
	rte->relid = relid;
	rte->relkind = rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	ExecInitRangeTable(estate, list_make1(rte));
	rri = makeNode(ResultRelInfo);
	InitResultRelInfo(rri, rel, 1, NULL, 0);
	estate->es_opened_result_relations = list_make1(rri);
	estate->es_output_cid = GetCurrentCommandId(true);
	if (ActiveSnapshotSet())
		estate->es_snapshot = GetActiveSnapshot();
	ExecOpenIndices(rri, false);
	AfterTriggerBeginQuery();

	slot = ExecInitExtraTupleSlot(estate, desc, &TTSOpsVirtual);
	ExecClearTuple(slot);
	values = slot->tts_values;
	nulls = slot->tts_isnull;
	memset(nulls, true, sizeof(bool) * desc->natts);

	/* the columns' defaults, in the executor's per-tuple context */
	econtext = GetPerTupleExprContext(estate);
	for (int i = 0; i < job_layout.ndefaults; i++)
	{
		ExprState  *state = ExecInitExpr(job_layout.def_expr[i], NULL);
		int			k = job_layout.def_att[i] - 1;

		values[k] = ExecEvalExprSwitchContext(state, econtext, &nulls[k]);
	}

	/* as common_values() does for the INSERT statement */
	since = hs_writer_note();
	now = GetCurrentTimestamp();
#define SET(col, datum) \
	(values[job_layout.att[col] - 1] = (datum), nulls[job_layout.att[col] - 1] = false)
	SET(COL_QUEUE, CStringGetTextDatum(a->queue));
	SET(COL_TENANT, ObjectIdGetDatum(a->tenant_oid));
	SET(COL_OWNER, ObjectIdGetDatum(a->owner));
	SET(COL_PRIORITY, Int16GetDatum(a->priority));
	SET(COL_STATE, a->run_at > now ? job_layout.state_scheduled : job_layout.state_pending);
	SET(COL_RUN_AT, TimestampTzGetDatum(Max(a->run_at, since)));
	SET(COL_MAX_ATTEMPTS, Int32GetDatum(a->max_attempts > 0 ? a->max_attempts :
										ctx->default_max_attempts));
	SET(COL_TIMEOUT, IntervalPGetDatum(a->timeout ? a->timeout : &ctx->default_timeout));
	SET(COL_SUBMITTED_BY, ObjectIdGetDatum(a->submitted_by));
	SET(COL_PAYLOAD, payload);
	if (a->schedule)
	{
		SET(COL_SCHEDULE, CStringGetTextDatum(a->schedule));
		SET(COL_FIRE_AT, TimestampTzGetDatum(a->fire_at));
	}
#undef SET
	ExecStoreVirtualTuple(slot);

	ExecSimpleRelationInsert(rri, estate, slot);
	if (!ItemPointerIsValid(&slot->tts_tid))
		elog(ERROR, "hasched: a trigger on hasched.job skipped the insert of a job");
	*id = DatumGetInt64(slot_getattr(slot, job_layout.att[COL_ID], &isnull));

	ExecCloseIndices(rri);
	AfterTriggerEndQuery(estate);
	ExecResetTupleTable(estate->es_tupleTable, false);
	FreeExecutorState(estate);
	table_close(rel, NoLock);
	return true;
}

/*
 * The statements of one kind of submit, prepared on first use: the plain
 * INSERT, the INSERT ... ON CONFLICT of keyed jobs, and the lookup of the
 * jobs whose key was already taken.
 */
typedef struct SubmitPlans
{
	SPIPlanPtr	insert;
	SPIPlanPtr	keyed;
	SPIPlanPtr	lookup;
} SubmitPlans;

/*
 * Insert one job (or find the one with the same idempotency key) and charge
 * the tenant for it.  The caller is connected to SPI and runs as the
 * extension owner; a's fields are validated.  Used by submit() and by the
 * scheduler for the runs of schedules.
 *
 * A job without a key is inserted by a plain INSERT: ON CONFLICT would
 * only add a speculative insertion that cannot conflict.
 */
int64
hs_submit_one(const HsSubmit *a, Datum payload, const char *key)
{
	static SubmitPlans plans;
	SubmitContext ctx;
	Datum		values[N_COMMON + 4];
	char		nulls[N_COMMON + 4];
	int64		id;
	bool		isnull;

	load_submit_context(a, &ctx);
	if (ctx.is_sql)
		check_sql_payload(payload, -1);
	hs_quota_prepare(a->tenant, a->tenant_oid, ctx.has_day_limit);

	if (key == NULL && insert_direct(a, &ctx, payload, &id))
	{
		hs_quota_charge(a->tenant, a->tenant_oid, ctx.tier, 1, ctx.has_day_limit, ctx.jobs_per_day,
						ctx.has_rate, ctx.rate_per_second, ctx.burst);
		return id;
	}

	if (plans.insert == NULL)
	{
		Oid			types[N_COMMON + 4];

		memcpy(types, common_types, sizeof(common_types));
		types[N_COMMON] = JSONBOID;
		types[N_COMMON + 1] = TEXTOID;
		types[N_COMMON + 2] = TIMESTAMPTZOID;
		types[N_COMMON + 3] = TEXTOID;
		plans.insert = hs_prepare(INSERT_COLUMNS
								 "VALUES ($1, $2, $3, $4, " JOB_STATE_5 ", $6, $7, $8, $9,"
								 " NULL, $10, $11, $12)"
								 " RETURNING id", N_COMMON + 3, types);
		plans.keyed = hs_prepare(INSERT_COLUMNS
								"VALUES ($1, $2, $3, $4, " JOB_STATE_5 ", $6, $7, $8, $9,"
								" $13, $10, $11, $12)"
								ON_KEY_CONFLICT " RETURNING id", N_COMMON + 4, types);
	}
	memset(nulls, ' ', sizeof(nulls));
	common_values(a, &ctx, values);
	values[N_COMMON] = payload;
	if (a->schedule)
	{
		values[N_COMMON + 1] = CStringGetTextDatum(a->schedule);
		values[N_COMMON + 2] = TimestampTzGetDatum(a->fire_at);
	}
	else
		nulls[N_COMMON + 1] = nulls[N_COMMON + 2] = 'n';
	if (key)
		values[N_COMMON + 3] = CStringGetTextDatum(key);
	/* no row limit: with one, the INSERT would stop before its statement triggers */
	if (SPI_execute_plan(key ? plans.keyed : plans.insert, values, nulls, false, 0) !=
		SPI_OK_INSERT_RETURNING)
		elog(ERROR, "hasched: inserting the job failed");

	if (SPI_processed == 1)
	{
		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		hs_quota_charge(a->tenant, a->tenant_oid, ctx.tier, 1, ctx.has_day_limit, ctx.jobs_per_day,
						ctx.has_rate, ctx.rate_per_second, ctx.burst);
	}
	else
	{
		/* the key was used before: that job is this submit's job */
		Datum		lv[2];

		hs_plan(&plans.lookup, "SELECT id FROM hasched.job"
				" WHERE tenant = $1 AND idempotency_key = $2",
				2, REGROLEOID, TEXTOID);
		lv[0] = values[1];
		lv[1] = values[N_COMMON + 3];
		if (SPI_execute_plan(plans.lookup, lv, NULL, false, 1) != SPI_OK_SELECT ||
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
	static SubmitPlans plans;
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
	if (ctx.is_sql)
		for (int i = 0; i < n; i++)
			check_sql_payload(pay_elems[i], i + 1);
	hs_quota_prepare(a->tenant, a->tenant_oid, ctx.has_day_limit);

	if (plans.insert == NULL)
	{
		Oid			types[N_COMMON + 2];

		memcpy(types, common_types, sizeof(common_types));
		types[N_COMMON] = JSONBARRAYOID;
		types[N_COMMON + 1] = TEXTARRAYOID;
		/* without keys: a plain INSERT, the ids in payload order */
		plans.insert = hs_prepare(INSERT_COLUMNS
								 "SELECT $1, $2, $3, $4, " JOB_STATE_5 ", $6, $7, $8, $9, NULL,"
								 " u.p, NULL, NULL"
								 " FROM unnest($10) WITH ORDINALITY AS u (p, ord)"
								 " ORDER BY u.ord"
								 " RETURNING id", N_COMMON + 1, types);
		plans.keyed = hs_prepare(INSERT_COLUMNS
								"SELECT $1, $2, $3, $4, " JOB_STATE_5 ", $6, $7, $8, $9, u.k, u.p,"
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
	if (SPI_execute_plan(keys ? plans.keyed : plans.insert, values, nulls, false, 0) !=
		SPI_OK_INSERT_RETURNING)
		elog(ERROR, "hasched: inserting the jobs failed");
	inserted = SPI_processed;

	unkeyed_ids = palloc(sizeof(int64) * (inserted + 1));
	for (uint64 i = 0; i < inserted; i++)
	{
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
													 SPI_tuptable->tupdesc, 1, &isnull));

		if (keys)
			(void) SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull);
		if (!keys || isnull)
			unkeyed_ids[n_unkeyed++] = id;
	}

	if (keys)
	{
		HASHCTL		info;
		Datum		lv[2];

		hs_plan(&plans.lookup, "SELECT idempotency_key, id FROM hasched.job"
				" WHERE tenant = $1 AND idempotency_key = ANY ($2)",
				2, REGROLEOID, TEXTARRAYOID);
		lv[0] = values[1];
		lv[1] = PointerGetDatum(keys);
		if (SPI_execute_plan(plans.lookup, lv, NULL, false, 0) != SPI_OK_SELECT)
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

	hs_quota_charge(a->tenant, a->tenant_oid, ctx.tier, (int64) inserted, ctx.has_day_limit,
					ctx.jobs_per_day, ctx.has_rate, ctx.rate_per_second, ctx.burst);

	return ids;
}
