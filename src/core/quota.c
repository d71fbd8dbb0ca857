/*-------------------------------------------------------------------------
 *
 * quota.c
 *		Tenant quotas (jobs per UTC day) and rate limits (a token bucket per
 *		tenant with a rate per second and a burst).
 *
 * Rate-limit buckets live in shared memory: they are short-term state,
 * checked on every submit without touching a table.  Daily use is counted
 * in hasched.quota_use, one row per (tenant, day, shard): a backend always
 * counts into the shard of its own PGPROC slot, so concurrent submits of
 * one tenant update different rows and do not queue behind one another.
 * The check adds up the shards after counting: concurrent transactions
 * that have not committed yet are not seen, so a tenant can overshoot its
 * quota by at most the number of submits in flight at that moment.
 *
 * IDENTIFICATION
 *		src/core/quota.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/hsearch.h"

#include "core/hasched.h"

typedef struct RateBucket
{
	char		tenant[NAMEDATALEN];	/* hash key */
	double		tokens;
	TimestampTz refilled_at;
} RateBucket;

static HTAB *bucket_hash = NULL;

Size
hs_bucket_shmem_size(void)
{
	return hash_estimate_size(hs_max_tenants, sizeof(RateBucket));
}

void
hs_bucket_shmem_init(void)
{
	bucket_hash = hs_shmem_hash("hasched rate buckets", hs_max_tenants,
								NAMEDATALEN, sizeof(RateBucket));
}

/*
 * Take njobs tokens from the tenant's bucket.  Returns 0 when granted, or
 * the microseconds to wait until that many tokens will be there (-1 when
 * never: more than the burst).
 */
static int64
bucket_take(const char *tenant, int64 njobs, double rate, int32 burst)
{
	char		key[NAMEDATALEN];
	RateBucket *b;
	bool		found;
	TimestampTz now = GetCurrentTimestamp();
	int64		wait = 0;

	if (njobs > burst)
		return -1;

	memset(key, 0, sizeof(key));
	strlcpy(key, tenant, NAMEDATALEN);

	LWLockAcquire(hs_shared->bucket_lock, LW_EXCLUSIVE);
	b = hash_search(bucket_hash, key, HASH_ENTER_NULL, &found);
	if (b == NULL)
	{
		/* table full: this tenant goes without a rate limit */
		LWLockRelease(hs_shared->bucket_lock);
		ereport(LOG,
				(errmsg("hasched rate-limit table is full; tenant \"%s\" is not rate limited",
						tenant),
				 errhint("Raise hasched.max_tenants.")));
		return 0;
	}
	if (!found)
	{
		b->tokens = burst;
		b->refilled_at = now;
	}
	else if (now > b->refilled_at)
	{
		b->tokens = Min((double) burst,
						b->tokens + rate * (double) (now - b->refilled_at) / 1e6);
		b->refilled_at = now;
	}
	else if (b->tokens > burst)
		b->tokens = burst;		/* burst was lowered */

	if (b->tokens >= (double) njobs)
		b->tokens -= (double) njobs;
	else
		wait = (int64) ceil(((double) njobs - b->tokens) / rate * 1e6);
	LWLockRelease(hs_shared->bucket_lock);
	return wait;
}

/* Count njobs against the tenant's day, returning the day's total. */
static int64
count_day(const char *tenant, DateADT day, int64 njobs)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[4];
	bool		isnull;
	int			rc;

	if (plan == NULL)
	{
		Oid			types[4] = {NAMEOID, DATEOID, INT2OID, INT8OID};

		plan = hs_prepare(
			"WITH up AS ("
			"  INSERT INTO hasched.quota_use AS u (tenant, day, shard, used)"
			"  VALUES ($1, $2, $3, $4)"
			"  ON CONFLICT (tenant, day, shard)"
			"  DO UPDATE SET used = u.used + excluded.used"
			"  RETURNING used)"
			" SELECT up.used + coalesce((SELECT sum(o.used) FROM hasched.quota_use o"
			"   WHERE o.tenant = $1 AND o.day = $2 AND o.shard <> $3), 0)::bigint"
			" FROM up", 4, types);
	}

	values[0] = DirectFunctionCall1(namein, CStringGetDatum(tenant));
	values[1] = DateADTGetDatum(day);
	values[2] = Int16GetDatum((int16) (MyProc->pgprocno % hs_quota_shards));
	values[3] = Int64GetDatum(njobs);
	rc = SPI_execute_plan(plan, values, NULL, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "hasched: counting quota use failed: %s", SPI_result_code_string(rc));
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * Charge njobs accepted jobs to the tenant: rate limit first, then the
 * daily quota.  Raises an error (which rolls back the jobs just inserted)
 * when either is exceeded.  Must run inside SPI as the extension owner.
 */
void
hs_quota_charge(const char *tenant, const char *tier, int64 njobs,
				bool has_day_limit, int64 jobs_per_day,
				bool has_rate, double rate_per_second, int32 burst)
{
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	DateADT		day;
	int64		used;

	if (!hs_enforce_quotas || njobs <= 0)
		return;

	if (has_rate)
	{
		int64		wait = bucket_take(tenant, njobs, rate_per_second, burst);

		if (wait < 0)
			ereport(ERROR,
					(errcode(HS_ERRCODE_RATE_LIMITED),
					 errmsg("tenant \"%s\" cannot submit %lld jobs at once", tenant, (long long) njobs),
					 errdetail("Tier \"%s\" allows %g jobs per second with a burst of %d.",
							   tier, rate_per_second, burst),
					 errhint("Submit at most %d jobs in one call, or raise the tenant's burst in hasched.tenant.",
							 burst)));
		if (wait > 0)
			ereport(ERROR,
					(errcode(HS_ERRCODE_RATE_LIMITED),
					 errmsg("tenant \"%s\" is over its rate limit of %g jobs per second",
							tenant, rate_per_second),
					 errdetail("Tier \"%s\" allows %g jobs per second with a burst of %d.",
							   tier, rate_per_second, burst),
					 errhint("Retry in %lld ms.", (long long) ((wait + 999) / 1000))));
	}

	/* count every tenant's day, so hasched.tenants shows use; check if limited */
	day = DatumGetDateADT(DirectFunctionCall1(timestamp_date,
											  TimestampGetDatum(now)));
	used = count_day(tenant, day, njobs);
	if (has_day_limit && used > jobs_per_day)
	{
		TimestampTz reset = (TimestampTz) (day + 1) * USECS_PER_DAY;

		ereport(ERROR,
				(errcode(HS_ERRCODE_QUOTA_EXCEEDED),
				 errmsg("tenant \"%s\" has reached its quota of %lld jobs per day",
						tenant, (long long) jobs_per_day),
				 errdetail("Tier \"%s\" allows %lld jobs per UTC day; this submit would make it %lld.",
						   tier, (long long) jobs_per_day, (long long) used),
				 errhint("The quota resets at %s. A larger tier raises it: UPDATE hasched.tenant SET tier = 'pro' WHERE name = %s.",
						 timestamptz_to_str(reset), quote_literal_cstr(tenant))));
	}
}
