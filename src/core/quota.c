/*-------------------------------------------------------------------------
 *
 * quota.c
 *		Tenant quotas (jobs per UTC day) and rate limits (a token bucket per
 *		tenant with a rate per second and a burst).
 *
 * Both are counted in shared memory, in one entry per tenant, so that a
 * submit checks them without touching a table.
 *
 * Rate-limit buckets are short-term state: they start full at every server
 * start.
 *
 * The day's use is not: it must survive a restart and a failover.  The
 * tables are its durable record: a tenant's use of a day is the number of
 * its jobs in hasched.job created that day, plus the ones deleted since
 * (the statement trigger hasched_job_deleted adds those to
 * hasched.quota_use).  Every submitted job is a row committed synchronously,
 * so that record is exact on the primary and on every standby.  The shared
 * counter of a tenant is read from it once per day and server, before the
 * first submit that needs it inserts anything; after that every submit adds
 * its jobs to the counter as it accepts them, checks the limit, and takes
 * them back if its (sub)transaction aborts.  Submits in flight are thus
 * counted before they commit: concurrent submits cannot go past a limit
 * together, and a batch is counted whole before it is accepted.
 *
 * What the counter can miss: jobs inserted into hasched.job other than by
 * a submit, and submits that, with hasched.enforce_quotas off or no daily
 * limit for the tenant, were in flight at the moment the counter was read
 * from the tables.  Those are the only overshoot.  A tenant beyond
 * hasched.max_tenants gets no entry and is counted from the tables at every
 * submit, as 0.1.0 did (overshoot: the submits in flight).
 *
 * IDENTIFICATION
 *		src/core/quota.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>
#include <time.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "core/hasched.h"

/* One per tenant, in shared memory, under hs_shared->bucket_lock. */
typedef struct TenantCounter
{
	char		tenant[NAMEDATALEN];	/* hash key */

	/* rate limit */
	bool		bucket_ready;	/* tokens and refilled_at are set */
	double		tokens;
	int64		refilled_at;	/* hs_clock_usec(): monotonic, one clock for all
								 * backends, so a wall clock step neither
								 * freezes nor fills a bucket */

	/* daily quota: jobs of `day`, committed or in flight */
	bool		day_known;		/* used was read from the tables for day */
	DateADT		day;
	int64		used;
} TenantCounter;

static HTAB *counter_hash = NULL;

/*
 * The entry of a tenant, made if missing.  The table holds at most
 * hasched.max_tenants entries, so that it never takes shared memory the
 * lock tables rely on: to make room, the entry whose bucket was refilled
 * longest ago is dropped (that tenant starts again with a full burst, and
 * its day is read from the tables again).  bucket_lock held exclusively.
 */
static int64
counter_last_used(const void *entry)
{
	const TenantCounter *e = entry;

	return e->bucket_ready ? e->refilled_at : 0;
}

static TenantCounter *
counter_enter(const char *key, bool *found)
{
	return hs_shmem_hash_enter(counter_hash, key, hs_max_tenants, counter_last_used, found);
}

/*
 * The jobs this backend's open transaction added to shared counters, to
 * take back if the (sub)transaction that added them aborts.
 */
typedef struct LocalCharge
{
	char		tenant[NAMEDATALEN];
	DateADT		day;
	int64		njobs;
	int			level;			/* transaction nest level that charged */
} LocalCharge;

static LocalCharge *charges = NULL;
static int	n_charges = 0;
static int	max_charges = 0;

Size
hs_bucket_shmem_size(void)
{
	return hash_estimate_size(hs_max_tenants, sizeof(TenantCounter));
}

void
hs_bucket_shmem_init(void)
{
	counter_hash = hs_shmem_hash("hasched tenant counters", hs_max_tenants,
								 NAMEDATALEN, sizeof(TenantCounter));
}

static void
tenant_key(const char *tenant, char *key)
{
	memset(key, 0, NAMEDATALEN);
	strlcpy(key, tenant, NAMEDATALEN);
}

/* The UTC day of the current transaction: the day of its jobs' created_at. */
static DateADT
quota_day(void)
{
	return DatumGetDateADT(DirectFunctionCall1(timestamp_date,
											   TimestampGetDatum(GetCurrentTransactionStartTimestamp())));
}

/* ------------------------------------------------------------------------
 * Rate limit
 * ------------------------------------------------------------------------ */

/*
 * Take njobs tokens from the tenant's bucket; lock held exclusively.
 * Returns 0 when granted, or the microseconds to wait until that many
 * tokens will be there (-1 when never: more than the burst).
 */
static int64
bucket_take(TenantCounter *c, int64 njobs, double rate, int32 burst)
{
	int64		now = hs_clock_usec();

	if (njobs > burst)
		return -1;
	if (!c->bucket_ready)
	{
		c->tokens = burst;
		c->refilled_at = now;
		c->bucket_ready = true;
	}
	else if (now > c->refilled_at)
	{
		c->tokens = Min((double) burst,
						c->tokens + rate * (double) (now - c->refilled_at) / 1e6);
		c->refilled_at = now;
	}
	else if (c->tokens > burst)
		c->tokens = burst;		/* burst was lowered */

	if (c->tokens >= (double) njobs)
	{
		c->tokens -= (double) njobs;
		return 0;
	}
	return (int64) ceil(((double) njobs - c->tokens) / rate * 1e6);
}

/* ------------------------------------------------------------------------
 * The day's use, from the tables
 * ------------------------------------------------------------------------ */

/*
 * The tenant's jobs of the day: the ones in hasched.job plus the ones
 * deleted since, read with a snapshot taken now (this transaction's own
 * earlier jobs included).  Inside SPI, as the extension owner.
 */
static int64
count_day(const char *tenant, Oid tenant_oid, DateADT day)
{
	static SPIPlanPtr plan = NULL;
	Datum		values[5];
	bool		isnull;
	int			rc;

	hs_plan(&plan, "SELECT coalesce((SELECT sum(u.used) FROM hasched.quota_use u"
			"   WHERE u.tenant = $1 AND u.day = $2), 0)::bigint"
			" + (SELECT count(*) FROM hasched.job j"
			"   WHERE j.tenant = $5 AND j.created_at >= $3 AND j.created_at < $4)",
			5, NAMEOID, DATEOID, TIMESTAMPTZOID, TIMESTAMPTZOID, REGROLEOID);
	values[0] = DirectFunctionCall1(namein, CStringGetDatum(tenant));
	values[1] = DateADTGetDatum(day);
	values[2] = TimestampTzGetDatum((TimestampTz) day * USECS_PER_DAY);
	values[3] = TimestampTzGetDatum((TimestampTz) (day + 1) * USECS_PER_DAY);
	values[4] = ObjectIdGetDatum(tenant_oid);
	/* not read-only: the command counter moves, so own jobs are seen */
	rc = SPI_execute_snapshot(plan, values, NULL, GetLatestSnapshot(),
							  InvalidSnapshot, false, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "hasched: counting the jobs of tenant \"%s\" failed: %s",
			 tenant, SPI_result_code_string(rc));
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * Before a submit inserts jobs: make sure the tenant's counter for today
 * has been read from the tables, when a daily limit will be checked.
 * Reading it before the insert keeps this submit's own jobs out of it (they
 * are added by hs_quota_charge).  Inside SPI, as the extension owner.
 */
void
hs_quota_prepare(const char *tenant, Oid tenant_oid, bool has_day_limit)
{
	char		key[NAMEDATALEN];
	TenantCounter *c;
	DateADT		day;
	bool		found;
	int64		used;

	if (!hs_enforce_quotas || !has_day_limit)
		return;
	day = quota_day();
	tenant_key(tenant, key);

	LWLockAcquire(hs_shared->bucket_lock, LW_SHARED);
	c = hash_search(counter_hash, key, HASH_FIND, NULL);
	found = c != NULL && c->day_known && c->day >= day;
	LWLockRelease(hs_shared->bucket_lock);
	if (found)
		return;

	/* read outside the lock; if another backend got there first, its count stands */
	used = count_day(tenant, tenant_oid, day);

	LWLockAcquire(hs_shared->bucket_lock, LW_EXCLUSIVE);
	c = counter_enter(key, &found);
	if (c != NULL)
	{
		if (!found)
		{
			c->bucket_ready = false;
			c->day_known = false;
		}
		if (!c->day_known || c->day < day)
		{
			c->day = day;
			c->used = used;
			c->day_known = true;
		}
	}
	LWLockRelease(hs_shared->bucket_lock);
}

/* ------------------------------------------------------------------------
 * Taking charges back on abort
 * ------------------------------------------------------------------------ */

static void
uncharge(const LocalCharge *ch)
{
	char		key[NAMEDATALEN];
	TenantCounter *c;

	tenant_key(ch->tenant, key);
	LWLockAcquire(hs_shared->bucket_lock, LW_EXCLUSIVE);
	c = hash_search(counter_hash, key, HASH_FIND, NULL);
	if (c != NULL && c->day_known && c->day == ch->day)
		c->used -= ch->njobs;
	LWLockRelease(hs_shared->bucket_lock);
}

/*
 * The end of a transaction (wakeup.c's callback): a commit or a PREPARE
 * keeps its jobs counted (a prepared transaction's stay counted even if it
 * is rolled back later), an abort takes them back.
 */
void
hs_quota_xact_end(bool committed)
{
	if (!committed)
		for (int i = 0; i < n_charges; i++)
			uncharge(&charges[i]);
	n_charges = 0;
}

/*
 * The end of a subtransaction: an abort takes back the jobs it counted, a
 * commit hands them to the parent.
 */
void
hs_quota_subxact_end(bool committed)
{
	int			level = GetCurrentTransactionNestLevel();
	int			kept = 0;

	for (int i = 0; i < n_charges; i++)
	{
		if (charges[i].level >= level)
		{
			if (!committed)
			{
				uncharge(&charges[i]);
				continue;
			}
			charges[i].level = level - 1;
		}
		charges[kept++] = charges[i];
	}
	n_charges = kept;
}

/* Room for one more charge, made before the counter moves (no error after). */
static void
reserve_charge(void)
{
	if (n_charges == max_charges)
	{
		int			n = Max(8, max_charges * 2);

		if (charges == NULL)
			charges = MemoryContextAlloc(TopMemoryContext, n * sizeof(LocalCharge));
		else
			charges = repalloc(charges, n * sizeof(LocalCharge));
		max_charges = n;
	}
}

static void
remember_charge(const char *tenant, DateADT day, int64 njobs)
{
	int			level = GetCurrentTransactionNestLevel();

	for (int i = 0; i < n_charges; i++)
		if (charges[i].level == level && charges[i].day == day &&
			strcmp(charges[i].tenant, tenant) == 0)
		{
			charges[i].njobs += njobs;
			return;
		}
	Assert(n_charges < max_charges);
	strlcpy(charges[n_charges].tenant, tenant, NAMEDATALEN);
	charges[n_charges].day = day;
	charges[n_charges].njobs = njobs;
	charges[n_charges].level = level;
	n_charges++;
}

/* ------------------------------------------------------------------------
 * Charging a submit
 * ------------------------------------------------------------------------ */

/*
 * Charge njobs accepted jobs to the tenant: rate limit first, then the
 * daily quota.  Raises an error (which rolls back the jobs just inserted)
 * when either is exceeded.  Must run inside SPI as the extension owner,
 * after hs_quota_prepare() and the insert.  With quotas off, or without a
 * daily limit, the jobs are still added to a counter that exists, so that
 * it stays exact should a limit be checked later the same day.
 */
void
hs_quota_charge(const char *tenant, Oid tenant_oid, const char *tier, int64 njobs,
				bool has_day_limit, int64 jobs_per_day,
				bool has_rate, double rate_per_second, int32 burst)
{
	char		key[NAMEDATALEN];
	TenantCounter *c;
	DateADT		day;
	bool		enforce = hs_enforce_quotas;
	bool		check_day = enforce && has_day_limit;
	bool		rate = enforce && has_rate;
	bool		found;
	bool		counted = false;
	bool		from_tables = false;
	bool		over = false;
	int64		wait = 0;
	int64		used = 0;

	if (njobs <= 0)
		return;
	day = quota_day();
	tenant_key(tenant, key);
	reserve_charge();

	LWLockAcquire(hs_shared->bucket_lock, LW_EXCLUSIVE);
	c = rate ? counter_enter(key, &found) : hash_search(counter_hash, key, HASH_FIND, &found);
	if (c != NULL && !found)
	{
		c->bucket_ready = false;
		c->day_known = false;
	}
	if (c != NULL && rate)
		wait = bucket_take(c, njobs, rate_per_second, burst);
	if (wait == 0)
	{
		if (c != NULL && c->day_known && c->day == day)
		{
			c->used += njobs;
			used = c->used;
			if (check_day && used > jobs_per_day)
			{
				c->used -= njobs;
				over = true;
			}
			else
				counted = true;
		}
		else
			from_tables = check_day;
	}
	LWLockRelease(hs_shared->bucket_lock);

	if (counted)
		remember_charge(tenant, day, njobs);

	if (rate && c == NULL)
		ereport(LOG,
				(errmsg("hasched tenant table is full; tenant \"%s\" is not rate limited",
						tenant),
				 errhint("Raise hasched.max_tenants.")));
	if (wait != 0)
		hs_metrics_count_now(HS_CTR_REFUSED_RATE);
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

	if (from_tables)
	{
		/* no counter for the tenant: count its jobs, these included */
		used = count_day(tenant, tenant_oid, day);
		over = used > jobs_per_day;
	}
	if (over)
	{
		TimestampTz reset = (TimestampTz) (day + 1) * USECS_PER_DAY;

		hs_metrics_count_now(HS_CTR_REFUSED_QUOTA);
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
