/*-------------------------------------------------------------------------
 *
 * submit_api.c
 *		SQL functions of submitters: submit, submit_many, cancel, retry.
 *		Thin: read and check the arguments, refuse on a standby, then one
 *		call into core (submit.c, job_state.c) as the extension owner.
 *
 * IDENTIFICATION
 *		src/api/submit_api.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "core/hasched.h"

PG_FUNCTION_INFO_V1(hasched_submit);
PG_FUNCTION_INFO_V1(hasched_submit_many);
PG_FUNCTION_INFO_V1(hasched_cancel);
PG_FUNCTION_INFO_V1(hasched_retry);

typedef HsSubmit SubmitArgs;

/*
 * Read and check the arguments that submit and submit_many share:
 * 0 queue, 2 priority, 3 run_at, 5 max_attempts, 6 timeout, 7 tenant.
 */
static void
read_submit_args(FunctionCallInfo fcinfo, SubmitArgs *a)
{
	Oid			caller = GetUserId();

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
		hs_check_interval_arg("timeout", a->timeout);
	}

	/* the tenant: a role that may be one, and that the caller acts for */
	if (!PG_ARGISNULL(7))
		a->tenant = pstrdup(NameStr(*PG_GETARG_NAME(7)));
	else if (hs_tenant != NULL && hs_tenant[0] != '\0')
		a->tenant = pstrdup(hs_tenant);
	else
		a->tenant = GetUserNameFromId(caller, false);
	a->tenant_oid = hs_tenant_role(a->tenant);
	if (!hs_tenant_visible(caller, a->tenant_oid))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to submit jobs for tenant \"%s\"", a->tenant),
				 errhint("Ask an administrator to GRANT %s TO %s.",
						 quote_identifier(a->tenant),
						 quote_identifier(GetUserNameFromId(caller, false)))));
	/* the job is the caller's SQL: it runs with the caller's rights */
	a->owner = caller;
	a->submitted_by = caller;
	a->schedule = NULL;
	a->fire_at = 0;
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
	hs_check_payload(PG_GETARG_DATUM(1), -1);
	if (!PG_ARGISNULL(4))
	{
		key = text_to_cstring(PG_GETARG_TEXT_PP(4));
		hs_check_text_arg("idempotency_key", key, HS_MAX_KEY_BYTES);
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

Datum
hasched_submit_many(PG_FUNCTION_ARGS)
{
	SubmitArgs	a;
	HsPrivileged priv;
	ArrayType  *payloads;
	ArrayType  *keys = NULL;
	Datum	   *pay_elems;
	bool	   *pay_nulls;
	int			n;
	Datum	   *key_elems = NULL;
	bool	   *key_nulls = NULL;
	int			nkeys = 0;
	Datum	   *ids;
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
	if (n > HS_MAX_SUBMIT_BATCH)
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("cannot submit %d jobs in one call", n),
				 errhint("Submit at most %d jobs per call.", HS_MAX_SUBMIT_BATCH)));
	for (int i = 0; i < n; i++)
	{
		if (pay_nulls[i])
			ereport(ERROR,
					(errcode(HS_ERRCODE_INVALID_ARGUMENT),
					 errmsg("payload %d is null", i + 1),
					 errhint("Pass '{}' for a job without payload.")));
		hs_check_payload(pay_elems[i], i + 1);
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
								  HS_MAX_KEY_BYTES);
	}
	hs_require_primary("submit jobs");
	hs_force_submit_commit_level();
	hs_privileged_enter(&priv);
	SPI_connect();
	/* no payloads: the queue, mode and tenant are still checked */
	ids = hs_submit_many(&a, payloads, pay_elems, n, keys, key_elems, key_nulls);
	SPI_finish();
	hs_privileged_leave(&priv);

	if (n == 0)
		PG_RETURN_ARRAYTYPE_P(construct_empty_array(INT8OID));
	result = construct_array(ids, n, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
	PG_RETURN_ARRAYTYPE_P(result);
}

/* ------------------------------------------------------------------------
 * cancel() and retry()
 * ------------------------------------------------------------------------ */

Datum
hasched_cancel(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	HsPrivileged priv;
	bool		done;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("job_id must not be null")));
	hs_require_primary("cancel jobs");

	hs_privileged_enter(&priv);
	SPI_connect();
	done = hs_cancel_job(PG_GETARG_INT64(0), caller);
	SPI_finish();
	hs_privileged_leave(&priv);
	PG_RETURN_BOOL(done);
}

Datum
hasched_retry(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	HsPrivileged priv;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("job_id must not be null")));
	hs_require_primary("retry jobs");

	hs_privileged_enter(&priv);
	SPI_connect();
	hs_retry_job(PG_GETARG_INT64(0), caller);
	SPI_finish();
	hs_privileged_leave(&priv);
	PG_RETURN_VOID();
}
