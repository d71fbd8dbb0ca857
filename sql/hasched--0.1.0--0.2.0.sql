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
