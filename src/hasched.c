/*-------------------------------------------------------------------------
 *
 * hasched.c
 *		Module entry: _PG_init, the hasched.* settings, shared memory, and
 *		the helpers that let the SQL API act as the extension owner.
 *
 * hasched must be in shared_preload_libraries: its shared memory (claim
 * cursors, the writer registry, rate-limit buckets) is sized at postmaster
 * start.
 *
 * IDENTIFICATION
 *		src/hasched.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/twophase.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/guc.h"
#include "utils/syscache.h"

#include "hasched.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* GUC variables */
int			hs_submit_synchronous_commit = 0;	/* index into commit_levels */
int			hs_max_payload_bytes = 1024 * 1024;
char	   *hs_default_tier = NULL;
bool		hs_enforce_quotas = true;
char	   *hs_tenant = NULL;
int			hs_max_queues = 1024;
int			hs_max_tenants = 4096;
int			hs_claim_rewind_interval = 1000;
int			hs_quota_shards = 16;
char	   *hs_database = NULL;
int			hs_max_executors = 2;
int			hs_min_executors = 1;
int			hs_executor_idle_timeout = 60000;
int			hs_scheduler_naptime = 1000;
int			hs_misfire_threshold = 5000;
int			hs_history_retention = 7 * 24 * 3600;

HaschedShared *hs_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* The values synchronous_commit accepts, in the order used by the GUC. */
static const struct config_enum_entry commit_levels[] = {
	{"on", 0, false},
	{"remote_apply", 1, false},
	{"remote_write", 2, false},
	{"local", 3, false},
	{"off", 4, false},
	{NULL, 0, false}
};

static int
writer_slot_count(void)
{
	/* every PGPROC that can run a transaction, prepared ones included */
	return MaxBackends + NUM_AUXILIARY_PROCS + max_prepared_xacts;
}

static Size
shared_struct_size(void)
{
	return add_size(offsetof(HaschedShared, writer_since),
					mul_size(sizeof(pg_atomic_uint64), writer_slot_count()));
}

static void
hasched_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();

	RequestAddinShmemSpace(add_size(add_size(shared_struct_size(),
											 hs_executor_shmem_size()),
									add_size(hs_cursor_shmem_size(),
											 hs_bucket_shmem_size())));
	RequestNamedLWLockTranche("hasched", 2);
}

static void
hasched_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);

	hs_shared = ShmemInitStruct("hasched", shared_struct_size(), &found);
	if (!found)
	{
		LWLockPadded *locks = GetNamedLWLockTranche("hasched");

		hs_shared->cursor_lock = &locks[0].lock;
		hs_shared->bucket_lock = &locks[1].lock;
		SpinLockInit(&hs_shared->mutex);
		hs_shared->scheduler_role = HS_ROLE_DOWN;
		hs_shared->n_writer_slots = writer_slot_count();
		for (int i = 0; i < hs_shared->n_writer_slots; i++)
			pg_atomic_init_u64(&hs_shared->writer_since[i], 0);
	}

	hs_cursor_shmem_init();
	hs_bucket_shmem_init();
	hs_executor_shmem_init();

	LWLockRelease(AddinShmemInitLock);
}

void
_PG_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("hasched must be loaded via shared_preload_libraries"),
				 errhint("Add hasched to shared_preload_libraries in postgresql.conf and restart the server.")));

	DefineCustomEnumVariable("hasched.submit_synchronous_commit",
							 "Commit level of transactions that submit jobs.",
							 "submit() and submit_many() set synchronous_commit to this for their transaction, so that a returned submit is durable (and, with synchronous_standby_names, on a standby).",
							 &hs_submit_synchronous_commit, 0, commit_levels,
							 PGC_SUSET, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("hasched.max_payload_bytes",
							"Largest job payload accepted, in bytes.",
							"Measured on the jsonb value as stored, before compression.",
							&hs_max_payload_bytes, 1024 * 1024, 1, 256 * 1024 * 1024,
							PGC_SUSET, GUC_UNIT_BYTE, NULL, NULL, NULL);

	DefineCustomStringVariable("hasched.default_tier",
							   "Tier of tenants that have no row in hasched.tenant.",
							   NULL,
							   &hs_default_tier, "free",
							   PGC_SUSET, 0, NULL, NULL, NULL);

	DefineCustomBoolVariable("hasched.enforce_quotas",
							 "Whether submits are counted and checked against tenant quotas and rate limits.",
							 NULL,
							 &hs_enforce_quotas, true,
							 PGC_SUSET, 0, NULL, NULL, NULL);

	DefineCustomStringVariable("hasched.tenant",
							   "Tenant that submit() uses when none is given; empty means the current role.",
							   "The current role must be a member of the tenant role.",
							   &hs_tenant, "",
							   PGC_USERSET, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("hasched.max_queues",
							"Number of queues whose claim cursors fit in shared memory.",
							"Claims on further queues work, without a cursor.",
							&hs_max_queues, 1024, 16, 1000000,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("hasched.max_tenants",
							"Number of tenants whose rate-limit buckets fit in shared memory.",
							"Submits of further tenants are not rate limited (their daily quota still applies).",
							&hs_max_tenants, 4096, 16, 10000000,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("hasched.claim_rewind_interval",
							"Shortest time between two claims that rescan a queue from its start.",
							"A rescan finds jobs whose claim was rolled back by a session outside hasched; it is spaced out further while it is slow.",
							&hs_claim_rewind_interval, 1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);

	DefineCustomIntVariable("hasched.quota_shards",
							"Number of counter rows per tenant and day in hasched.quota_use.",
							"More shards let more concurrent submits of one tenant proceed without waiting on each other.",
							&hs_quota_shards, 16, 1, 1024,
							PGC_SUSET, 0, NULL, NULL, NULL);

	DefineCustomStringVariable("hasched.database",
							   "Database whose hasched schema the scheduler and executors serve.",
							   "hasched must be installed there (CREATE EXTENSION hasched); until it is, the scheduler waits.",
							   &hs_database, "postgres",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("hasched.max_executors",
							"Most executors (background workers that run SQL jobs) at once.",
							"Each is a background worker: max_worker_processes must leave room for them and the scheduler.",
							&hs_max_executors, 2, 0, 64,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("hasched.min_executors",
							"Executors kept running while any sql queue exists, idle or not.",
							"Keeping one ready avoids starting a worker for the first job after a quiet spell.",
							&hs_min_executors, 1, 0, 64,
							PGC_SIGHUP, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("hasched.executor_idle_timeout",
							"How long an executor beyond hasched.min_executors stays without work before it exits.",
							NULL,
							&hs_executor_idle_timeout, 60000, 0, 24 * 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);

	DefineCustomIntVariable("hasched.scheduler_naptime",
							"Longest sleep of the scheduler between two rounds.",
							"It wakes earlier for due schedules and delayed jobs, and when woken by a submit.",
							&hs_scheduler_naptime, 1000, 10, 60000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);

	DefineCustomIntVariable("hasched.misfire_threshold",
							"How late a schedule's run may be before it counts as missed.",
							"Missed runs follow the schedule's misfire policy (skip, or run once).",
							&hs_misfire_threshold, 5000, 100, 24 * 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);

	DefineCustomIntVariable("hasched.history_retention",
							"How long finished jobs, run history and events are kept.",
							"The scheduler deletes older ones every minute, in batches.",
							&hs_history_retention, 7 * 24 * 3600, 60, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);

	MarkGUCPrefixReserved("hasched");

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = hasched_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = hasched_shmem_startup;

	hs_claim_xact_callback_init();
	hs_register_scheduler();
}

/*
 * The role that owns the hasched schema: the SQL API runs its statements as
 * that role, after checking what the caller may do.
 */
static Oid
extension_owner(void)
{
	Oid			nspid = get_namespace_oid("hasched", false);
	HeapTuple	tup;
	Oid			owner;

	tup = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(nspid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for namespace %u", nspid);
	owner = ((Form_pg_namespace) GETSTRUCT(tup))->nspowner;
	ReleaseSysCache(tup);
	return owner;
}

/*
 * Become the extension owner with search_path pinned to pg_catalog, until
 * hs_privileged_leave().  An error in between is cleaned up by the
 * (sub)transaction abort, which restores both.
 */
void
hs_privileged_enter(HsPrivileged *priv)
{
	Oid			owner = extension_owner();

	GetUserIdAndSecContext(&priv->save_userid, &priv->save_sec_context);
	priv->guc_nest_level = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	hs_plan_for_queues(GUC_ACTION_SAVE);
	SetUserIdAndSecContext(owner,
						   priv->save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
}

void
hs_privileged_leave(HsPrivileged *priv)
{
	SetUserIdAndSecContext(priv->save_userid, priv->save_sec_context);
	AtEOXact_GUC(true, priv->guc_nest_level);
}

/*
 * hasched's statements are planned with sequential scans disabled.  Their
 * plans are generic and kept for the life of a backend; one made while the
 * job table was small would scan all of it once it is large (a full scan of
 * hasched.job per scheduler round was seen in a benchmark).  Every one of
 * them has an index that fits.  (JIT goes off with it: the cost of a
 * disabled scan would pass jit_above_cost.)  The executors turn both back to
 * their reset values around the SQL of jobs.
 */
void
hs_plan_for_queues(GucAction action)
{
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

/* Make the current transaction commit at hasched.submit_synchronous_commit. */
void
hs_force_submit_commit_level(void)
{
	(void) set_config_option("synchronous_commit",
							 commit_levels[hs_submit_synchronous_commit].name,
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);
}
