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

/*
 * The settings' variables: the integer and string ones generated from
 * src/core/settings.def with their defaults, then the others.
 */
#include "core/settings_variables.h"
int			hs_submit_synchronous_commit = 0;	/* index into commit_levels */
bool		hs_enforce_quotas = true;
bool		hs_amqp_tls_verify = true;
double		hs_degrade_exit_ratio = 0.8;
double		hs_slo_target = 99.99;

/* The values synchronous_commit accepts, in the order used by the GUC. */
static const struct config_enum_entry commit_levels[] = {
	{"on", 0, false},
	{"remote_apply", 1, false},
	{"remote_write", 2, false},
	{"local", 3, false},
	{"off", 4, false},
	{NULL, 0, false}
};


/* A check hook's refusal of a new value: its SQLSTATE, message, detail and hint. */
static bool
refuse_value(int sqlerrcode, const char *message, const char *detail, const char *hint)
{
	GUC_check_errcode(sqlerrcode);
	GUC_check_errmsg("%s", message);
	GUC_check_errdetail("%s", detail);
	GUC_check_errhint("%s", hint);
	return false;
}

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
	return refuse_value(HS_ERRCODE_UNKNOWN_TENANT, psprintf("tier \"%s\" does not exist", *newval),
						"hasched.default_tier is the tier of tenants without a row in hasched.tenant.",
						"Add the tier to hasched.tier first, or use one of SELECT name FROM hasched.tier.");
}

/* hasched.slo_target: a percentage strictly between 0 and 100. */
static bool
check_slo_target(double *newval, void **extra, GucSource source)
{
	if (*newval > 0.0 && *newval < 100.0)
		return true;
	/* as PostgreSQL reports every setting out of its range */
	return refuse_value(ERRCODE_INVALID_PARAMETER_VALUE,
						psprintf("hasched.slo_target must be above 0 and below 100, not %g", *newval),
						"It is the availability objective in percent; 100 would leave no error budget at all.",
						"Use, for example, 99.9 or 99.99.");
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

/*
 * The integer and string settings, defined in one loop.  Each: name,
 * description, longer description (or NULL), variable, default, minimum,
 * maximum, context and unit.  Their rows are generated at build time from
 * src/core/settings.def (scripts/gen_settings.awk), where they are listed.
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
#include "core/settings_table.h"
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

	DefineCustomBoolVariable("hasched.amqp_tls_verify",
							 "Whether the dispatcher verifies the certificate and host name of an amqps:// broker.",
							 "Off encrypts the connection but trusts any broker that answers (a man in the middle too); for tests only.",
							 &hs_amqp_tls_verify, true,
							 PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);

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
