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
