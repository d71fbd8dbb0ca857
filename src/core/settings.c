/*-------------------------------------------------------------------------
 *
 * settings.c
 *		The hasched.* settings (GUCs): their variables, definitions and
 *		bounds.  Every setting is documented in the README's settings table.
 *
 * IDENTIFICATION
 *		src/core/settings.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/parallel.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "core/hasched.h"

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
int			hs_executor_group_ms = 5;
int			hs_scheduler_naptime = 1000;
int			hs_misfire_threshold = 5000;
int			hs_history_retention = 7 * 24 * 3600;
int			hs_max_timeout = 7 * 24 * 3600 * 1000;
int			hs_job_grace = 5000;
int			hs_max_result_bytes = 1024 * 1024;
int			hs_max_error_bytes = 64 * 1024;
int			hs_readonly_backlog = 1000000;
int			hs_readonly_sync_lag = 10000;
int			hs_holdback_backlog = 50000;
int			hs_holdback_medium = 5 * 60 * 1000;
int			hs_holdback_low = 60 * 60 * 1000;
int			hs_degrade_min_dwell = 30000;
double		hs_degrade_exit_ratio = 0.8;
double		hs_slo_target = 99.99;
int			hs_stats_interval = 1000;
int			hs_metrics_max_queues = 100;
int			hs_health_due_age = 300 * 1000;

/* The values synchronous_commit accepts, in the order used by the GUC. */
int			hs_health_port = 0;
char	   *hs_health_listen_addresses = NULL;
char	   *hs_zookeeper = NULL;
char	   *hs_zookeeper_path = NULL;
int			hs_zookeeper_session_timeout = 10000;
int			hs_zookeeper_fence_margin = 3000;
char	   *hs_amqp_url = NULL;
char	   *hs_amqp_queue_type = NULL;
int			hs_dispatch_batch = 100;
int			hs_dispatch_lease = 300000;
int			hs_amqp_confirm_timeout = 5000;
int			hs_amqp_connect_timeout = 2000;
int			hs_amqp_reconnect_interval = 1000;
int			hs_circuit_failure_percent = 50;
int			hs_circuit_window = 10000;
int			hs_circuit_min_calls = 5;
int			hs_circuit_open_duration = 60000;

static const struct config_enum_entry commit_levels[] = {
	{"on", 0, false},
	{"remote_apply", 1, false},
	{"remote_write", 2, false},
	{"local", 3, false},
	{"off", 4, false},
	{NULL, 0, false}
};

/*
 * hasched.default_tier must name a row of hasched.tier, or every submit of
 * a tenant without a row would fail later.  It can be checked only inside
 * a transaction of a database where hasched is installed: SET, set_config(),
 * ALTER SYSTEM; not when the configuration file is read.  ALTER ROLE or
 * ALTER DATABASE ... SET (which may be meant for another database) only
 * get a notice.
 */
static bool
check_default_tier(char **newval, void **extra, GucSource source)
{
	Oid			nsp;
	Oid			relid;
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tup;
	bool		found = false;

	if (!IsTransactionState() || InitializingParallelWorker || IsBinaryUpgrade)
		return true;
	nsp = get_namespace_oid("hasched", true);
	relid = OidIsValid(nsp) ? get_relname_relid("tier", nsp) : InvalidOid;
	if (!OidIsValid(relid))
		return true;

	/* a few rows, read directly: no privilege on the table is needed */
	rel = table_open(relid, AccessShareLock);
	scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
	while (!found && HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		bool		isnull;
		Datum		name = heap_getattr(tup, 1, RelationGetDescr(rel), &isnull);

		found = !isnull && strcmp(TextDatumGetCString(name), *newval) == 0;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	if (found)
		return true;

	if (source == PGC_S_TEST)
	{
		ereport(NOTICE,
				(errcode(HS_ERRCODE_UNKNOWN_TENANT),
				 errmsg("tier \"%s\" does not exist", *newval)));
		return true;
	}
	GUC_check_errcode(HS_ERRCODE_UNKNOWN_TENANT);
	GUC_check_errmsg("tier \"%s\" does not exist", *newval);
	GUC_check_errdetail("hasched.default_tier is the tier of tenants without a row in hasched.tenant.");
	GUC_check_errhint("Add the tier to hasched.tier first, or use one of SELECT name FROM hasched.tier.");
	return false;
}

/* hasched.slo_target: a percentage strictly between 0 and 100. */
static bool
check_slo_target(double *newval, void **extra, GucSource source)
{
	if (*newval > 0.0 && *newval < 100.0)
		return true;
	/* as PostgreSQL reports every setting out of its range */
	GUC_check_errcode(ERRCODE_INVALID_PARAMETER_VALUE);
	GUC_check_errmsg("hasched.slo_target must be above 0 and below 100, not %g", *newval);
	GUC_check_errdetail("It is the availability objective in percent; 100 would leave no error budget at all.");
	GUC_check_errhint("Use, for example, 99.9 or 99.99.");
	return false;
}

/* hasched.amqp_queue_type: the two queue types the broker offers hasched */
static bool
check_amqp_queue_type(char **newval, void **extra, GucSource source)
{
	if (strcmp(*newval, "quorum") == 0 || strcmp(*newval, "classic") == 0)
		return true;
	GUC_check_errdetail("hasched.amqp_queue_type is quorum or classic.");
	return false;
}

/* Define every hasched.* setting; called once, from _PG_init. */
/*
 * The integer settings, defined in one loop.  Each: name, description,
 * longer description (or NULL), variable, default, minimum, maximum,
 * context and unit.
 */
typedef struct Setting
{
	const char *name;
	const char *short_desc;
	const char *long_desc;
	int		   *variable;		/* an integer setting's variable, or NULL */
	int			boot;
	int			min;
	int			max;
	GucContext	context;
	int			flags;
	/* a string setting: its variable, boot value and check hook */
	char	  **string_variable;
	const char *string_boot;
	GucStringCheckHook check;
} Setting;

static const Setting settings[] = {
	{"hasched.amqp_confirm_timeout",
		"How long the dispatcher waits for the broker's confirms of a batch.",
		"Messages not confirmed by then count as failed publishes: the connection is closed and their jobs stay pending.",
		&hs_amqp_confirm_timeout, 5000, 100, 600000, PGC_SIGHUP, GUC_UNIT_MS},
	{"hasched.amqp_connect_timeout",
		"How long the dispatcher waits for a broker to accept a connection.",
		NULL,
		&hs_amqp_connect_timeout, 2000, 100, 600000, PGC_SIGHUP, GUC_UNIT_MS},
	{"hasched.amqp_queue_type",
		"Type of the broker queues the dispatcher declares: quorum or classic.",
		"Workers must declare them with the same type (hasched-worker --amqp-queue-type).",
		NULL, 0, 0, 0, PGC_SIGHUP, 0, &hs_amqp_queue_type, "quorum", check_amqp_queue_type},
	{"hasched.amqp_reconnect_interval",
		"Pause of the dispatcher after it found no broker it could connect to.",
		NULL,
		&hs_amqp_reconnect_interval, 1000, 10, 600000, PGC_SIGHUP, GUC_UNIT_MS},
	{"hasched.amqp_url",
		"RabbitMQ brokers of the dispatcher: amqp://user:password@host:port/vhost, comma-separated, tried in order; empty: no dispatcher.",
		"Jobs of queues whose transport is amqp are published to the first broker that accepts a connection and whose circuit is not open.  The dispatcher is started only when this is set at server start; later changes take effect on reload.",
		NULL, 0, 0, 0, PGC_SIGHUP, GUC_SUPERUSER_ONLY, &hs_amqp_url, "", NULL},
	{"hasched.circuit_failure_percent",
		"Share of failed calls (percent) over hasched.circuit_window above which a circuit breaker opens.",
		"Calls: connection attempts and batches for a broker's circuit, messages for a queue's.",
		&hs_circuit_failure_percent, 50, 0, 100, PGC_SIGHUP, 0},
	{"hasched.circuit_min_calls",
		"Fewest calls in the window before a circuit breaker may open.",
		NULL,
		&hs_circuit_min_calls, 5, 1, 1000000, PGC_SIGHUP, 0},
	{"hasched.circuit_open_duration",
		"How long an open circuit fails fast before it lets one probe through (half open).",
		"A probe that succeeds closes the circuit; one that fails opens it again for this long.",
		&hs_circuit_open_duration, 60000, 10, 24 * 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS},
	{"hasched.circuit_window",
		"The sliding window over which a circuit breaker counts failed calls.",
		NULL,
		&hs_circuit_window, 10000, 100, 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS},
	{"hasched.claim_rewind_interval",
		"Shortest time between two claims that rescan a queue from its start.",
		"A rescan finds jobs whose claim was rolled back by a session outside hasched; it is spaced out further while it is slow.",
		&hs_claim_rewind_interval, 1000, 10, 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS},
	{"hasched.database",
		"Database whose hasched schema the scheduler and executors serve.",
		"hasched must be installed there (CREATE EXTENSION hasched); until it is, the scheduler waits.",
		NULL, 0, 0, 0, PGC_POSTMASTER, 0, &hs_database, "postgres", NULL},
	{"hasched.default_tier",
		"Tier of tenants that have no row in hasched.tenant.",
		NULL,
		NULL, 0, 0, 0, PGC_SUSET, 0, &hs_default_tier, "free", check_default_tier},
	{"hasched.degrade_min_dwell",
		"Shortest time the automatic read-only mode or the hold-back stays on, or off, before it changes again.",
		"Together with hasched.degrade_exit_ratio it keeps the automatic modes from flapping.",
		&hs_degrade_min_dwell, 30000, 0, 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS},
	{"hasched.dispatch_batch",
		"Most jobs the RabbitMQ dispatcher publishes before it waits for the broker's confirms.",
		"A batch is one read of due jobs and its publishes; the next batch is read and published while the broker confirms it, then one transaction marks its confirmed jobs dispatched.",
		&hs_dispatch_batch, 100, 1, 10000, PGC_SIGHUP, 0},
	{"hasched.dispatch_lease",
		"How long a dispatched job may wait for a worker to start it before it is dispatched again.",
		"A job of an amqp queue that no worker started (hasched.start()) within this is published again under a new attempt and token; the old message is then stale (JQ006 at start).",
		&hs_dispatch_lease, 300000, 1000, INT_MAX, PGC_SIGHUP, GUC_UNIT_MS},
	{"hasched.executor_group_ms",
		"How long an executor may run consecutive SQL jobs of one owner in one transaction.",
		"Each job's effects and outcome still commit together (each job is a subtransaction); 0 runs every job in a transaction of its own.",
		&hs_executor_group_ms, 5, 0, 60000, PGC_SIGHUP, GUC_UNIT_MS},
	{"hasched.executor_idle_timeout",
		"How long an executor beyond hasched.min_executors stays without work before it exits.",
		NULL,
		&hs_executor_idle_timeout, 60000, 0, 24 * 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS},
	{"hasched.health_due_age",
		"How long the oldest due job may wait before health() shows the backlog as degraded; 0 never does.",
		"A due job waits when no executor or worker takes jobs of its queue, or they cannot keep up.",
		&hs_health_due_age, 300 * 1000, 0, INT_MAX, PGC_SIGHUP, GUC_UNIT_MS},
	{"hasched.health_listen_addresses",
		"Comma-separated IP addresses the HTTP health listener binds to.",
		"Loopback by default; use * for every address.",
		NULL, 0, 0, 0, PGC_POSTMASTER, 0, &hs_health_listen_addresses, "127.0.0.1", NULL},
	{"hasched.health_port",
		"TCP port of the HTTP health listener (GET /health, /primary, /replica, /metrics); 0 turns it off.",
		"It answers from shared memory only, on every server, primary or standby.",
		&hs_health_port, 0, 0, 65535, PGC_POSTMASTER, 0},
	{"hasched.history_retention",
		"How long finished jobs, run history and events are kept.",
		"The scheduler deletes older ones every minute, in batches.",
		&hs_history_retention, 7 * 24 * 3600, 60, INT_MAX, PGC_SIGHUP, GUC_UNIT_S},
	{"hasched.holdback_backlog",
		"Due waiting jobs at which lower priorities are held back; 0: never.",
		"While the backlog is this large, a due medium job can be claimed only once it has been due for hasched.holdback_medium, a low one for hasched.holdback_low; high jobs are never held back.",
		&hs_holdback_backlog, 50000, 0, INT_MAX, PGC_SIGHUP, 0},
	{"hasched.holdback_low",
		"How long a due low-priority job (9) waits while the hold-back is in force.",
		NULL,
		&hs_holdback_low, 60 * 60 * 1000, 0, INT_MAX, PGC_SIGHUP, GUC_UNIT_MS},
	{"hasched.holdback_medium",
		"How long a due medium-priority job (5 to 8) waits while the hold-back is in force.",
		NULL,
		&hs_holdback_medium, 5 * 60 * 1000, 0, INT_MAX, PGC_SIGHUP, GUC_UNIT_MS},
	{"hasched.job_grace",
		"How long an SQL job may go on after its timeout or its cancel before its executor ends it.",
		"A job that does not stop when cancelled (one that catches query_canceled) is ended by its executor exiting: a timed-out attempt is recorded as failed, a cancelled job stays cancelled.",
		&hs_job_grace, 5000, 0, 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS},
	{"hasched.max_error_bytes",
		"Longest error text kept for a failed attempt, in bytes.",
		"Longer errors (from fail() or from an SQL job) are cut to this length and end with a note saying so.",
		&hs_max_error_bytes, 64 * 1024, 256, 16 * 1024 * 1024, PGC_SUSET, GUC_UNIT_BYTE},
	{"hasched.max_executors",
		"Most executors (background workers that run SQL jobs) at once.",
		"Each is a background worker: max_worker_processes must leave room for them and the scheduler.",
		&hs_max_executors, 2, 0, 64, PGC_POSTMASTER, 0},
	{"hasched.max_payload_bytes",
		"Largest job payload accepted, in bytes.",
		"Measured on the jsonb value as stored, before compression.",
		&hs_max_payload_bytes, 1024 * 1024, 1, 256 * 1024 * 1024, PGC_SUSET, GUC_UNIT_BYTE},
	{"hasched.max_queues",
		"Number of queues whose claim cursors fit in shared memory.",
		"Claims on further queues work, without a cursor.",
		&hs_max_queues, 1024, 16, 1000000, PGC_POSTMASTER, 0},
	{"hasched.max_result_bytes",
		"Largest job result that complete() accepts, in bytes.",
		"Measured on the jsonb value before compression; larger results are refused (JQ012) and nothing is recorded.",
		&hs_max_result_bytes, 1024 * 1024, 1024, 256 * 1024 * 1024, PGC_SUSET, GUC_UNIT_BYTE},
	{"hasched.max_tenants",
		"Number of tenants whose rate-limit buckets and daily job counters fit in shared memory.",
		"Submits of further tenants are not rate limited, and their daily quota is checked by counting their jobs at every submit.",
		&hs_max_tenants, 4096, 16, 10000000, PGC_POSTMASTER, 0},
	{"hasched.max_timeout",
		"Longest timeout, lease or retry delay a job or a queue may have.",
		"Longer ones are refused (JQ013) and retry delays are capped at it.  It can be at most 2147483647 ms (about 24.8 days), the longest statement_timeout PostgreSQL can set.",
		&hs_max_timeout, 7 * 24 * 3600 * 1000, 1000, INT_MAX, PGC_SUSET, GUC_UNIT_MS},
	{"hasched.metrics_max_queues",
		"Number of queues whose job counts have their own rows in /metrics and health().",
		"The deepest queues get rows; the jobs of the others are summed into one row, queue \"(other)\".",
		&hs_metrics_max_queues, 100, 1, 10000, PGC_POSTMASTER, 0},
	{"hasched.min_executors",
		"Executors kept running while any sql queue exists, idle or not.",
		"Keeping one ready avoids starting a worker for the first job after a quiet spell.",
		&hs_min_executors, 1, 0, 64, PGC_SIGHUP, 0},
	{"hasched.misfire_threshold",
		"How late a schedule's run may be before it counts as missed.",
		"Missed runs follow the schedule's misfire policy (skip, or run once).",
		&hs_misfire_threshold, 5000, 100, 24 * 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS},
	{"hasched.quota_shards",
		"Unused since 0.2.0, which counts the day's jobs in shared memory.",
		"Kept so that configurations that set it still load.",
		&hs_quota_shards, 16, 1, 1024, PGC_SUSET, 0},
	{"hasched.readonly_backlog",
		"Due waiting jobs at which submissions become read-only automatically; 0: never.",
		"The scheduler counts the due jobs of queues that are not paused about once a second; at this many it refuses submissions (JQ003) until the count falls below hasched.degrade_exit_ratio of it.",
		&hs_readonly_backlog, 1000000, 0, INT_MAX, PGC_SIGHUP, 0},
	{"hasched.readonly_sync_lag",
		"Lag of the synchronous standby at which submissions become read-only automatically; 0: never.",
		"With synchronous_standby_names set: the largest flush or replay lag of a standby whose sync_state is sync or quorum (pg_stat_replication), or how long none has been connected.",
		&hs_readonly_sync_lag, 10000, 0, INT_MAX, PGC_SIGHUP, GUC_UNIT_MS},
	{"hasched.scheduler_naptime",
		"Longest sleep of the scheduler between two rounds.",
		"It wakes earlier for due schedules and delayed jobs, and when woken by a submit.",
		&hs_scheduler_naptime, 1000, 10, 60000, PGC_SIGHUP, GUC_UNIT_MS},
	{"hasched.stats_interval",
		"How often the scheduler counts the unfinished jobs by queue and state, for health() and /metrics.",
		"Each count reads the waiting and running jobs (not the finished ones); the figures are as old as this at most, plus a round.",
		&hs_stats_interval, 1000, 100, 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS},
	{"hasched.tenant",
		"Tenant that submit() uses when none is given; empty means the current role.",
		"The current role must be a member of the tenant role.",
		NULL, 0, 0, 0, PGC_USERSET, 0, &hs_tenant, "", NULL},
	{"hasched.zookeeper",
		"ZooKeeper ensemble (host:port,host:port,...[/chroot]) that elects the one server allowed to schedule; empty: none.",
		"With it set, a primary schedules, runs jobs and answers claim, heartbeat, complete and fail only while it holds hasched's ZooKeeper leadership.",
		NULL, 0, 0, 0, PGC_POSTMASTER, 0, &hs_zookeeper, "", NULL},
	{"hasched.zookeeper_fence_margin",
		"How long before its ZooKeeper session could expire a leader stops acting.",
		"The leader fences itself this long before the session timeout has passed since ZooKeeper last answered it; it must be below the session timeout.",
		&hs_zookeeper_fence_margin, 3000, 10, 600000, PGC_SIGHUP, GUC_UNIT_MS},
	{"hasched.zookeeper_path",
		"Root znode of hasched's election and worker registrations.",
		"Servers that share it elect one leader among them.",
		NULL, 0, 0, 0, PGC_POSTMASTER, 0, &hs_zookeeper_path, "/hasched", NULL},
	{"hasched.zookeeper_session_timeout",
		"ZooKeeper session timeout the coordinator asks for.",
		"The ensemble must grant exactly this (between its minSessionTimeout and maxSessionTimeout), or the server does not lead.",
		&hs_zookeeper_session_timeout, 10000, 1000, 600000, PGC_POSTMASTER, GUC_UNIT_MS},
};

void
hs_define_settings(void)
{
	DefineCustomEnumVariable("hasched.submit_synchronous_commit",
							 "Commit level of transactions that submit jobs.",
							 "submit() and submit_many() set synchronous_commit to this for their transaction, so that a returned submit is durable (and, with synchronous_standby_names, on a standby).",
							 &hs_submit_synchronous_commit, 0, commit_levels,
							 PGC_SUSET, 0, NULL, NULL, NULL);

	DefineCustomBoolVariable("hasched.enforce_quotas",
							 "Whether submits are counted and checked against tenant quotas and rate limits.",
							 NULL,
							 &hs_enforce_quotas, true,
							 PGC_SUSET, 0, NULL, NULL, NULL);

	DefineCustomRealVariable("hasched.degrade_exit_ratio",
							 "An automatic mode ends when every signal is below this fraction of its threshold.",
							 "The automatic read-only mode begins at a threshold and ends below threshold times this ratio (hysteresis); so does the hold-back.",
							 &hs_degrade_exit_ratio, 0.8, 0.01, 0.99,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);

	DefineCustomRealVariable("hasched.slo_target",
							 "Availability objective, in percent, that hasched.availability() measures the error budget against.",
							 "Must be above 0 and below 100.",
							 &hs_slo_target, 99.99, 0.0, 100.0,
							 PGC_USERSET, 0, check_slo_target, NULL, NULL);

	for (int i = 0; i < lengthof(settings); i++)
	{
		const Setting *g = &settings[i];

		if (g->variable)
			DefineCustomIntVariable(g->name, g->short_desc, g->long_desc, g->variable,
									g->boot, g->min, g->max, g->context, g->flags,
									NULL, NULL, NULL);
		else
			DefineCustomStringVariable(g->name, g->short_desc, g->long_desc,
									   g->string_variable, g->string_boot,
									   g->context, g->flags, g->check, NULL, NULL);
	}

	MarkGUCPrefixReserved("hasched");
}

/*
 * Make the current transaction commit at hasched.submit_synchronous_commit
 * (nothing to do when synchronous_commit already says so: the usual case).
 */
void
hs_force_submit_commit_level(void)
{
	/* the SyncCommitLevel of each entry of commit_levels */
	static const int levels[] = {
		SYNCHRONOUS_COMMIT_ON, SYNCHRONOUS_COMMIT_REMOTE_APPLY,
		SYNCHRONOUS_COMMIT_REMOTE_WRITE, SYNCHRONOUS_COMMIT_LOCAL_FLUSH,
		SYNCHRONOUS_COMMIT_OFF
	};

	if (synchronous_commit == levels[hs_submit_synchronous_commit])
		return;
	(void) set_config_option("synchronous_commit",
							 commit_levels[hs_submit_synchronous_commit].name,
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);
}
