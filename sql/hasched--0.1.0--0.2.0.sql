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
	served text := pg_catalog.current_setting('hasched.database', true);
	here text := pg_catalog.current_database();
BEGIN
	IF served IS NULL THEN
		RAISE EXCEPTION 'hasched is not loaded in this server'
			USING ERRCODE = 'JQ023',
				  DETAIL = 'The setting hasched.database is not defined: the hasched library is not in shared_preload_libraries.',
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
