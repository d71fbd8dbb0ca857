/*
 * hasched--0.1.0--0.2.0.sql
 *		Upgrade from 0.1.0 (released) to 0.2.0.  A fresh CREATE EXTENSION
 *		hasched runs hasched--0.1.0.sql and then this script, so a fresh
 *		install and an upgraded one have the same schema (test/t tests it).
 *
 * Each change is a section of its own, under a header naming its topic.
 */

\echo Use "ALTER EXTENSION hasched UPDATE TO '0.2.0'" to load this file. \quit

/* ========================================================================
 * Packaging: the database hasched serves, dump and restore, the executors'
 * view, pausing schedules
 * ======================================================================== */

/*
 * hasched works in one database per server, hasched.database: its
 * scheduler and executors serve only that one, so jobs and schedules made
 * anywhere else would never run.  CREATE EXTENSION (through this script)
 * and ALTER EXTENSION UPDATE refuse other databases.
 */
DO $database$
DECLARE
	-- pg_settings lists hasched.database only when the library defined it (a
	-- line in postgresql.conf alone makes a hidden placeholder)
	served text := (SELECT s.setting FROM pg_catalog.pg_settings s
					 WHERE s.name OPERATOR(pg_catalog.=) 'hasched.database');
	here text := pg_catalog.current_database();
BEGIN
	IF served IS NULL THEN
		RAISE EXCEPTION 'hasched is not loaded in this server'
			USING ERRCODE = 'JQ023',
				  DETAIL = 'The hasched library is not in shared_preload_libraries, so no scheduler or executor would serve this database.',
				  HINT = 'Add hasched to shared_preload_libraries in postgresql.conf, set hasched.database, and restart the server.';
	END IF;
	IF served <> here THEN
		RAISE EXCEPTION 'cannot install hasched in database "%"', here
			USING ERRCODE = 'JQ023',
				  DETAIL = pg_catalog.format('hasched.database is "%s": the scheduler and executors serve only that database, so jobs and schedules of database "%s" would never run.', served, here),
				  HINT = pg_catalog.format('Install hasched in database "%s", or set hasched.database = ''%s'' in postgresql.conf and restart the server.', served, here);
	END IF;
END
$database$;

/*
 * pg_dump keeps every row users and the scheduler made.  CREATE EXTENSION
 * puts rows in four tables itself (the tiers, the default queue, the mode,
 * the first epoch); a restore runs CREATE EXTENSION first, then copies the
 * dumped rows in.  So the dump holds such a row once it differs from what
 * was shipped (an edited tier), or always (the mode, the epochs), and a row
 * copied in over one still as shipped replaces it (the trigger below)
 * instead of failing on its key.
 */

-- Is the row what CREATE EXTENSION put there, unchanged?
CREATE FUNCTION hasched._as_shipped(t hasched.tier) RETURNS boolean
	LANGUAGE sql IMMUTABLE PARALLEL SAFE
	SET search_path = pg_catalog, pg_temp
AS $$
	SELECT (t.name, t.jobs_per_day, t.rate_per_second, t.burst) IS NOT DISTINCT FROM ('free'::text, 100::bigint, 1::float8, 10)
		OR (t.name, t.jobs_per_day, t.rate_per_second, t.burst) IS NOT DISTINCT FROM ('pro'::text, 10000::bigint, 100::float8, 1000)
		OR (t.name, t.jobs_per_day, t.rate_per_second, t.burst) IS NOT DISTINCT FROM ('enterprise'::text, NULL::bigint, NULL::float8, 1)
$$;
CREATE FUNCTION hasched._as_shipped(q hasched.queue) RETURNS boolean
	LANGUAGE sql IMMUTABLE PARALLEL SAFE
	SET search_path = pg_catalog, pg_temp
AS $$
	SELECT (q.name, q.transport, q.concurrency, q.default_timeout, q.default_max_attempts,
			q.lease, q.backoff_base, q.backoff_max)
		IS NOT DISTINCT FROM ('default'::text, 'pull'::text, 0, interval '5 minutes', 3,
							  interval '30 seconds', interval '1 second', interval '1 hour')
$$;
CREATE FUNCTION hasched._as_shipped(s hasched.state) RETURNS boolean
	LANGUAGE sql IMMUTABLE PARALLEL SAFE
	SET search_path = pg_catalog, pg_temp
AS $$
	SELECT s.mode = 'normal' AND s.reason IS NULL AND s.changed_by IS NULL
$$;
CREATE FUNCTION hasched._as_shipped(e hasched.epoch) RETURNS boolean
	LANGUAGE sql IMMUTABLE PARALLEL SAFE
	SET search_path = pg_catalog, pg_temp
AS $$
	SELECT e.epoch = 1 AND e.reason = 'extension created'
$$;
COMMENT ON FUNCTION hasched._as_shipped(hasched.tier) IS
	'Internal: is this tier one CREATE EXTENSION made, unchanged (pg_dump leaves those out)?';
COMMENT ON FUNCTION hasched._as_shipped(hasched.queue) IS
	'Internal: is this the default queue as CREATE EXTENSION made it (pg_dump leaves it out)?';
COMMENT ON FUNCTION hasched._as_shipped(hasched.state) IS
	'Internal: is this the mode row as CREATE EXTENSION made it (a restored one replaces it)?';
COMMENT ON FUNCTION hasched._as_shipped(hasched.epoch) IS
	'Internal: is this the first epoch as CREATE EXTENSION made it (a restored one replaces it)?';
-- pg_dump (a superuser) and the trigger below (as whoever inserts) call them
REVOKE ALL ON FUNCTION hasched._as_shipped(hasched.tier), hasched._as_shipped(hasched.queue),
	hasched._as_shipped(hasched.state), hasched._as_shipped(hasched.epoch) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hasched._as_shipped(hasched.tier), hasched._as_shipped(hasched.queue),
	hasched._as_shipped(hasched.state), hasched._as_shipped(hasched.epoch) TO hasched_admin;

/*
 * BEFORE INSERT on the four tables: a row whose key (the trigger's
 * argument) matches a row still as shipped updates that row in place and
 * is not inserted.  Any other row is inserted as usual, so a duplicate of an
 * edited row is still refused.
 */
CREATE FUNCTION hasched._restore_over_shipped() RETURNS trigger
	LANGUAGE plpgsql
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	key text := TG_ARGV[0];
	cols text;
	replaced bigint;
BEGIN
	SELECT string_agg(pg_catalog.format('%I = ($1).%I', a.attname, a.attname), ', ' ORDER BY a.attnum)
	  INTO cols
	  FROM pg_catalog.pg_attribute a
	 WHERE a.attrelid = TG_RELID AND a.attnum > 0 AND NOT a.attisdropped
	   AND a.attidentity = '' AND a.attgenerated = '';
	EXECUTE pg_catalog.format('UPDATE %I.%I t SET %s WHERE t.%I = ($1).%I AND hasched._as_shipped(t)',
							  TG_TABLE_SCHEMA, TG_TABLE_NAME, cols, key, key)
	  USING NEW;
	GET DIAGNOSTICS replaced = ROW_COUNT;
	IF replaced > 0 THEN
		RETURN NULL;
	END IF;
	RETURN NEW;
END
$$;
COMMENT ON FUNCTION hasched._restore_over_shipped() IS
	'Internal: a row copied in by pg_restore replaces the one CREATE EXTENSION made, if that one is still as shipped.';
REVOKE ALL ON FUNCTION hasched._restore_over_shipped() FROM PUBLIC;
CREATE TRIGGER hasched_restore_over_shipped BEFORE INSERT ON hasched.tier
	FOR EACH ROW EXECUTE FUNCTION hasched._restore_over_shipped('name');
CREATE TRIGGER hasched_restore_over_shipped BEFORE INSERT ON hasched.queue
	FOR EACH ROW EXECUTE FUNCTION hasched._restore_over_shipped('name');
CREATE TRIGGER hasched_restore_over_shipped BEFORE INSERT ON hasched.state
	FOR EACH ROW EXECUTE FUNCTION hasched._restore_over_shipped('one');
CREATE TRIGGER hasched_restore_over_shipped BEFORE INSERT ON hasched.epoch
	FOR EACH ROW EXECUTE FUNCTION hasched._restore_over_shipped('epoch');

SELECT pg_catalog.pg_extension_config_dump('hasched.tier', 'WHERE NOT hasched._as_shipped(tier)');
SELECT pg_catalog.pg_extension_config_dump('hasched.queue', 'WHERE NOT hasched._as_shipped(queue)');
SELECT pg_catalog.pg_extension_config_dump('hasched.state', '');
SELECT pg_catalog.pg_extension_config_dump('hasched.epoch', '');
-- the position of the event ids (an identity column's sequence)
SELECT pg_catalog.pg_extension_config_dump('hasched.event_id_seq', '');

/* ------------------------------------------------------------------------
 * The executors' view: hasched.executor_slots; hasched.workers, its 0.1.0
 * name, stays as a deprecated alias ("worker" means an external worker
 * everywhere else) and will be dropped in a later version.
 * ------------------------------------------------------------------------ */
CREATE VIEW hasched.executor_slots WITH (security_invoker = true) AS
SELECT e.slot, e.pid, e.state, e.job_id, e.since FROM hasched.executors() e;
COMMENT ON VIEW hasched.executor_slots IS
	'The executor slots of this server (background workers that run the SQL jobs): pid, state (free, starting, idle, woken, busy), the job it runs and since when.';
REVOKE ALL ON hasched.executor_slots FROM PUBLIC;
GRANT SELECT ON hasched.executor_slots TO hasched_admin;
COMMENT ON VIEW hasched.workers IS
	'Deprecated alias of hasched.executor_slots (kept for 0.1.0 users; to be dropped in a later version).';

/* ------------------------------------------------------------------------
 * Pausing schedules: hasched.alter_schedule(name, active), and active in
 * hasched.schedule().  A paused schedule has no next run; resumed, it goes
 * on from now, without making up the runs it missed.
 * ------------------------------------------------------------------------ */
DROP FUNCTION hasched.schedule(text, text, text, jsonb, text, text, text, text, name, boolean);
CREATE FUNCTION hasched.schedule(
	name text,
	spec text,
	queue text DEFAULT 'default',
	payload jsonb DEFAULT '{}',
	priority text DEFAULT 'medium',
	timezone text DEFAULT 'UTC',
	misfire text DEFAULT 'run_once',
	overlap text DEFAULT 'skip',
	tenant name DEFAULT NULL,
	replace boolean DEFAULT false,
	active boolean DEFAULT true)
RETURNS timestamptz
	LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'hasched_schedule';
COMMENT ON FUNCTION hasched.schedule(text, text, text, jsonb, text, text, text, text, name, boolean, boolean) IS
	'Create (or, with replace, change) a periodic job; returns its next run (NULL when created paused: active => false). spec: cron with 5 fields, or 6 with seconds first, or @every <n> <unit>, or @hourly, @daily, ... Runs go through the same path as submit().';
REVOKE ALL ON FUNCTION hasched.schedule(text, text, text, jsonb, text, text, text, text, name, boolean, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hasched.schedule(text, text, text, jsonb, text, text, text, text, name, boolean, boolean)
	TO hasched_submitter;

CREATE FUNCTION hasched.alter_schedule(name text, active boolean)
RETURNS timestamptz
	LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'hasched_alter_schedule';
COMMENT ON FUNCTION hasched.alter_schedule(text, boolean) IS
	'Pause (active => false) or resume (active => true) a periodic job without deleting it; returns its next run (NULL while paused). A resumed schedule goes on from now: the runs it missed while paused are not made up.';
REVOKE ALL ON FUNCTION hasched.alter_schedule(text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hasched.alter_schedule(text, boolean) TO hasched_submitter;

/* ------------------------------------------------------------------------
 * Pull workers: LISTEN/NOTIFY wake-ups (hasched.listen) and idempotent
 * reports (hasched-worker, issue 9)
 * ------------------------------------------------------------------------ */
CREATE FUNCTION hasched.listen(queue text)
RETURNS text
	LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'hasched_listen';
COMMENT ON FUNCTION hasched.listen(text) IS
	'LISTEN for jobs of a pull queue: from the commit of this transaction on, when a transaction that made jobs of the queue due commits, the scheduler sends a NOTIFY on the returned channel. Jobs due later are not notified: poll for them.';
REVOKE ALL ON FUNCTION hasched.listen(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hasched.listen(text) TO hasched_worker;

COMMENT ON FUNCTION hasched.complete(bigint, text, jsonb) IS
	'Record the success of a leased job, exactly once: a stale token is refused (SQLSTATE JQ006) and changes nothing. Idempotent: repeated with the token whose success was recorded (a lost reply), it succeeds and changes nothing.';
COMMENT ON FUNCTION hasched.complete(bigint[], text[], jsonb[]) IS
	'Record the success of many leased jobs in one statement; returns how many. All or nothing: one stale token (SQLSTATE JQ006, the detail names the jobs) records none. Jobs that already succeeded under the same tokens count as recorded.';
COMMENT ON FUNCTION hasched.fail(bigint, text, text, boolean) IS
	'Record a failed attempt: the job retries after exponential backoff with jitter (state failed) until max_attempts, then it is dead; retry => false makes it dead at once. Returns the new state. Idempotent: repeated with the token whose failure was recorded, it changes nothing and returns the job''s state now.';

/* ------------------------------------------------------------------------
 * ZooKeeper leadership and fencing (issue 10)
 *
 * With hasched.zookeeper set, each leadership term opens an epoch that
 * records the leader's fencing token: the sequence number of its ephemeral
 * election znode.  Lease tokens keep their form, epoch:attempt:lease; the
 * epoch of a term names the token.
 * ------------------------------------------------------------------------ */
ALTER TABLE hasched.epoch ADD COLUMN fencing_token bigint;
COMMENT ON COLUMN hasched.epoch.fencing_token IS
	'With hasched.zookeeper: the sequence number of the election znode of the server that led when this epoch opened (its fencing token); NULL for epochs opened without ZooKeeper.';

/* ------------------------------------------------------------------------
 * Security: whose rights a job runs with, what may be a tenant, and what a
 * tenant can read (issue 8)
 * ------------------------------------------------------------------------ */

/*
 * Jobs and schedules name their tenant and owner by role OID (regrole),
 * not by name: a renamed role keeps them, and a role created later under a
 * dropped one's name gets nothing of it.  regrole shows the role's name,
 * pg_dump writes the name and pg_upgrade keeps the OID.  A row whose role
 * no longer exists gets OID 0, which is no role: administrators still see
 * it, and the executors and the scheduler refuse to run it.
 * Each job also records the role that wrote it (submitted_by): a job runs
 * with its owner's rights only if the owner wrote it or a superuser did.
 * The views and policies over these columns are made again.
 */
DROP VIEW hasched.jobs;
DROP VIEW hasched.schedules;
DROP POLICY job_tenant ON hasched.job;
DROP POLICY schedule_tenant ON hasched.schedule;

ALTER TABLE hasched.job ADD COLUMN submitted_by name;
ALTER TABLE hasched.job
	ALTER COLUMN tenant TYPE regrole
		USING coalesce(pg_catalog.to_regrole(pg_catalog.quote_ident(tenant)), 0::oid::regrole),
	ALTER COLUMN owner TYPE regrole
		USING coalesce(pg_catalog.to_regrole(pg_catalog.quote_ident(owner)), 0::oid::regrole),
	-- 0.1.0 kept no writer: its jobs count as written by their owners
	ALTER COLUMN submitted_by TYPE regrole
		USING coalesce(pg_catalog.to_regrole(pg_catalog.quote_ident(owner)), 0::oid::regrole);
ALTER TABLE hasched.job ALTER COLUMN submitted_by SET NOT NULL;
ALTER TABLE hasched.schedule
	ALTER COLUMN tenant TYPE regrole
		USING coalesce(pg_catalog.to_regrole(pg_catalog.quote_ident(tenant)), 0::oid::regrole),
	ALTER COLUMN owner TYPE regrole
		USING coalesce(pg_catalog.to_regrole(pg_catalog.quote_ident(owner)), 0::oid::regrole);

COMMENT ON COLUMN hasched.job.tenant IS
	'The tenant: its members see and cancel the job.';
COMMENT ON COLUMN hasched.job.owner IS
	'The role whose rights the SQL of the job runs with: the role that submitted it (or the owner of its schedule).';
COMMENT ON COLUMN hasched.job.submitted_by IS
	'The role that wrote the job. The job runs only if that is its owner, or a superuser.';
COMMENT ON COLUMN hasched.schedule.owner IS
	'The role whose rights the runs of the schedule have: the role that made it.';

CREATE FUNCTION hasched.tenant_visible(tenant regrole)
RETURNS boolean
	LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'hasched_tenant_visible_role';
COMMENT ON FUNCTION hasched.tenant_visible(regrole) IS
	'True when the current role may see the tenant''s jobs: it has the privileges of the tenant role, or of hasched_admin.';

CREATE POLICY job_tenant ON hasched.job FOR SELECT
	USING (hasched.tenant_visible(tenant));
CREATE POLICY schedule_tenant ON hasched.schedule FOR SELECT
	USING (hasched.tenant_visible(tenant));

/*
 * Direct writes.  hasched_admin may write hasched.job and hasched.schedule;
 * a writer that is not a superuser (nor the owner of the table, as the API
 * is) may name only itself as the owner, may not change the SQL, queue or
 * owner of another role's row, and may name only a role that can be a
 * tenant as the tenant.  An owner left out is the writer.
 */
CREATE FUNCTION hasched.owner_trigger() RETURNS trigger
	LANGUAGE c AS 'MODULE_PATHNAME', 'hasched_owner_trigger';
COMMENT ON FUNCTION hasched.owner_trigger() IS
	'Keeps the rows of hasched.job and hasched.schedule from running with the rights of a role other than the one that wrote them (unless a superuser wrote them).';
CREATE TRIGGER hasched_job_owner
	BEFORE INSERT OR UPDATE OF owner, submitted_by, tenant, queue, payload ON hasched.job
	FOR EACH ROW EXECUTE FUNCTION hasched.owner_trigger();
CREATE TRIGGER hasched_schedule_owner
	BEFORE INSERT OR UPDATE OF owner, tenant, queue, payload ON hasched.schedule
	FOR EACH ROW EXECUTE FUNCTION hasched.owner_trigger();

/*
 * The transport of a job's queue decides whether an executor runs its
 * payload's "sql" with its owner's rights.  So a writer that is not a
 * superuser may not give the sql transport to a queue name under which
 * another role's jobs wait (by INSERT, or UPDATE of name or transport): it
 * would make their payloads run as SQL.  Creating an sql queue of one's
 * own, or any pull queue, is unaffected.
 */
CREATE FUNCTION hasched.queue_transport_trigger() RETURNS trigger
	LANGUAGE plpgsql
	SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NEW.transport = 'sql'
	   AND (TG_OP = 'INSERT' OR OLD.transport <> 'sql' OR OLD.name <> NEW.name)
	   AND NOT (SELECT r.rolsuper FROM pg_roles r WHERE r.oid = current_user::regrole)
	   AND EXISTS (SELECT 1 FROM hasched.job j
				    WHERE j.queue = NEW.name AND j.owner <> current_user::regrole
					  AND j.state IN ('scheduled', 'pending', 'failed'))
	THEN
		RAISE EXCEPTION 'permission denied to make "%" an sql queue: jobs of other roles wait in it', NEW.name
			USING ERRCODE = '42501',
				  DETAIL = 'An executor runs the "sql" of a job of an sql queue with the rights of the job''s owner; those jobs were not submitted to run as SQL.',
				  HINT = 'Use a new queue name for SQL jobs, or ask a superuser.';
	END IF;
	RETURN NEW;
END
$$;
COMMENT ON FUNCTION hasched.queue_transport_trigger() IS
	'Keeps a writer that is not a superuser from turning a queue where other roles'' jobs wait into an sql queue.';
REVOKE ALL ON FUNCTION hasched.queue_transport_trigger() FROM PUBLIC;
CREATE TRIGGER hasched_queue_transport
	BEFORE INSERT OR UPDATE OF name, transport ON hasched.queue
	FOR EACH ROW EXECUTE FUNCTION hasched.queue_transport_trigger();

/*
 * Events about a tenant's schedules (a refused run names the tenant and its
 * quota) are that tenant's: other roles see only the events of no tenant
 * (mode changes, failovers).  The schedule events of 0.1.0 are given the
 * tenant of their schedule; those of schedules since removed, to
 * administrators only.
 */
ALTER TABLE hasched.event ADD COLUMN tenant regrole;
COMMENT ON COLUMN hasched.event.tenant IS
	'The tenant the event is about (only its members and administrators see it); NULL for events about no tenant.';
UPDATE hasched.event e
   SET tenant = coalesce((SELECT s.tenant FROM hasched.schedule s WHERE s.name = e.detail->>'schedule'),
						 0::oid::regrole)
 WHERE e.detail ? 'schedule';
ALTER TABLE hasched.event ENABLE ROW LEVEL SECURITY;
CREATE POLICY event_tenant ON hasched.event FOR SELECT
	USING (tenant IS NULL OR hasched.tenant_visible(tenant));
CREATE POLICY admin_all ON hasched.event TO hasched_admin USING (true) WITH CHECK (true);

-- the views show tenants by name, as in 0.1.0 (WHERE tenant = 'acme' works)
CREATE VIEW hasched.jobs WITH (security_invoker = true) AS
SELECT j.id, j.queue, pg_catalog.pg_get_userbyid(j.tenant) AS tenant,
	   CASE WHEN j.state IN ('scheduled', 'pending') AND j.run_at > pg_catalog.now()
			THEN 'scheduled'::hasched.job_state
			WHEN j.state = 'scheduled' THEN 'pending'::hasched.job_state
			ELSE j.state END AS state,
	   j.priority, hasched.priority_name(j.priority) AS priority_class,
	   j.run_at, j.attempt, j.max_attempts, j.timeout, j.idempotency_key,
	   j.worker, j.lease_until, j.created_at, j.started_at, j.finished_at,
	   j.last_error, j.result, j.payload
  FROM hasched.job j;
COMMENT ON VIEW hasched.jobs IS
	'Jobs you may see (your tenants'', or all for hasched_admin); state shows scheduled while run_at is in the future.';

CREATE VIEW hasched.schedules WITH (security_invoker = true) AS
SELECT s.name, s.spec, s.timezone, s.queue, pg_catalog.pg_get_userbyid(s.tenant) AS tenant, s.active,
	   s.next_run_at, s.last_run_at, s.misfire, s.overlap,
	   j.id AS last_job_id, j.state AS last_job_state, s.queued_fires
  FROM hasched.schedule s
  LEFT JOIN hasched.job j ON j.id = s.last_job_id;
COMMENT ON VIEW hasched.schedules IS
	'Periodic jobs you may see, with their next run and the state of their last job.';

REVOKE ALL ON hasched.jobs, hasched.schedules FROM PUBLIC;
GRANT SELECT ON hasched.jobs, hasched.schedules TO hasched_submitter, hasched_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON hasched.jobs, hasched.schedules TO hasched_admin;
REVOKE ALL ON FUNCTION hasched.owner_trigger() FROM PUBLIC;
-- tenant_visible(regrole) is for everyone, like tenant_visible(name)
REVOKE ALL ON FUNCTION hasched.tenant_visible(regrole) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hasched.tenant_visible(regrole) TO PUBLIC;

/*
 * The functions documented as everyone's (health(), schedule_next(), the
 * pure helpers) need USAGE on the schema; every other function is revoked
 * from PUBLIC, and no table or sequence is granted to it, so USAGE shows
 * nothing else (test/pgtap/04_tenant_rules.sql lists what a role without a
 * hasched role can run).
 */
GRANT USAGE ON SCHEMA hasched TO PUBLIC;

/* ------------------------------------------------------------------------
 * Submit as cheap as an INSERT (issue 6): each session caches what a
 * submit reads from queue, tenant, tier and state, emptied by a trigger on
 * each; the day's quota use is counted in shared memory and recorded by
 * the job table itself (src/core/submit.c, src/core/quota.c)
 * ------------------------------------------------------------------------ */

-- A committed change of queue, tenant, tier or state empties every
-- session's cache of what a submit reads from them.
CREATE FUNCTION hasched.config_changed() RETURNS trigger
	LANGUAGE c AS 'MODULE_PATHNAME', 'hasched_config_changed';
COMMENT ON FUNCTION hasched.config_changed() IS
	'Internal: once the writing transaction commits, every session reads hasched.queue, hasched.tenant, hasched.tier and hasched.state afresh at its next submit.';
CREATE TRIGGER hasched_config_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON hasched.queue
	FOR EACH STATEMENT EXECUTE FUNCTION hasched.config_changed();
CREATE TRIGGER hasched_config_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON hasched.tenant
	FOR EACH STATEMENT EXECUTE FUNCTION hasched.config_changed();
CREATE TRIGGER hasched_config_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON hasched.tier
	FOR EACH STATEMENT EXECUTE FUNCTION hasched.config_changed();
CREATE TRIGGER hasched_config_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON hasched.state
	FOR EACH STATEMENT EXECUTE FUNCTION hasched.config_changed();

-- A tenant's use of a day is its jobs created that day: the ones still in
-- hasched.job, plus the ones deleted since, which this trigger adds to
-- hasched.quota_use (history pruning deletes finished jobs).
CREATE FUNCTION hasched.count_deleted_jobs() RETURNS trigger
	LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	INSERT INTO hasched.quota_use AS u (tenant, day, shard, used)
	SELECT pg_get_userbyid(d.tenant), (d.created_at AT TIME ZONE 'UTC')::date, 0, count(*)
	  FROM deleted_jobs d
	 WHERE d.created_at >= (((now() AT TIME ZONE 'UTC')::date - 1)::timestamp AT TIME ZONE 'UTC')
	   AND d.tenant <> 0::oid::regrole
	 GROUP BY 1, 2
	ON CONFLICT (tenant, day, shard) DO UPDATE SET used = u.used + excluded.used;
	RETURN NULL;
END
$$;
COMMENT ON FUNCTION hasched.count_deleted_jobs() IS
	'Internal: keeps the jobs of today and yesterday that are deleted from hasched.job counted in hasched.quota_use.';
CREATE TRIGGER hasched_job_deleted
	AFTER DELETE ON hasched.job REFERENCING OLD TABLE AS deleted_jobs
	FOR EACH STATEMENT EXECUTE FUNCTION hasched.count_deleted_jobs();

COMMENT ON TABLE hasched.quota_use IS
	'Jobs deleted from hasched.job, per tenant and UTC day of their creation. A tenant''s use of a day is its jobs of that day still in hasched.job plus these.';

-- 0.1.0 counted every accepted job here: keep only those no longer in hasched.job.
UPDATE hasched.quota_use u
   SET used = CASE WHEN u.shard = c.first_shard THEN greatest(c.used - c.present, 0) ELSE 0 END
  FROM (SELECT q.tenant, q.day, sum(q.used) AS used, min(q.shard) AS first_shard,
			   (SELECT count(*) FROM hasched.job j
				 WHERE j.tenant = pg_catalog.to_regrole(pg_catalog.quote_ident(q.tenant))
				   AND j.created_at >= (q.day::timestamp AT TIME ZONE 'UTC')
				   AND j.created_at < ((q.day + 1)::timestamp AT TIME ZONE 'UTC')) AS present
		  FROM hasched.quota_use q GROUP BY q.tenant, q.day) c
 WHERE u.tenant = c.tenant AND u.day = c.day;
DELETE FROM hasched.quota_use WHERE used = 0;

/*
 * Jobs by creation time: a BRIN index, not 0.1.0's B-tree on (tenant,
 * created_at).  Every claim and every report writes a new version of the
 * job's row, and each version got an entry in every B-tree of the table:
 * that index took two of the six a job's claim and completion wrote, for
 * a count that runs once per tenant and day (hs_quota_prepare) and for
 * the tenants view.  A BRIN index is written only when a version lands in
 * a range of pages it has summarized with older times.  Bench step 4
 * (2026-11-30): 29 us of server CPU per claimed and completed job in two
 * runs, against 33-34 in nine with the B-tree.  The count reads the pages
 * written since the day began (and those not yet summarized), filtering
 * by tenant.
 */
DROP INDEX hasched.job_tenant_idx;
CREATE INDEX job_created_idx ON hasched.job USING brin (created_at);

-- The visible tenants with jobs today and their use: one pass over the
-- jobs created today (job_created_idx), by tenant, and the deleted ones.
CREATE FUNCTION hasched.tenant_use_today() RETURNS TABLE (tenant name, used bigint)
	LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
	WITH day AS (SELECT (now() AT TIME ZONE 'UTC')::date AS d),
	present AS (SELECT pg_get_userbyid(j.tenant) AS tenant, count(*) AS used
				  FROM hasched.job j, day
				 WHERE j.created_at >= (day.d::timestamp AT TIME ZONE 'UTC')
				   AND j.created_at < ((day.d + 1)::timestamp AT TIME ZONE 'UTC')
				   AND j.tenant <> 0::oid::regrole
				 GROUP BY j.tenant),
	deleted AS (SELECT u.tenant, sum(u.used) AS used
				  FROM hasched.quota_use u, day WHERE u.day = day.d
				 GROUP BY u.tenant),
	c AS (SELECT coalesce(p.tenant, d.tenant) AS tenant,
				 (coalesce(p.used, 0) + coalesce(d.used, 0))::bigint AS used
			FROM present p FULL JOIN deleted d ON d.tenant = p.tenant)
	SELECT c.tenant, c.used FROM c
	 WHERE c.used > 0 AND hasched.tenant_visible(c.tenant)
$$;
COMMENT ON FUNCTION hasched.tenant_use_today() IS
	'The tenants you may see that have jobs today (UTC), with their use: jobs created today, deleted ones included.';

CREATE OR REPLACE VIEW hasched.tenants WITH (security_invoker = true) AS
WITH u AS (SELECT * FROM hasched.tenant_use_today())
SELECT r.rolname AS tenant,
	   coalesce(t.tier, pg_catalog.current_setting('hasched.default_tier')) AS tier,
	   coalesce(t.jobs_per_day, tr.jobs_per_day) AS jobs_per_day,
	   coalesce(u.used, 0)::bigint AS used_today,
	   coalesce(t.rate_per_second, tr.rate_per_second) AS rate_per_second,
	   coalesce(t.burst, tr.burst) AS burst
  FROM (SELECT name AS rolname FROM hasched.tenant
		UNION
		SELECT u.tenant FROM u) r
  LEFT JOIN u ON u.tenant = r.rolname
  LEFT JOIN hasched.tenant t ON t.name = r.rolname
  LEFT JOIN hasched.tier tr ON tr.name = coalesce(t.tier, pg_catalog.current_setting('hasched.default_tier'))
 WHERE hasched.tenant_visible(r.rolname);

REVOKE ALL ON FUNCTION hasched.config_changed(), hasched.count_deleted_jobs(),
	hasched.tenant_use_today() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hasched.tenant_use_today()
	TO hasched_submitter, hasched_worker, hasched_admin;

/* ------------------------------------------------------------------------
 * Executors and bounds: timeouts, leases and retry delays at most
 * hasched.max_timeout; a queue beyond it is refused (JQ013).
 * ------------------------------------------------------------------------ */
CREATE FUNCTION hasched.queue_check_trigger() RETURNS trigger
	LANGUAGE c AS 'MODULE_PATHNAME', 'hasched_queue_check_trigger';
REVOKE ALL ON FUNCTION hasched.queue_check_trigger() FROM PUBLIC;
COMMENT ON FUNCTION hasched.queue_check_trigger() IS
	'Refuses a queue whose default_timeout, lease, backoff_base or backoff_max is longer than hasched.max_timeout (JQ013).';
CREATE TRIGGER hasched_queue_check
	BEFORE INSERT OR UPDATE OF default_timeout, lease, backoff_base, backoff_max ON hasched.queue
	FOR EACH ROW EXECUTE FUNCTION hasched.queue_check_trigger();

/* ------------------------------------------------------------------------
 * Claims (issue 7): the state trigger sees every UPDATE of a job
 *
 * A hand UPDATE of a waiting job's queue (or payload, or anything else)
 * holds the row locked while claims may pass it; the trigger now fires for
 * every UPDATE so that claim.c can reset the cursors it may have passed.
 * ------------------------------------------------------------------------ */
DROP TRIGGER hasched_job_state ON hasched.job;
CREATE TRIGGER hasched_job_state
	BEFORE INSERT OR UPDATE ON hasched.job
	FOR EACH ROW EXECUTE FUNCTION hasched.job_state_trigger();
COMMENT ON FUNCTION hasched.job_state_trigger() IS
	'Checks every job state transition against the state machine, keeps run_at of waiting jobs no earlier than the moment they become claimable, and tells the claim cursors about changes to waiting jobs.';

/* ------------------------------------------------------------------------
 * Graceful degradation and measured availability (issue 11, items 3 and 4)
 *
 * - Pausing one queue: hasched.pause_queue(name, reason) and
 *   hasched.resume_queue(name); claims and executors skip a paused queue,
 *   submits to it are accepted.  The queues view shows it.
 * - The automatic read-only mode and the priority hold-back live in the
 *   scheduler's shared memory (src/core/degrade.c); each begin and end is
 *   an event (kinds read_only_auto and holdback).
 * - The scheduler's heartbeat: hasched.epoch.last_round_at
 *   (src/core/availability.c); hasched.availability(since, until).
 * ------------------------------------------------------------------------ */
ALTER TABLE hasched.queue
	ADD COLUMN paused_at timestamptz,
	ADD COLUMN pause_reason text,
	ADD COLUMN paused_by name;
COMMENT ON COLUMN hasched.queue.paused_at IS
	'When hasched.pause_queue() paused the queue (NULL: not paused). Claims and executors hand out none of its jobs; submits to it are accepted.';
COMMENT ON COLUMN hasched.queue.pause_reason IS
	'The reason given to hasched.pause_queue().';
COMMENT ON COLUMN hasched.queue.paused_by IS
	'The session user who paused the queue.';

-- a paused default queue is no longer as shipped: pg_dump keeps it
CREATE OR REPLACE FUNCTION hasched._as_shipped(q hasched.queue) RETURNS boolean
	LANGUAGE sql IMMUTABLE PARALLEL SAFE
	SET search_path = pg_catalog, pg_temp
AS $$
	SELECT (q.name, q.transport, q.concurrency, q.default_timeout, q.default_max_attempts,
			q.lease, q.backoff_base, q.backoff_max, q.paused_at)
		IS NOT DISTINCT FROM ('default'::text, 'pull'::text, 0, interval '5 minutes', 3,
							  interval '30 seconds', interval '1 second', interval '1 hour',
							  NULL::timestamptz)
$$;

CREATE FUNCTION hasched.pause_queue(queue text, reason text DEFAULT NULL)
RETURNS boolean
	LANGUAGE plpgsql SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	was timestamptz;
BEGIN
	IF queue IS NULL THEN
		RAISE EXCEPTION 'queue must not be null'
			USING ERRCODE = 'JQ013',
				  HINT = 'Name the queue to pause, as in SELECT name FROM hasched.queues.';
	END IF;
	IF pg_is_in_recovery() THEN
		RAISE EXCEPTION 'cannot pause a queue on a standby'
			USING ERRCODE = 'JQ004',
				  DETAIL = 'This server is in recovery; hasched accepts writes only on the primary.',
				  HINT = 'Connect to the primary, for example with target_session_attrs=read-write.';
	END IF;
	SELECT q.paused_at INTO was FROM hasched.queue q WHERE q.name = pause_queue.queue FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'queue "%" does not exist', queue
			USING ERRCODE = 'JQ010',
				  HINT = 'See SELECT name FROM hasched.queues for the queues.';
	END IF;
	IF was IS NOT NULL THEN
		-- already paused: only the reason changes
		UPDATE hasched.queue q SET pause_reason = coalesce(pause_queue.reason, q.pause_reason)
		 WHERE q.name = pause_queue.queue;
		RETURN false;
	END IF;
	UPDATE hasched.queue q
	   SET paused_at = clock_timestamp(), pause_reason = pause_queue.reason, paused_by = session_user
	 WHERE q.name = pause_queue.queue;
	INSERT INTO hasched.event (kind, detail)
	VALUES ('queue_paused', jsonb_build_object('queue', queue, 'reason', reason, 'by', session_user));
	RETURN true;
END
$$;
COMMENT ON FUNCTION hasched.pause_queue(text, text) IS
	'Pause one queue: claims and executors hand out none of its jobs (running ones go on), submits to it are still accepted. Returns false when it was paused already (the reason is updated). Resume with hasched.resume_queue().';

CREATE FUNCTION hasched.resume_queue(queue text)
RETURNS boolean
	LANGUAGE plpgsql SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	was timestamptz;
BEGIN
	IF queue IS NULL THEN
		RAISE EXCEPTION 'queue must not be null'
			USING ERRCODE = 'JQ013',
				  HINT = 'Name the queue to resume, as in SELECT name FROM hasched.queues WHERE paused.';
	END IF;
	IF pg_is_in_recovery() THEN
		RAISE EXCEPTION 'cannot resume a queue on a standby'
			USING ERRCODE = 'JQ004',
				  DETAIL = 'This server is in recovery; hasched accepts writes only on the primary.',
				  HINT = 'Connect to the primary, for example with target_session_attrs=read-write.';
	END IF;
	SELECT q.paused_at INTO was FROM hasched.queue q WHERE q.name = resume_queue.queue FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'queue "%" does not exist', queue
			USING ERRCODE = 'JQ010',
				  HINT = 'See SELECT name FROM hasched.queues for the queues.';
	END IF;
	IF was IS NULL THEN
		RETURN false;
	END IF;
	UPDATE hasched.queue q SET paused_at = NULL, pause_reason = NULL, paused_by = NULL
	 WHERE q.name = resume_queue.queue;
	INSERT INTO hasched.event (kind, detail)
	VALUES ('queue_resumed', jsonb_build_object('queue', queue, 'by', session_user,
				'paused_at', was, 'seconds', extract(epoch FROM clock_timestamp() - was)));
	-- its due jobs are claimable again: wake the executors and pull workers
	PERFORM hasched._wake_workers();
	RETURN true;
END
$$;
COMMENT ON FUNCTION hasched.resume_queue(text) IS
	'Resume a queue paused with hasched.pause_queue(); returns false when it was not paused.';
REVOKE ALL ON FUNCTION hasched.pause_queue(text, text), hasched.resume_queue(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hasched.pause_queue(text, text), hasched.resume_queue(text) TO hasched_admin;

CREATE OR REPLACE VIEW hasched.queues WITH (security_invoker = true) AS
SELECT q.name, q.transport, q.concurrency,
	   coalesce(c.pending, 0) AS pending,
	   coalesce(c.scheduled, 0) AS scheduled,
	   coalesce(c.retrying, 0) AS retrying,
	   coalesce(c.running, 0) AS running,
	   pg_catalog.now() - c.oldest_due AS oldest_pending_age,
	   q.paused_at IS NOT NULL AS paused,
	   q.paused_at, q.pause_reason
  FROM hasched.queue q
  LEFT JOIN (
	SELECT j.queue,
		   count(*) FILTER (WHERE j.state IN ('scheduled', 'pending') AND j.run_at <= pg_catalog.now()) AS pending,
		   count(*) FILTER (WHERE j.state IN ('scheduled', 'pending') AND j.run_at > pg_catalog.now()) AS scheduled,
		   count(*) FILTER (WHERE j.state = 'failed') AS retrying,
		   count(*) FILTER (WHERE j.state IN ('running', 'dispatched')) AS running,
		   min(j.run_at) FILTER (WHERE j.state IN ('scheduled', 'pending', 'failed') AND j.run_at <= pg_catalog.now()) AS oldest_due
	  FROM hasched.job j
	 -- the two sets of the partial indexes job_waiting_idx and job_active_idx:
	 -- a bitmap OR of both, not a scan of the finished jobs
	 WHERE j.state IN ('scheduled', 'pending', 'failed') OR j.state IN ('running', 'dispatched')
	 GROUP BY j.queue) c ON c.queue = q.name;
COMMENT ON VIEW hasched.queues IS
	'Queues with depth: pending (due now), scheduled (future), retrying (waiting out a backoff), running, the age of the oldest due job, and whether hasched.pause_queue() paused it (since when, why).';

ALTER TABLE hasched.epoch ADD COLUMN last_round_at timestamptz;
COMMENT ON COLUMN hasched.epoch.last_round_at IS
	'The latest round of the primary''s scheduler in this epoch (its heartbeat, written about once a second, asynchronously). From it to the next epoch''s started_at no primary scheduled: hasched.availability() counts that as downtime.';

CREATE FUNCTION hasched.availability(since timestamptz, until timestamptz DEFAULT pg_catalog.now())
RETURNS TABLE (measured_from timestamptz, measured_until timestamptz, uptime_pct numeric, downtime interval,
			   slo_target numeric, error_budget interval, error_budget_left interval,
			   error_budget_left_pct numeric, incidents jsonb)
	LANGUAGE plpgsql STABLE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	w_from timestamptz := availability.since;
	w_to timestamptz;
	gap interval := greatest(interval '5 seconds',
		3 * pg_catalog.current_setting('hasched.scheduler_naptime')::interval);
	target numeric := pg_catalog.current_setting('hasched.slo_target')::numeric;
	total interval;
	down interval;
	list jsonb;
BEGIN
	IF availability.since IS NULL OR availability.until IS NULL THEN
		RAISE EXCEPTION 'availability() needs both since and until'
			USING ERRCODE = 'JQ025',
				  DETAIL = pg_catalog.format('since is %s, until is %s.',
						coalesce(availability.since::text, 'NULL'), coalesce(availability.until::text, 'NULL')),
				  HINT = 'For example: SELECT * FROM hasched.availability(now() - interval ''30 days'', now()).';
	END IF;
	IF availability.until <= availability.since THEN
		RAISE EXCEPTION 'until (%) must be after since (%)', availability.until, availability.since
			USING ERRCODE = 'JQ025',
				  HINT = 'Swap the two, or widen the window.';
	END IF;
	IF availability.since >= pg_catalog.now() THEN
		RAISE EXCEPTION 'since (%) is not in the past: nothing has been measured yet', availability.since
			USING ERRCODE = 'JQ025',
				  HINT = 'Give a window that begins before now().';
	END IF;
	-- measured up to now at most
	w_to := least(availability.until, pg_catalog.now());
	total := w_to - w_from;

	WITH ep AS (
		SELECT e.epoch, e.started_at, e.last_round_at, e.fencing_token,
			   lead(e.started_at) OVER (ORDER BY e.epoch) AS next_start,
			   lead(e.epoch) OVER (ORDER BY e.epoch) AS next_epoch,
			   lead(e.fencing_token) OVER (ORDER BY e.epoch) AS next_token
		  FROM hasched.epoch e),
	raw AS (
		-- between epochs: the last round of the old one to the first of the new
		SELECT CASE WHEN ep.next_token IS NOT NULL THEN 'no_leader' ELSE 'no_primary' END AS kind,
			   ep.last_round_at AS s, ep.next_start AS e,
			   jsonb_build_object('from_epoch', ep.epoch, 'to_epoch', ep.next_epoch,
					'inferred', 'from the last scheduler round of epoch ' || ep.epoch
								|| ' to the first of epoch ' || ep.next_epoch) AS detail
		  FROM ep
		 WHERE ep.next_start IS NOT NULL AND ep.last_round_at IS NOT NULL
		   AND ep.last_round_at < ep.next_start
		UNION ALL
		-- the latest epoch: no round lately (asked on a standby, or the scheduler is down)
		SELECT 'no_round', ep.last_round_at, pg_catalog.now(),
			   jsonb_build_object('epoch', ep.epoch, 'ongoing', true,
					'inferred', 'no scheduler round since the last heartbeat of epoch ' || ep.epoch)
		  FROM ep
		 WHERE ep.next_start IS NULL AND ep.last_round_at < pg_catalog.now() - gap
		UNION ALL
		-- within an epoch: gaps between heartbeats the scheduler found
		SELECT 'scheduler_down', (ev.detail->>'from')::timestamptz, (ev.detail->>'until')::timestamptz,
			   ev.detail
		  FROM hasched.event ev WHERE ev.kind = 'scheduler_down'
		UNION ALL
		-- the manual mode (set_mode): read_only and paused
		SELECT m.mode, m.s, m.e, m.detail
		  FROM (SELECT ev.detail->>'mode' AS mode, ev.at AS s,
					   coalesce(lead(ev.at) OVER (ORDER BY ev.at, ev.id), pg_catalog.now()) AS e,
					   ev.detail
				  FROM hasched.event ev WHERE ev.kind = 'mode') m
		 WHERE m.mode IN ('read_only', 'paused')
		UNION ALL
		-- the automatic read-only mode: enter to the next event of its kind
		SELECT 'read_only_auto', a.s, a.e, a.detail
		  FROM (SELECT ev.detail->>'action' AS action, ev.at AS s,
					   coalesce(lead(ev.at) OVER (ORDER BY ev.at, ev.id),
								(SELECT min(x.started_at) FROM hasched.epoch x
								  WHERE x.epoch > (ev.detail->>'epoch')::int),
								pg_catalog.now()) AS e,
					   ev.detail
				  FROM hasched.event ev WHERE ev.kind = 'read_only_auto') a
		 WHERE a.action = 'enter'),
	clipped AS (
		SELECT r.kind, greatest(r.s, w_from) AS s, least(r.e, w_to) AS e, r.detail
		  FROM raw r
		 WHERE r.s < w_to AND r.e > w_from AND r.s < r.e),
	ordered AS (
		SELECT c.s, c.e,
			   max(c.e) OVER (ORDER BY c.s, c.e ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS reach
		  FROM clipped c),
	grouped AS (
		SELECT o.s, o.e,
			   sum(CASE WHEN o.reach IS NULL OR o.s > o.reach THEN 1 ELSE 0 END)
				 OVER (ORDER BY o.s, o.e) AS grp
		  FROM ordered o),
	merged AS (
		SELECT min(g.s) AS s, max(g.e) AS e FROM grouped g GROUP BY g.grp)
	SELECT coalesce((SELECT sum(m.e - m.s) FROM merged m), interval '0'),
		   coalesce((SELECT jsonb_agg(jsonb_build_object('kind', c.kind, 'from', c.s, 'until', c.e,
						'seconds', round(extract(epoch FROM c.e - c.s)::numeric, 3),
						'detail', c.detail) ORDER BY c.s, c.e) FROM clipped c), '[]'::jsonb)
	  INTO down, list;

	RETURN QUERY SELECT w_from, w_to,
		round(100 * (1 - extract(epoch FROM down) / nullif(extract(epoch FROM total), 0)), 6),
		down, target,
		total * (1 - target / 100)::float8,
		total * (1 - target / 100)::float8 - down,
		round(100 * (1 - extract(epoch FROM down) / nullif(extract(epoch FROM total) * (1 - target / 100), 0)), 3),
		list;
END
$$;
COMMENT ON FUNCTION hasched.availability(timestamptz, timestamptz) IS
	'Measured availability over [since, until] (until at most now): uptime in percent, downtime (the union of the incidents), the error budget against hasched.slo_target and what is left of it, and the incidents (no_primary or no_leader between epochs: inferred from the last scheduler round of the old epoch to the first of the new; scheduler_down; read_only and paused by set_mode; read_only_auto; no_round: the latest heartbeat is old). Events are kept for hasched.history_retention.';
REVOKE ALL ON FUNCTION hasched.availability(timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hasched.availability(timestamptz, timestamptz) TO hasched_admin;

CREATE FUNCTION hasched.degradation()
RETURNS TABLE (read_only boolean, read_only_why text, read_only_since timestamptz,
			   overridden boolean, holdback boolean, holdback_since timestamptz,
			   backlog bigint, oldest_due timestamptz,
			   sync_lag interval, measured_at timestamptz)
	LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'hasched_degradation';
COMMENT ON FUNCTION hasched.degradation() IS
	'The automatic read-only mode (in force, why, since when; overridden by set_mode() until the signals fall below their exit thresholds), the priority hold-back, and the signals as the scheduler of this server last measured them (backlog of due jobs in queues not paused, from the job counts of health() and /metrics; the oldest of them; synchronous standby lag, or how long none was connected). From shared memory: answers on a standby too (nothing measured there).';
REVOKE ALL ON FUNCTION hasched.degradation() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hasched.degradation() TO hasched_admin;

/* ------------------------------------------------------------------------
 * RabbitMQ transport (issue 9): start() for jobs received from the broker
 *
 * The dispatcher publishes a job of an amqp queue with a new attempt and
 * lease token; the job is dispatched once the broker confirmed the message.
 * A worker that receives it calls start() with the message's token (the
 * AMQP contract, README "RabbitMQ transport").
 * ------------------------------------------------------------------------ */
CREATE FUNCTION hasched.start(job_id bigint, token text, worker text DEFAULT NULL)
RETURNS TABLE (payload jsonb, timeout interval, lease_until timestamptz)
	LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'hasched_start';
COMMENT ON FUNCTION hasched.start(bigint, text, text) IS
	'Start a job received from the broker with its lease token: a dispatched job becomes running (its lease from now), a running one under the same token renews its lease (a redelivery); no row when that attempt already ended with a recorded outcome (drop the message); JQ006 for any other token.';
REVOKE ALL ON FUNCTION hasched.start(bigint, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hasched.start(bigint, text, text) TO hasched_worker;

CREATE FUNCTION hasched.start(job_ids bigint[], tokens text[], worker text DEFAULT NULL)
RETURNS TABLE (job_id bigint, outcome text, state text, payload jsonb, timeout interval,
			   lease_until timestamptz)
	LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'hasched_start_many';
COMMENT ON FUNCTION hasched.start(bigint[], text[], text) IS
	'Start many jobs received from the broker in one statement: one row per message, in their order, with its outcome: run (payload, timeout, lease_until given), finished (that attempt already ended with a recorded outcome: drop the message) or stale (the token is not the job''s lease: drop it; state is the job''s state now, NULL when there is no such job). A stale token is an outcome here, not an error.';
REVOKE ALL ON FUNCTION hasched.start(bigint[], text[], text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hasched.start(bigint[], text[], text) TO hasched_worker;

/*
 * The dispatcher's circuit breakers (one per broker of hasched.amqp_url and
 * one per amqp queue), from this server's shared memory.
 */
CREATE FUNCTION hasched.circuits(OUT kind text, OUT name text, OUT state text,
	OUT since timestamptz, OUT window_calls bigint, OUT window_failures bigint,
	OUT failures bigint, OUT last_error text)
RETURNS SETOF record
	LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'hasched_circuits';
COMMENT ON FUNCTION hasched.circuits() IS
	'The RabbitMQ dispatcher''s circuit breakers of this server (shared memory): per broker and per amqp queue, their state (closed, open, half_open) since when, the calls and failures in the current window, failures since server start and the last error.';
REVOKE ALL ON FUNCTION hasched.circuits() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hasched.circuits() TO hasched_admin;
CREATE VIEW hasched.circuits WITH (security_invoker = true) AS
SELECT c.kind, c.name, c.state, c.since, c.window_calls, c.window_failures,
	c.failures, c.last_error FROM hasched.circuits() c;
COMMENT ON VIEW hasched.circuits IS
	'The RabbitMQ dispatcher''s circuit breakers (see hasched.circuits()); every transition is also an event (kind circuit) in hasched.event.';
REVOKE ALL ON hasched.circuits FROM PUBLIC;
GRANT SELECT ON hasched.circuits TO hasched_admin;

/* ========================================================================
 * Dispatch lease scan: an index on the dispatched jobs' epoch and lease
 * ======================================================================== */

/*
 * Every second the dispatcher ends the attempts of dispatched jobs that no
 * worker started within hasched.dispatch_lease, or that were dispatched
 * under an older epoch (before a failover).  job_active_idx leads with the
 * queue, so that scan read every running and dispatched job; this index
 * makes it two range scans: epoch < the current one (empty but right after
 * a failover), and the current epoch with lease_until < now.
 */
CREATE INDEX job_dispatched_idx ON hasched.job (epoch, lease_until)
	WHERE state = 'dispatched';
