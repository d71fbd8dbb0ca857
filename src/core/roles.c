/*-------------------------------------------------------------------------
 *
 * roles.c
 *		Whose a job is and whose rights it runs with: what may be a tenant,
 *		who sees a tenant's jobs, the trigger that keeps direct writes of
 *		hasched.job and hasched.schedule from naming another role as owner,
 *		and the check an executor makes before it runs a job as its owner.
 *
 * Jobs and schedules name their tenant and owner by role OID (regrole
 * columns): a renamed role keeps them, and a role created later under a
 * dropped one's name is another role and gets nothing of it.
 *
 * Who may run SQL as whom.  A job's SQL runs with the rights of its owner.
 * submit() and schedule() make the calling role the owner (it is the
 * caller's SQL), and the runs of a schedule belong to the schedule's owner.
 * A role that writes hasched.job or hasched.schedule directly (a member of
 * hasched_admin may) can only name itself as the owner, and cannot change
 * the SQL (payload), the queue or the owner of a row that another role
 * owns: the row would then run that role's rights on the writer's SQL.
 * Only a superuser, or the owner of the table (the extension owner: the
 * API writes as it), may write a row for another role.  Each job also
 * records the role that wrote it (submitted_by), and an executor runs a
 * job only when its owner still exists and either wrote the job itself or
 * the writer is a superuser; so a superuser owner runs only what a
 * superuser submitted.
 *
 * What may be a tenant.  A tenant's jobs are visible to every role that
 * has the privileges of the tenant role.  A role that a hasched role has
 * the privileges of (hasched_submitter itself, or a role granted to it)
 * would make one tenant's jobs every submitter's, and a predefined role
 * (pg_monitor, ...) is shared by design; neither may be a tenant (JQ015).
 * Any other role may: a role of its own for a group of submitters, or a
 * submitting role itself.
 *
 * IDENTIFICATION
 *		src/core/roles.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/catalog.h"
#include "catalog/pg_authid.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "core/hasched.h"

PG_FUNCTION_INFO_V1(hasched_owner_trigger);

static const char *const hasched_roles[] = {
	"hasched_admin", "hasched_submitter", "hasched_worker"
};

/* A role's name for messages, also when it no longer exists. */
char *
hs_role_name(Oid roleid)
{
	char	   *name = OidIsValid(roleid) ? GetUserNameFromId(roleid, true) : NULL;

	return name ? name : psprintf("(dropped role %u)", roleid);
}

static bool
role_exists(Oid roleid)
{
	return OidIsValid(roleid) &&
		SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(roleid));
}

/*
 * Why a role may not be a tenant, or NULL when it may.  The role exists.
 */
static const char *
tenant_refusal(Oid roleid, const char *name)
{
	if (IsReservedName(name))
		return "It is a predefined role; its members are not one tenant.";
	for (int i = 0; i < lengthof(hasched_roles); i++)
	{
		Oid			r = get_role_oid(hasched_roles[i], true);

		if (!OidIsValid(r))
			continue;
		if (r == roleid)
			return "The hasched roles are shared by all tenants: every member would see and cancel the jobs.";
		if (has_privs_of_role(r, roleid))
			return psprintf("Role %s has its privileges: every member of %s would see and cancel the jobs.",
							hasched_roles[i], hasched_roles[i]);
	}
	return NULL;
}

/* Refuse a role that may not be a tenant (JQ015). */
static void
check_tenant(Oid roleid, const char *name)
{
	const char *why = tenant_refusal(roleid, name);

	if (why)
		ereport(ERROR,
				(errcode(HS_ERRCODE_UNKNOWN_TENANT),
				 errmsg("role \"%s\" cannot be a tenant", name),
				 errdetail_internal("%s", why),
				 errhint("Make a role of its own for the tenant: CREATE ROLE %s NOLOGIN, then grant it to the roles that submit for it.",
						 quote_identifier(psprintf("%s_tenant", name)))));
}

/*
 * The tenant named: its role, which exists and may be a tenant; else
 * JQ015.  For submit() and schedule().
 */
Oid
hs_tenant_role(const char *name)
{
	Oid			roleid;

	if (name[0] == '\0')
		ereport(ERROR,
				(errcode(HS_ERRCODE_INVALID_ARGUMENT),
				 errmsg("tenant must not be empty")));
	roleid = get_role_oid(name, true);
	if (!OidIsValid(roleid))
		ereport(ERROR,
				(errcode(HS_ERRCODE_UNKNOWN_TENANT),
				 errmsg("tenant \"%s\" does not exist", name),
				 errdetail("A tenant is a role; its members see and cancel its jobs."),
				 errhint("Create it with CREATE ROLE %s NOLOGIN and grant it to the roles that submit for it.",
						 quote_identifier(name))));
	check_tenant(roleid, name);
	return roleid;
}

/*
 * Why the roles of a schedule no longer allow its runs, or NULL when they
 * do: the owner or the tenant was dropped, or the tenant may no longer be
 * one.  For the scheduler.
 */
char *
hs_schedule_roles_refusal(Oid owner, Oid tenant)
{
	char	   *name;
	const char *why;

	if (!role_exists(owner))
		return psprintf("its owner (role %u) was dropped", owner);
	name = OidIsValid(tenant) ? GetUserNameFromId(tenant, true) : NULL;
	if (name == NULL)
		return psprintf("its tenant (role %u) was dropped", tenant);
	why = tenant_refusal(tenant, name);
	if (why)
		return psprintf("role \"%s\" cannot be a tenant: %s", name, why);
	return NULL;
}

/*
 * May roleid see the jobs of the tenant role?  Yes when it has the
 * privileges of the tenant (membership with inheritance, or superuser) or
 * of hasched_admin.  A tenant whose role was dropped is visible to
 * administrators only.
 */
bool
hs_tenant_visible(Oid roleid, Oid tenant)
{
	Oid			admin_oid;

	if (role_exists(tenant) && has_privs_of_role(roleid, tenant))
		return true;
	admin_oid = get_role_oid("hasched_admin", true);
	return OidIsValid(admin_oid) && has_privs_of_role(roleid, admin_oid);
}

/* The same for a tenant named (hasched.tenant and quota_use rows). */
bool
hs_role_visible(Oid roleid, const char *tenant)
{
	return hs_tenant_visible(roleid, get_role_oid(tenant, true));
}

/*
 * May a job written by submitted_by run with owner's rights?  NULL when it
 * may, else why not (for the job's last_error).  The executors ask this
 * before they become the owner.
 */
char *
hs_owner_refusal(Oid owner, Oid submitted_by)
{
	if (!role_exists(owner))
		return psprintf("the owner of the job, %s, no longer exists", hs_role_name(owner));
	if (owner == submitted_by)
		return NULL;
	if (!role_exists(submitted_by))
		return psprintf("the role that wrote the job for %s, %s, no longer exists",
						hs_role_name(owner), hs_role_name(submitted_by));
	if (!superuser_arg(submitted_by))
		return psprintf("role \"%s\" wrote the job for role \"%s\" and is not a superuser: a job runs only with its writer's rights",
						hs_role_name(submitted_by), hs_role_name(owner));
	return NULL;
}

/* ------------------------------------------------------------------------
 * Rows of dropped roles
 * ------------------------------------------------------------------------ */

/*
 * A dropped role's OID stays in the rows that named it.  pg_dump writes such
 * an OID as a number, and a restore into another server would hand the rows
 * to whichever role has that number there (OIDs are reused).  So the
 * scheduler rewrites them to OID 0, which no role has: after a role is
 * dropped, its jobs, schedules and events name no role.  The schedules are
 * also deactivated, with an event; the jobs go dead when an executor meets
 * them.  A change of pg_authid sets a flag; the scheduler then reads the
 * roles, and rewrites only when one it saw at its last pass is gone (and
 * at its first pass).  With 3 million jobs, the rewrite took 0.65 s of the
 * scheduler's CPU for each role created or altered before (2026-11-30).
 */
static bool roles_changed = true;
static bool roles_callback_set = false;

/* The roles that existed at the last pass, in OID order (NULL: no pass yet) */
static Oid *known_roles = NULL;
static int	n_known_roles = 0;
/* a pass began and did not end (it failed): the next round does it again */
static bool pass_unfinished = false;

static void
authid_changed(Datum arg, int cacheid, uint32 hashvalue)
{
	roles_changed = true;
}

/*
 * The roles now, in OID order (palloc'd in the current context), and
 * whether one that existed at the last pass has gone.  Any change of
 * pg_authid (a role created or altered, a password set) sets roles_changed,
 * and the rewrite reads every row of hasched.job: only a drop needs it.
 * The first pass (the scheduler's start) always does, for the roles dropped
 * while it was not running.
 */
static bool
a_role_was_dropped(Oid **roles, int *nroles)
{
	Oid		   *now_roles;
	int			n;
	int			k = 0;
	bool		dropped = known_roles == NULL;

	if (SPI_execute("SELECT oid FROM pg_catalog.pg_authid ORDER BY oid", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "hasched: reading the roles failed");
	n = (int) SPI_processed;
	now_roles = palloc(sizeof(Oid) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		now_roles[i] = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
													  SPI_tuptable->tupdesc, 1, &isnull));
	}
	/* both in OID order: is every known role still there? */
	for (int i = 0; i < n_known_roles && !dropped; i++)
	{
		while (k < n && now_roles[k] < known_roles[i])
			k++;
		if (k == n || now_roles[k] != known_roles[i])
			dropped = true;
	}
	*roles = now_roles;
	*nroles = n;
	return dropped;
}

#define DROPPED(col) \
	"(" col " <> 0 AND NOT EXISTS (SELECT 1 FROM pg_authid a WHERE a.oid = " col "))"
#define OR_ZERO(col) \
	"CASE WHEN " DROPPED(col) " THEN 0 ELSE " col " END"

/* For the scheduler, inside its transaction and SPI, as a superuser. */
void
hs_forget_dropped_roles(void)
{
	static const char *const sql[] = {
		"UPDATE hasched.job j SET tenant = " OR_ZERO("j.tenant") ","
		" owner = " OR_ZERO("j.owner") ", submitted_by = " OR_ZERO("j.submitted_by")
		" WHERE " DROPPED("j.tenant") " OR " DROPPED("j.owner") " OR " DROPPED("j.submitted_by"),
		"WITH d AS (UPDATE hasched.schedule s SET active = false,"
		"   tenant = " OR_ZERO("s.tenant") ", owner = " OR_ZERO("s.owner")
		"   WHERE " DROPPED("s.tenant") " OR " DROPPED("s.owner")
		"   RETURNING s.name, s.tenant)"
		" INSERT INTO hasched.event (kind, detail, tenant)"
		" SELECT 'schedule_deactivated', jsonb_build_object('schedule', d.name,"
		"   'detail', 'its owner or tenant role was dropped'), d.tenant FROM d",
		"UPDATE hasched.event e SET tenant = 0 WHERE " DROPPED("e.tenant"),
	};
	Oid		   *roles;
	int			nroles;

	if (!roles_callback_set)
	{
		CacheRegisterSyscacheCallback(AUTHOID, authid_changed, (Datum) 0);
		roles_callback_set = true;
	}
	if (!roles_changed && !pass_unfinished)
		return;
	roles_changed = false;		/* a change from now on sets it again */
	pass_unfinished = true;
	if (a_role_was_dropped(&roles, &nroles))
	{
		for (int i = 0; i < lengthof(sql); i++)
			if (SPI_execute(sql[i], false, 0) < 0)
				elog(ERROR, "hasched: forgetting dropped roles failed");
	}
	if (known_roles != NULL)
		pfree(known_roles);
	known_roles = MemoryContextAlloc(TopMemoryContext, sizeof(Oid) * Max(nroles, 1));
	memcpy(known_roles, roles, sizeof(Oid) * nroles);
	n_known_roles = nroles;
	pass_unfinished = false;
}

/* ------------------------------------------------------------------------
 * The owner trigger of hasched.job and hasched.schedule
 * ------------------------------------------------------------------------ */

static bool
column_changed(TupleDesc desc, HeapTuple oldtup, HeapTuple newtup, int att)
{
	Form_pg_attribute a = TupleDescAttr(desc, att - 1);
	bool		oldnull;
	bool		newnull;
	Datum		o = heap_getattr(oldtup, att, desc, &oldnull);
	Datum		n = heap_getattr(newtup, att, desc, &newnull);

	if (oldnull || newnull)
		return oldnull != newnull;
	return !datumIsEqual(o, n, a->attbyval, a->attlen);
}

/*
 * BEFORE INSERT OR UPDATE OF owner, tenant, queue, payload (and, on
 * hasched.job, submitted_by).  An owner left out (NULL) is the writing
 * role.  A writer that is neither a superuser nor the table's owner:
 *  - may insert rows only with itself as the owner;
 *  - may change the owner, queue or payload of a row only to make it its
 *    own (the owner must then be itself);
 *  - is recorded as the row's writer (submitted_by) whenever it does;
 *  - may name only a role that may be a tenant as the tenant.
 */
Datum
hasched_owner_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Relation	rel;
	TupleDesc	desc;
	HeapTuple	newtup;
	HeapTuple	oldtup = NULL;
	Oid			writer = GetUserId();
	const char *what;
	int			owner_att;
	int			tenant_att;
	int			by_att;
	int			cols[2];
	Datum		vals[2];
	bool		nulls[2] = {false, false};
	int			ncols = 0;
	bool		isnull;
	bool		free_hand;
	Oid			owner;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		elog(ERROR, "hasched_owner_trigger: must be fired before, for each row");
	rel = trigdata->tg_relation;
	desc = RelationGetDescr(rel);
	what = strcmp(RelationGetRelationName(rel), "schedule") == 0 ? "schedule" : "job";
	owner_att = SPI_fnumber(desc, "owner");
	tenant_att = SPI_fnumber(desc, "tenant");
	by_att = SPI_fnumber(desc, "submitted_by");
	if (owner_att <= 0 || tenant_att <= 0)
		elog(ERROR, "hasched_owner_trigger: table has no owner or tenant column");
	if (by_att <= 0)
		by_att = 0;
	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		oldtup = trigdata->tg_trigtuple;
		newtup = trigdata->tg_newtuple;
	}
	else
		newtup = trigdata->tg_trigtuple;

	free_hand = superuser() || writer == rel->rd_rel->relowner;

	/*
	 * An owner left out is the writer.  A superuser's row without a writer
	 * (submitted_by) counts as written by its owner: so are the jobs of a
	 * dump of 0.1.0, which had no such column, when pg_restore copies them.
	 */
	owner = DatumGetObjectId(heap_getattr(newtup, owner_att, desc, &isnull));
	if (isnull)
	{
		owner = writer;
		cols[ncols] = owner_att;
		vals[ncols++] = ObjectIdGetDatum(writer);
	}
	if (by_att > 0)
	{
		(void) heap_getattr(newtup, by_att, desc, &isnull);
		if (isnull && free_hand)
		{
			cols[ncols] = by_att;
			vals[ncols++] = ObjectIdGetDatum(owner);
		}
	}

	if (!free_hand)
	{
		bool		takes_over = (oldtup == NULL);

		if (oldtup != NULL)
		{
			static const char *const guarded[] = {"owner", "queue", "payload", "submitted_by"};

			for (int i = 0; i < lengthof(guarded) && !takes_over; i++)
			{
				int			att = SPI_fnumber(desc, guarded[i]);

				if (att > 0 && column_changed(desc, oldtup, newtup, att))
					takes_over = true;
			}
		}
		if (takes_over)
		{
			if (owner != writer)
			{
				Oid			old_owner = oldtup == NULL ? InvalidOid :
					DatumGetObjectId(heap_getattr(oldtup, owner_att, desc, &isnull));

				if (oldtup != NULL && old_owner != writer && old_owner == owner)
					ereport(ERROR,
							(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
							 errmsg("permission denied to change the SQL, queue or owner of a %s of role \"%s\"",
									what, hs_role_name(owner)),
							 errdetail("The %s runs with the rights of its owner; only a superuser may change what it runs for another role.",
									   what),
							 errhint("Cancel it and submit a new one of your own.")));
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("permission denied to write a %s owned by role \"%s\"",
								what, hs_role_name(owner)),
						 errdetail("A %s runs with the rights of its owner; only a superuser may make another role the owner.",
								   what),
						 errhint("Leave owner out, or set it to %s: the %s then runs as you.",
								 quote_identifier(hs_role_name(writer)), what)));
			}
			if (by_att > 0)
			{
				/* the writer of the row, whatever it said */
				int			k;

				for (k = 0; k < ncols && cols[k] != by_att; k++)
					;
				cols[k] = by_att;
				vals[k] = ObjectIdGetDatum(writer);
				if (k == ncols)
					ncols++;
			}
		}

		if (oldtup == NULL || column_changed(desc, oldtup, newtup, tenant_att))
		{
			Oid			tenant = DatumGetObjectId(heap_getattr(newtup, tenant_att, desc, &isnull));
			char	   *name = isnull ? NULL : GetUserNameFromId(tenant, true);

			if (name == NULL)
				ereport(ERROR,
						(errcode(HS_ERRCODE_UNKNOWN_TENANT),
						 errmsg("the tenant of a %s must be an existing role", what)));
			check_tenant(tenant, name);
		}
	}

	if (ncols > 0)
		newtup = heap_modify_tuple_by_cols(newtup, desc, ncols, cols, vals, nulls);
	return PointerGetDatum(newtup);
}
