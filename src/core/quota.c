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
 *
 * The check adds up the shards after counting, and adds the jobs that
 * other transactions have charged to the tenant but not committed yet:
 * those are reserved in the tenant's shared-memory entry (the one of its
 * rate bucket) before the count, and released when their transaction (or
 * subtransaction) ends.  A batch thus counts in full, and so do the
 * batches in flight: of concurrent submits that would together pass the
 * quota, the later ones are refused, and a tenant never ends a day above
 * its quota.  (A transaction that commits releases its reservation just
 * after its rows become visible: a submit in that instant counts those
 * jobs twice, and is refused when it would have fitted.)  Left out: a
 * submit in a REPEATABLE READ or SERIALIZABLE transaction counts from its
 * transaction's snapshot, so it misses batches that committed after that
 * snapshot; PREPARE TRANSACTION releases the reservation, so a prepared
 * transaction's jobs count only once it commits; and a tenant that finds
 * the table full (hasched.max_tenants) is counted without reservations.
 *
 * IDENTIFICATION
 *		src/core/quota.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "core/hasched.h"

typedef struct RateBucket
{
	char		tenant[NAMEDATALEN];	/* hash key */
	bool		rate_set;		/* tokens and refilled_at are set */
	double		tokens;
	TimestampTz refilled_at;
	int64		reserved;		/* jobs charged by transactions in flight */
} RateBucket;

static HTAB *bucket_hash = NULL;

/*
 * This backend's reservations: jobs charged in its open transaction, per
 * tenant and per (sub)transaction nesting level, to release at its end.
 */
typedef struct Reservation
{
	char		tenant[NAMEDATALEN];
	int64		njobs;
	int			level;
} Reservation;

static Reservation *reservations = NULL;
static int	n_reservations = 0;
static int	max_reservations = 0;

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
		b->reserved = 0;
	if (!found || !b->rate_set)
	{
		b->rate_set = true;
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

/*
 * Reserve njobs for the tenant until this transaction (or subtransaction)
 * ends.  Returns the jobs that other backends have reserved for it, which
 * are not committed yet; 0 when the table is full.
 */
static int64
reserve(const char *tenant, int64 njobs)
{
	char		key[NAMEDATALEN];
	RateBucket *b;
	bool		found;
	int64		mine = 0;
	int64		others;
	int			level = GetCurrentTransactionNestLevel();
	Reservation *r = NULL;

	memset(key, 0, sizeof(key));
	strlcpy(key, tenant, NAMEDATALEN);
	for (int i = 0; i < n_reservations; i++)
		if (strcmp(reservations[i].tenant, key) == 0)
		{
			mine += reservations[i].njobs;
			if (reservations[i].level == level)
				r = &reservations[i];
		}
	/* room to record it first: nothing may fail once it is reserved */
	if (r == NULL && n_reservations == max_reservations)
	{
		int			n = Max(8, max_reservations * 2);

		reservations = reservations == NULL ?
			MemoryContextAlloc(TopMemoryContext, sizeof(Reservation) * n) :
			repalloc(reservations, sizeof(Reservation) * n);
		max_reservations = n;
	}

	LWLockAcquire(hs_shared->bucket_lock, LW_EXCLUSIVE);
	b = hash_search(bucket_hash, key, HASH_ENTER_NULL, &found);
	if (b == NULL)
	{
		LWLockRelease(hs_shared->bucket_lock);
		ereport(LOG,
				(errmsg("hasched rate-limit table is full; jobs of tenant \"%s\" in flight are not counted against its quota",
						tenant),
				 errhint("Raise hasched.max_tenants.")));
		return 0;
	}
	if (!found)
	{
		b->rate_set = false;
		b->reserved = 0;
	}
	others = Max(b->reserved - mine, 0);
	b->reserved += njobs;
	if (r == NULL)
	{
		r = &reservations[n_reservations++];
		memcpy(r->tenant, key, NAMEDATALEN);
		r->njobs = 0;
		r->level = level;
	}
	r->njobs += njobs;
	LWLockRelease(hs_shared->bucket_lock);
	return others;
}

/* Give back the reservations made at nesting level `level` or deeper. */
static void
release(int level)
{
	int			kept = 0;

	if (n_reservations == 0)
		return;
	LWLockAcquire(hs_shared->bucket_lock, LW_EXCLUSIVE);
	for (int i = 0; i < n_reservations; i++)
	{
		Reservation *r = &reservations[i];

		if (r->level >= level)
		{
			RateBucket *b = hash_search(bucket_hash, r->tenant, HASH_FIND, NULL);

			if (b != NULL)
				b->reserved = Max(b->reserved - r->njobs, 0);
		}
		else
			reservations[kept++] = *r;
	}
	LWLockRelease(hs_shared->bucket_lock);
	n_reservations = kept;
}

/*
 * The end of a transaction (commit, abort or prepare): its jobs are
 * visible now, or gone; either way no longer reserved.
 */
void
hs_quota_xact_end(void)
{
	release(0);
}

/*
 * The end of a subtransaction: an abort gives its reservations back, a
 * commit hands them to the parent.
 */
void
hs_quota_subxact_end(bool committed)
{
	int			level = GetCurrentTransactionNestLevel();

	if (!committed)
	{
		release(level);
		return;
	}
	for (int i = 0; i < n_reservations; i++)
		if (reservations[i].level >= level)
			reservations[i].level = level - 1;
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
	int64		in_flight = 0;

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
	if (has_day_limit)
		in_flight = reserve(tenant, njobs);
	used = count_day(tenant, day, njobs);
	if (has_day_limit && used + in_flight > jobs_per_day)
	{
		TimestampTz reset = (TimestampTz) (day + 1) * USECS_PER_DAY;

		ereport(ERROR,
				(errcode(HS_ERRCODE_QUOTA_EXCEEDED),
				 errmsg("tenant \"%s\" has reached its quota of %lld jobs per day",
						tenant, (long long) jobs_per_day),
				 in_flight == 0 ?
				 errdetail("Tier \"%s\" allows %lld jobs per UTC day; this submit would make it %lld.",
						   tier, (long long) jobs_per_day, (long long) used) :
				 errdetail("Tier \"%s\" allows %lld jobs per UTC day; this submit would make it %lld, counting %lld submitted in transactions not yet committed.",
						   tier, (long long) jobs_per_day, (long long) (used + in_flight),
						   (long long) in_flight),
				 errhint("The quota resets at %s. A larger tier raises it: UPDATE hasched.tenant SET tier = 'pro' WHERE name = %s.",
						 timestamptz_to_str(reset), quote_literal_cstr(tenant))));
	}
}
