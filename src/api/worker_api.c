/*-------------------------------------------------------------------------
 *
 * worker_api.c
 *		SQL functions of workers (the pull API): claim, listen, heartbeat,
 *		complete, fail; start (a job received from the broker); and requeue_expired for administrators.  Thin: read
 *		and check the arguments, refuse on a standby (JQ004) and, with
 *		ZooKeeper, on a server that does not lead (JQ024), then one call into core
 *		(claim.c, job_state.c) as the extension owner.
 *
 * IDENTIFICATION
 *		src/api/worker_api.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "core/hasched.h"

PG_FUNCTION_INFO_V1(hasched_claim);
PG_FUNCTION_INFO_V1(hasched_listen);
PG_FUNCTION_INFO_V1(hasched_heartbeat);
PG_FUNCTION_INFO_V1(hasched_complete);
PG_FUNCTION_INFO_V1(hasched_complete_many);
PG_FUNCTION_INFO_V1(hasched_fail);
PG_FUNCTION_INFO_V1(hasched_requeue_expired);
PG_FUNCTION_INFO_V1(hasched_start);
PG_FUNCTION_INFO_V1(hasched_start_many);

#define MAX_CLAIM_BATCH		10000

Datum
hasched_claim(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *queue;
	char	   *worker;
	int32		max_jobs;
	Interval   *lease = NULL;
	HsPrivileged priv;
	uint64		total;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("queue, worker and max_jobs must not be null")));
	queue = text_to_cstring(PG_GETARG_TEXT_PP(0));
	worker = text_to_cstring(PG_GETARG_TEXT_PP(1));
	max_jobs = PG_GETARG_INT32(2);
	hs_check_text_arg("worker", worker, 200);
	if (max_jobs < 1 || max_jobs > MAX_CLAIM_BATCH)
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("max_jobs must be between 1 and %d, not %d", MAX_CLAIM_BATCH, max_jobs)));
	if (!PG_ARGISNULL(3))
	{
		lease = PG_GETARG_INTERVAL_P(3);
		hs_check_interval_arg("lease", lease);
	}
	hs_require_primary("claim jobs");
	hs_require_leader("claim jobs");

	InitMaterializedSRF(fcinfo, 0);

	hs_privileged_enter(&priv);
	SPI_connect();

	total = hs_claim_jobs(queue, worker, max_jobs, lease, "pull", false);
	for (uint64 i = 0; i < total; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		Datum		out[8];
		bool		nulls[8] = {false};
		bool		isnull;
		int32		epoch = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
		int32		attempt = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
		int64		lease_id = DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull));

		out[0] = SPI_getbinval(tup, desc, 1, &isnull);
		out[1] = CStringGetTextDatum(hs_format_token(epoch, attempt, lease_id));
		out[2] = SPI_getbinval(tup, desc, 5, &isnull);
		out[3] = Int32GetDatum(attempt);
		out[4] = SPI_getbinval(tup, desc, 6, &isnull);
		out[5] = SPI_getbinval(tup, desc, 7, &isnull);
		out[6] = SPI_getbinval(tup, desc, 8, &isnull);
		out[7] = SPI_getbinval(tup, desc, 9, &isnull);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, out, nulls);
	}

	SPI_finish();
	hs_privileged_leave(&priv);
	return (Datum) 0;
}

/*
 * listen(queue): LISTEN for jobs of a pull queue becoming claimable (a
 * NOTIFY on the returned channel when a transaction that made some due
 * commits).  From the commit of the calling transaction on, as LISTEN.
 */
Datum
hasched_listen(PG_FUNCTION_ARGS)
{
	char	   *queue;
	char	   *channel;
	HsPrivileged priv;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("queue must not be null")));
	queue = text_to_cstring(PG_GETARG_TEXT_PP(0));
	hs_require_primary("listen for jobs");

	hs_privileged_enter(&priv);
	SPI_connect();
	channel = hs_listen_queue(queue);
	SPI_finish();
	hs_privileged_leave(&priv);
	PG_RETURN_TEXT_P(cstring_to_text(channel));
}

/* ------------------------------------------------------------------------
 * Reports from workers: heartbeat, complete, fail
 * ------------------------------------------------------------------------ */

static void
read_lease(FunctionCallInfo fcinfo, HsLease *lease)
{
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("job_id and token must not be null")));
	lease->job_id = PG_GETARG_INT64(0);
	lease->token = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (!hs_token_parse(lease->token, &lease->epoch, &lease->attempt, &lease->lease_id))
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("malformed lease token \"%s\"", lease->token),
				 errhint("Pass the token that claim() returned with the job, of the form epoch:attempt:lease.")));
}

Datum
hasched_heartbeat(PG_FUNCTION_ARGS)
{
	HsLease		lease;
	HsPrivileged priv;
	TimestampTz until;

	read_lease(fcinfo, &lease);
	if (!PG_ARGISNULL(2))
		hs_check_interval_arg("lease", PG_GETARG_INTERVAL_P(2));
	hs_require_primary("record a heartbeat");
	hs_require_leader("record a heartbeat");

	hs_privileged_enter(&priv);
	SPI_connect();
	until = hs_report_heartbeat(&lease, PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2),
								PG_ARGISNULL(2));
	SPI_finish();
	hs_privileged_leave(&priv);
	PG_RETURN_TIMESTAMPTZ(until);
}

Datum
hasched_complete(PG_FUNCTION_ARGS)
{
	HsLease		lease;
	HsPrivileged priv;

	read_lease(fcinfo, &lease);
	hs_require_primary("complete a job");
	hs_require_leader("complete a job");

	hs_privileged_enter(&priv);
	SPI_connect();
	if (!hs_report_complete(&lease, PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2),
							PG_ARGISNULL(2)))
		hs_stale_lease(&lease, "completion");
	SPI_finish();
	hs_privileged_leave(&priv);
	PG_RETURN_VOID();
}

/*
 * complete(job_ids[], tokens[], results[]): record many successes in one
 * statement.  All or nothing: if any token is stale, none is recorded and
 * the error names the stale jobs, so the worker can complete the others
 * one by one.  Jobs that already succeeded under the same tokens (a retried
 * batch whose reply was lost) count as recorded.
 */
static int
cmp_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return x < y ? -1 : x > y;
}

/*
 * A job given twice in one complete(): refused before anything is looked
 * up, with the job named (its second report would only ever be stale).
 */
static void
check_distinct_ids(Datum *ids, int n)
{
	int64	   *sorted;

	if (n < 2)
		return;
	sorted = palloc(sizeof(int64) * n);
	for (int i = 0; i < n; i++)
		sorted[i] = DatumGetInt64(ids[i]);
	qsort(sorted, n, sizeof(int64), cmp_int64);
	for (int i = 1; i < n; i++)
		if (sorted[i] == sorted[i - 1])
			ereport(ERROR,
					(errcode(HS_ERRCODE_INVALID_ARGUMENT),
					 errmsg("job %lld is given twice", (long long) sorted[i]),
					 errdetail("A job is completed once; nothing was recorded."),
					 errhint("Pass each job id once, with the token that claim() returned for it.")));
	pfree(sorted);
}

/*
 * The job_ids[] and tokens[] arguments (0 and 1) of the array forms as
 * leases (*out, palloc'd); returns how many.  NULLs, arrays of different
 * lengths and malformed tokens are JQ013, with the hints given.
 */
static int
read_lease_arrays(FunctionCallInfo fcinfo, const char *pairs_hint, const char *token_hint,
				  HsLease **out)
{
	Datum	   *ids;
	Datum	   *toks;
	bool	   *id_nulls;
	bool	   *tok_nulls;
	int			n;
	int			ntok;
	HsLease    *leases;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("job_ids and tokens must not be null")));
	deconstruct_array(PG_GETARG_ARRAYTYPE_P(0), INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &ids, &id_nulls, &n);
	deconstruct_array(PG_GETARG_ARRAYTYPE_P(1), TEXTOID, -1, false, TYPALIGN_INT,
					  &toks, &tok_nulls, &ntok);
	if (n != ntok)
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("%d job ids given with %d tokens", n, ntok),
				 errhint("%s", pairs_hint)));
	leases = palloc(sizeof(HsLease) * (n + 1));
	for (int i = 0; i < n; i++)
	{
		if (id_nulls[i] || tok_nulls[i])
			ereport(ERROR,
					(errcode(HS_ERRCODE_INVALID_ARGUMENT),
					 errmsg("job id and token %d must not be null", i + 1)));
		leases[i].job_id = DatumGetInt64(ids[i]);
		leases[i].token = TextDatumGetCString(toks[i]);
		if (!hs_token_parse(leases[i].token, &leases[i].epoch, &leases[i].attempt,
							&leases[i].lease_id))
			ereport(ERROR,
					(errcode(HS_ERRCODE_INVALID_ARGUMENT),
					 errmsg("malformed lease token \"%s\"", leases[i].token),
					 errhint("%s", token_hint)));
	}
	*out = leases;
	return n;
}

/* The worker argument (argno) of start(): NULL, or checked. */
static char *
read_worker_arg(FunctionCallInfo fcinfo, int argno)
{
	char	   *worker;

	if (PG_ARGISNULL(argno))
		return NULL;
	worker = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	hs_check_text_arg("worker", worker, 200);
	return worker;
}

Datum
hasched_complete_many(PG_FUNCTION_ARGS)
{
	HsPrivileged priv;
	HsLease    *lease;
	Datum	   *ids;
	int			n;
	Datum	   *epochs;
	Datum	   *attempts;
	Datum	   *leases;
	uint64		done;

	n = read_lease_arrays(fcinfo, "Pass the job ids and tokens that claim() returned, in pairs.",
						  "Pass the token that claim() returned with the job, of the form epoch:attempt:lease.",
						  &lease);
	if (!PG_ARGISNULL(2) && ArrayGetNItems(ARR_NDIM(PG_GETARG_ARRAYTYPE_P(2)),
										   ARR_DIMS(PG_GETARG_ARRAYTYPE_P(2))) != n)
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("results must have one element per job id, or be null")));
	ids = palloc(sizeof(Datum) * (n + 1));
	epochs = palloc(sizeof(Datum) * (n + 1));
	attempts = palloc(sizeof(Datum) * (n + 1));
	leases = palloc(sizeof(Datum) * (n + 1));
	for (int i = 0; i < n; i++)
	{
		ids[i] = Int64GetDatum(lease[i].job_id);
		epochs[i] = Int32GetDatum(lease[i].epoch);
		attempts[i] = Int32GetDatum(lease[i].attempt);
		leases[i] = Int64GetDatum(lease[i].lease_id);
	}
	check_distinct_ids(ids, n);
	if (!PG_ARGISNULL(2))
	{
		Datum	   *results;
		bool	   *result_nulls;
		int			nresults;

		/* every result within hasched.max_result_bytes, or none is recorded */
		deconstruct_array(PG_GETARG_ARRAYTYPE_P(2), JSONBOID, -1, false, TYPALIGN_INT,
						  &results, &result_nulls, &nresults);
		for (int i = 0; i < nresults && i < n; i++)
			if (!result_nulls[i])
				hs_check_result_size(DatumGetInt64(ids[i]), results[i]);
	}
	hs_require_primary("complete jobs");
	hs_require_leader("complete jobs");
	if (n == 0)
		PG_RETURN_INT32(0);

	hs_privileged_enter(&priv);
	SPI_connect();
	done = hs_report_complete_many(n, ids, epochs, attempts, leases,
								   PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2),
								   PG_ARGISNULL(2));
	if (done < (uint64) n)
	{
		/*
		 * Some did not match a running lease.  Those that already succeeded
		 * under the same token are retried reports (nothing to do); any
		 * other is stale: name them, and the error rolls back the others.
		 */
		StringInfoData stale;
		int			nstale = 0;
		int64	   *recorded = palloc(sizeof(int64) * n);
		int			nrecorded = 0;
		bool		isnull;

		for (uint64 k = 0; k < done; k++)
			recorded[nrecorded++] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[k],
																SPI_tuptable->tupdesc, 1, &isnull));
		(void) hs_completed_already_many(n, ids, epochs, attempts, leases);
		for (uint64 k = 0; k < SPI_processed && nrecorded < n; k++)
			recorded[nrecorded++] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[k],
																SPI_tuptable->tupdesc, 1, &isnull));

		initStringInfo(&stale);
		for (int i = 0; i < n; i++)
		{
			int64		id = DatumGetInt64(ids[i]);
			bool		found = false;

			for (int k = 0; k < nrecorded && !found; k++)
				found = recorded[k] == id;
			if (!found && nstale++ < 20)
				appendStringInfo(&stale, "%s%lld", stale.len ? ", " : "", (long long) id);
		}
		if (nstale == 0)
			done = (uint64) n;
		else
			ereport(ERROR,
					(errcode(HS_ERRCODE_STALE_LEASE),
					 errmsg("stale lease tokens for %d of %d jobs", nstale, n),
					 errdetail("Jobs with a stale token: %s%s. Nothing was recorded.",
							   stale.data, nstale > 20 ? ", ..." : ""),
					 errhint("Complete the other jobs again without those; their leases expired, or they were cancelled or given to another worker.")));
	}
	SPI_finish();
	hs_privileged_leave(&priv);
	PG_RETURN_INT32((int32) done);
}

Datum
hasched_fail(PG_FUNCTION_ARGS)
{
	HsLease		lease;
	HsPrivileged priv;
	char	   *error;
	bool		retry;
	Datum		state;

	read_lease(fcinfo, &lease);
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("error must not be null"),
				 errhint("Say why the attempt failed; it is kept in last_error and the run history.")));
	error = text_to_cstring(PG_GETARG_TEXT_PP(2));
	retry = PG_ARGISNULL(3) ? true : PG_GETARG_BOOL(3);
	hs_require_primary("fail a job");
	hs_require_leader("fail a job");

	hs_privileged_enter(&priv);
	SPI_connect();
	state = hs_report_fail(&lease, error, retry);
	if (state == (Datum) 0)
		hs_stale_lease(&lease, "failure");
	SPI_finish();
	hs_privileged_leave(&priv);
	PG_RETURN_DATUM(state);
}

Datum
hasched_requeue_expired(PG_FUNCTION_ARGS)
{
	HsPrivileged priv;
	uint64		n;
	TimestampTz every;

	/* every lease that has ended, however long ago */
	TIMESTAMP_NOBEGIN(every);
	hs_require_primary("requeue expired leases");
	hs_require_leader("requeue expired leases");

	hs_privileged_enter(&priv);
	SPI_connect();
	n = hs_requeue_expired(every, GetCurrentTimestamp());
	SPI_finish();
	hs_privileged_leave(&priv);
	PG_RETURN_INT32((int32) n);
}

/*
 * start(job_id, token, worker = NULL): a worker received the job's message
 * from the broker (AMQP contract in the README): one row (payload, timeout,
 * lease_until) when it may run the job now; no row when that attempt's
 * outcome is already recorded (ack and drop the message); JQ006 when the
 * token is not the job's (ack and drop without running).
 */
Datum
hasched_start(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HsLease		lease;
	HsPrivileged priv;
	char	   *worker = NULL;

	read_lease(fcinfo, &lease);
	worker = read_worker_arg(fcinfo, 2);
	hs_require_primary("start a job");
	hs_require_leader("start a job");

	InitMaterializedSRF(fcinfo, 0);

	hs_privileged_enter(&priv);
	SPI_connect();
	if (hs_start_dispatched(&lease, worker))
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		Datum		out[3];
		bool		nulls[3] = {false};
		bool		isnull;

		for (int i = 0; i < 3; i++)
			out[i] = SPI_getbinval(tup, desc, i + 1, &isnull);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, out, nulls);
	}
	SPI_finish();
	hs_privileged_leave(&priv);
	return (Datum) 0;
}

/*
 * start(job_ids[], tokens[], worker = NULL): start() for many messages in
 * one statement.  One row per message, in their order: job_id, outcome
 * ('run': run it, with payload, timeout and lease_until; 'finished': that
 * attempt's outcome is already recorded; 'stale': the token is not the
 * job's lease), and the job's state now (NULL: no such job).  Unlike the
 * one-message form, a stale token is an outcome, not an error: the
 * others still start, and a worker can send this with its reports in one
 * transaction.  Bad arguments (NULLs, a malformed token, arrays of
 * different lengths) are errors, and nothing starts.
 */
Datum
hasched_start_many(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			n;
	char	   *worker;
	HsLease    *leases;
	HsStartResult *res;
	HsPrivileged priv;
	MemoryContext cxt = CurrentMemoryContext;

	n = read_lease_arrays(fcinfo, "Pass the job id and lease token of each message, in pairs.",
						  "Pass the token of the message, of the form epoch:attempt:lease.",
						  &leases);
	if (n > MAX_CLAIM_BATCH)
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("at most %d jobs can be started in one call, not %d", MAX_CLAIM_BATCH, n)));
	worker = read_worker_arg(fcinfo, 2);
	hs_require_primary("start jobs");
	hs_require_leader("start jobs");

	InitMaterializedSRF(fcinfo, 0);
	if (n == 0)
		return (Datum) 0;
	res = palloc(sizeof(HsStartResult) * n);

	hs_privileged_enter(&priv);
	SPI_connect();
	hs_start_dispatched_many(leases, n, worker, res, cxt);
	SPI_finish();
	hs_privileged_leave(&priv);

	for (int i = 0; i < n; i++)
	{
		Datum		out[6];
		bool		nulls[6] = {false, false, false, true, true, true};
		static const char *const outcome[] = {"run", "finished", "stale"};

		out[0] = Int64GetDatum(leases[i].job_id);
		out[1] = CStringGetTextDatum(outcome[res[i].outcome]);
		nulls[2] = res[i].state == NULL;
		out[2] = nulls[2] ? (Datum) 0 : CStringGetTextDatum(res[i].state);
		if (res[i].outcome == HS_START_RUN)
		{
			out[3] = res[i].payload;
			nulls[3] = res[i].payload_null;
			out[4] = res[i].timeout;
			out[5] = res[i].lease_until;
			nulls[4] = nulls[5] = false;
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, out, nulls);
	}
	return (Datum) 0;
}
