/*-------------------------------------------------------------------------
 *
 * util.c
 *		Helpers of the core layer: running hasched's statements as the
 *		extension owner, priorities, intervals and their bound
 *		(hasched.max_timeout, and the queue trigger that applies it), error
 *		texts' bound, plans, argument checks.
 *
 * IDENTIFICATION
 *		src/core/util.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "access/xact.h"
#include "access/htup_details.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "commands/trigger.h"
#include "common/int.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "jit/jit.h"
#include "miscadmin.h"
#include "optimizer/cost.h"
#include "optimizer/optimizer.h"
#include "optimizer/planner.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/resowner.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "core/hasched.h"

PG_FUNCTION_INFO_V1(hasched_queue_check_trigger);

/* ------------------------------------------------------------------------
 * Running hasched's statements as the extension owner
 *
 * The SQL API checks what the caller may do, then runs its statements as
 * the role that owns the hasched schema, with only pg_catalog on the search
 * path, and plans them with sequential scans (and JIT) off.  This happens
 * around every API call, so it avoids the GUC machinery, which costs a
 * submit more than a tenth of its time:
 *  - the search path is pushed as an override (PushOverrideSearchPath, as
 *    in PostgreSQL 15 and 16): no GUC is set, and the session's own path is
 *    neither recomputed under the owner's role nor after the call;
 *  - enable_seqscan and jit only matter when a statement is planned, which
 *    for hasched's kept plans is rare: a planner hook turns them off while
 *    a privileged section is open (privileged_levels below);
 *  - the owner's OID is kept until pg_namespace changes.
 * An error in a section is cleaned up by the (sub)transaction abort, which
 * restores the user and pops the search path; the transaction callbacks
 * below forget the sections it ended.
 * ------------------------------------------------------------------------ */

static OverrideSearchPath catalog_only = {NIL, true, false, 0};

static Oid	owner_oid = InvalidOid;

/* the transaction nest level of each open privileged section, innermost last */
#define MAX_PRIVILEGED_DEPTH 64
static int	privileged_levels[MAX_PRIVILEGED_DEPTH];
static int	privileged_depth = 0;

static bool privileged_initialized = false;
static planner_hook_type prev_planner_hook = NULL;

static void
owner_inval(Datum arg, int cacheid, uint32 hashvalue)
{
	owner_oid = InvalidOid;
}

/*
 * hasched's statements are planned with sequential scans disabled.  Their
 * plans are generic and kept for the life of a backend; one made while the
 * job table was small would scan all of it once it is large (a full scan of
 * hasched.job per scheduler round was seen in a benchmark).  Every one of
 * them has an index that fits.  (JIT goes off with it: the cost of a
 * disabled scan would pass jit_above_cost.)  Nor do they plan parallel
 * workers: the scheduler spaces its work by its own CPU time, which a
 * parallel worker's is not, and the workers are the users' queries' to
 * take.  The settings are only changed for the duration of the planning.
 */
static PlannedStmt *
privileged_planner(Query *parse, const char *query_string, int cursorOptions,
				   ParamListInfo boundParams)
{
	PlannedStmt *result;
	bool		save_seqscan = enable_seqscan;
	bool		save_jit = jit_enabled;
	int			save_parallel = max_parallel_workers_per_gather;

	if (privileged_depth == 0)
		return prev_planner_hook ?
			prev_planner_hook(parse, query_string, cursorOptions, boundParams) :
			standard_planner(parse, query_string, cursorOptions, boundParams);

	enable_seqscan = false;
	jit_enabled = false;
	max_parallel_workers_per_gather = 0;
	PG_TRY();
	{
		result = prev_planner_hook ?
			prev_planner_hook(parse, query_string, cursorOptions, boundParams) :
			standard_planner(parse, query_string, cursorOptions, boundParams);
	}
	PG_FINALLY();
	{
		enable_seqscan = save_seqscan;
		jit_enabled = save_jit;
		max_parallel_workers_per_gather = save_parallel;
	}
	PG_END_TRY();
	return result;
}

static void
privileged_xact_callback(XactEvent event, void *arg)
{
	privileged_depth = 0;
}

static void
privileged_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
							SubTransactionId parentSubid, void *arg)
{
	int			level = GetCurrentTransactionNestLevel();

	if (event != SUBXACT_EVENT_ABORT_SUB)
		return;
	while (privileged_depth > 0 && privileged_levels[privileged_depth - 1] >= level)
		privileged_depth--;
}

static void
privileged_init(void)
{
	CacheRegisterSyscacheCallback(NAMESPACEOID, owner_inval, (Datum) 0);
	RegisterXactCallback(privileged_xact_callback, NULL);
	RegisterSubXactCallback(privileged_subxact_callback, NULL);
	prev_planner_hook = planner_hook;
	planner_hook = privileged_planner;
	privileged_initialized = true;
}

/*
 * The role that owns the hasched schema: the SQL API runs its statements as
 * that role, after checking what the caller may do.
 */
static Oid
extension_owner(void)
{
	Oid			nspid;
	HeapTuple	tup;

	if (OidIsValid(owner_oid))
		return owner_oid;
	nspid = get_namespace_oid("hasched", false);
	tup = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(nspid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for namespace %u", nspid);
	owner_oid = ((Form_pg_namespace) GETSTRUCT(tup))->nspowner;
	ReleaseSysCache(tup);
	return owner_oid;
}

/*
 * Become the extension owner with only pg_catalog on the search path, until
 * hs_privileged_leave() at the same transaction nest level.
 */
void
hs_privileged_enter(HsPrivileged *priv)
{
	Oid			owner;

	if (!privileged_initialized)
		privileged_init();
	if (privileged_depth >= MAX_PRIVILEGED_DEPTH)
		elog(ERROR, "hasched: privileged sections nested too deeply");
	owner = extension_owner();
	GetUserIdAndSecContext(&priv->save_userid, &priv->save_sec_context);
	PushOverrideSearchPath(&catalog_only);
	privileged_levels[privileged_depth++] = GetCurrentTransactionNestLevel();
	SetUserIdAndSecContext(owner,
						   priv->save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
}

void
hs_privileged_leave(HsPrivileged *priv)
{
	SetUserIdAndSecContext(priv->save_userid, priv->save_sec_context);
	if (privileged_depth > 0)
		privileged_depth--;
	PopOverrideSearchPath();
}

/*
 * For the background workers, whose every statement is hasched's: plan
 * with sequential scans, JIT and parallel workers off for the whole
 * session, as privileged_planner() does (the executors turn the three back
 * to their reset values around the SQL of jobs).
 */
void
hs_plan_for_queues(GucAction action)
{
	(void) set_config_option("max_parallel_workers_per_gather", "0",
							 PGC_USERSET, PGC_S_SESSION,
							 action, true, 0, false);
	(void) set_config_option("enable_seqscan", "off",
							 PGC_USERSET, PGC_S_SESSION,
							 action, true, 0, false);
	/* the disabled scans' costs would otherwise pass jit_above_cost */
	(void) set_config_option("jit", "off",
							 PGC_USERSET, PGC_S_SESSION,
							 action, true, 0, false);
}

/* Refuse a write on a standby with a hint to reach the primary. */
void
hs_require_primary(const char *what)
{
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(HS_ERRCODE_NOT_PRIMARY),
				 errmsg("cannot %s on a standby", what),
				 errdetail("This server is in recovery; hasched accepts writes only on the primary."),
				 errhint("Connect to the primary, for example with target_session_attrs=read-write in the connection string.")));
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

/* ------------------------------------------------------------------------
 * Intervals and tokens
 * ------------------------------------------------------------------------ */

/*
 * An interval as microseconds; a month counts as 30 days.  Saturates at the
 * int64 limits instead of wrapping around: '178000000 years' must not come
 * out as some positive number, nor '300000 years' as a negative one.
 */
static int64
sat_add(int64 a, int64 b)
{
	int64		r;

	if (pg_add_s64_overflow(a, b, &r))
		return a > 0 ? PG_INT64_MAX : PG_INT64_MIN;
	return r;
}

static int64
sat_mul(int64 a, int64 b)
{
	int64		r;

	if (pg_mul_s64_overflow(a, b, &r))
		return (a < 0) != (b < 0) ? PG_INT64_MIN : PG_INT64_MAX;
	return r;
}

int64
hs_interval_usec(const Interval *iv)
{
	return sat_add(sat_add(iv->time, sat_mul(iv->day, USECS_PER_DAY)),
				   sat_mul(iv->month, (int64) DAYS_PER_MONTH * USECS_PER_DAY));
}

/* hasched.max_timeout, in microseconds */
int64
hs_max_timeout_usec(void)
{
	return (int64) hs_max_timeout * 1000;
}

/* An interval as a user would write it, for messages. */
char *
hs_interval_text(const Interval *iv)
{
	return DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(iv)));
}

/*
 * Is the interval a valid timeout, lease or retry delay: positive and no
 * longer than hasched.max_timeout?  When it is not and why is not NULL,
 * *why says so, naming it `what`: "timeout '300000 years' is larger than
 * hasched.max_timeout (7d)".
 */
bool
hs_interval_ok(const char *what, const Interval *iv, char **why)
{
	int64		usec = hs_interval_usec(iv);

	if (usec > hs_max_timeout_usec())
	{
		if (why)
			*why = psprintf("%s '%s' is larger than hasched.max_timeout (%s)",
							what, hs_interval_text(iv),
							GetConfigOptionByName("hasched.max_timeout", NULL, false));
		return false;
	}
	if (usec <= 0)
	{
		if (why)
			*why = psprintf("%s must be positive", what);
		return false;
	}
	return true;
}

#define INTERVAL_BOUND_DETAIL \
	"Timeouts, leases and retry delays must be positive and at most hasched.max_timeout."
#define INTERVAL_BOUND_HINT \
	"Use a shorter interval, or raise hasched.max_timeout (at most 2147483647 ms, about 24.8 days: the longest statement_timeout PostgreSQL can set)."

/* A timeout or lease argument: refused with JQ013 unless valid. */
void
hs_check_interval_arg(const char *what, const Interval *iv)
{
	char	   *why;

	if (hs_interval_ok(what, iv, &why))
		return;
	if (hs_interval_usec(iv) <= 0)
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg_internal("%s", why)));
	ereport(ERROR,
			(errcode(HS_ERRCODE_INVALID_ARGUMENT),
			 errmsg_internal("%s", why),
			 errdetail(INTERVAL_BOUND_DETAIL),
			 errhint(INTERVAL_BOUND_HINT)));
}

/*
 * The queue trigger: a queue's default timeout, lease and retry delays are
 * at most hasched.max_timeout (its CHECK constraints keep them positive).
 */
Datum
hasched_queue_check_trigger(PG_FUNCTION_ARGS)
{
	static const char *const cols[] = {"default_timeout", "lease", "backoff_base", "backoff_max"};
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	tupdesc;
	HeapTuple	newtup;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		elog(ERROR, "hasched_queue_check_trigger: must be fired before, for each row");
	tupdesc = trigdata->tg_relation->rd_att;
	newtup = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ?
		trigdata->tg_newtuple : trigdata->tg_trigtuple;

	for (int i = 0; i < lengthof(cols); i++)
	{
		int			att = SPI_fnumber(tupdesc, cols[i]);
		bool		isnull;
		Datum		value;
		char	   *why;

		if (att <= 0)
			elog(ERROR, "hasched_queue_check_trigger: table has no column %s", cols[i]);
		value = heap_getattr(newtup, att, tupdesc, &isnull);
		/* NULL and values that are not positive: the CHECK constraints say so */
		if (isnull || hs_interval_usec(DatumGetIntervalP(value)) <= 0 ||
			hs_interval_ok(cols[i], DatumGetIntervalP(value), &why))
			continue;
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("queue \"%s\": %s",
						SPI_getvalue(newtup, tupdesc, SPI_fnumber(tupdesc, "name")), why),
				 errdetail(INTERVAL_BOUND_DETAIL),
				 errhint(INTERVAL_BOUND_HINT)));
	}
	return PointerGetDatum(newtup);
}

/*
 * An error text as kept for a failed attempt: at most hasched.max_error_bytes,
 * cut at a character boundary, ending with a note that says it was cut.
 */
char *
hs_clip_error(const char *error)
{
	size_t		len = strlen(error);
	char		note[64];
	int			keep;

	if (len <= (size_t) hs_max_error_bytes)
		return (char *) error;
	snprintf(note, sizeof(note), " ... [truncated: %zu bytes in all]", len);
	keep = pg_mbcliplen(error, (int) Min(len, (size_t) PG_INT32_MAX),
						hs_max_error_bytes - (int) strlen(note));
	return psprintf("%.*s%s", keep, error, note);
}

/* A lease token as text (see src/common/lease_token.c). */
char *
hs_format_token(int32 epoch, int32 attempt, int64 lease_id)
{
	char		buf[HS_TOKEN_BUFSZ];

	hs_token_format(buf, sizeof(buf), epoch, attempt, lease_id);
	return pstrdup(buf);
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

/*
 * Prepare *slot once (the caller's static), the argument types following
 * nargs; later calls do nothing.  Keeps each statement's text and types in
 * one call beside the code that runs it.
 */
void
hs_plan(SPIPlanPtr *slot, const char *sql, int nargs,...)
{
	Oid			types[FUNC_MAX_ARGS];
	va_list		ap;

	if (*slot != NULL)
		return;
	Assert(nargs >= 0 && nargs <= FUNC_MAX_ARGS);
	va_start(ap, nargs);
	for (int i = 0; i < nargs; i++)
		types[i] = va_arg(ap, Oid);
	va_end(ap);
	*slot = hs_prepare(sql, nargs, types);
}

/*
 * Execute a read-only kept plan whose ORDER BY ... LIMIT follows an index:
 * planned (when its generic plan is made or remade, inside the execution)
 * with bitmap scans and sorts off besides what hs_plan_for_queues() and
 * privileged_planner() turn off.  A plan made while the table has no
 * statistics (a new install, before autovacuum's first ANALYZE) expected a
 * few hundred rows and read them all through a bitmap scan, sorted them
 * and kept the LIMIT: each chunk of the scheduler's count of 1.5 million
 * waiting jobs read all 1.5 million (TAP 078).  Returns SPI's code.
 */
int
hs_execute_in_index_order(SPIPlanPtr plan, Datum *args, long count)
{
	bool		save_bitmap = enable_bitmapscan;
	bool		save_sort = enable_sort;
	int			rc;

	enable_bitmapscan = false;
	enable_sort = false;
	PG_TRY();
	{
		rc = SPI_execute_plan(plan, args, NULL, true, count);
	}
	PG_FINALLY();
	{
		enable_bitmapscan = save_bitmap;
		enable_sort = save_sort;
	}
	PG_END_TRY();
	return rc;
}

/* An int8[] or int4[] of n Datums, for a statement's array parameter. */
Datum
hs_int8_array(Datum *elems, int n)
{
	return PointerGetDatum(construct_array(elems, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

Datum
hs_int4_array(Datum *elems, int n)
{
	return PointerGetDatum(construct_array(elems, n, INT4OID, 4, true, TYPALIGN_INT));
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

/*
 * Run fn(arg) in a subtransaction: NULL when it succeeded; otherwise its
 * error (copied into the caller's memory context), and everything it did
 * is rolled back.  The scheduler's steps, the runs of schedules and the
 * executors' settling of a batch are isolated this way: one failure stops
 * only itself.
 */
ErrorData *
hs_run_isolated(HsIsolatedFn fn, void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return edata;
}
