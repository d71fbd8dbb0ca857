/*
 * hasched--0.1.0--0.2.0.sql
 *		Upgrade from 0.1.0 (released) to 0.2.0.  A fresh CREATE EXTENSION
 *		hasched runs hasched--0.1.0.sql and then this script, so a fresh
 *		install and an upgraded one have the same schema (test/t tests it).
 *
 * Each change is a section of its own, under a header naming its topic.
 */

\echo Use "ALTER EXTENSION hasched UPDATE TO '0.2.0'" to load this file. \quit

/* ------------------------------------------------------------------------
 * Pull workers: LISTEN/NOTIFY wake-ups (hasched.listen) and idempotent
 * reports (hasched-worker, issue 9)
 * ------------------------------------------------------------------------ */
CREATE FUNCTION hasched.listen(queue text)
RETURNS text
	LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'hasched_listen';
COMMENT ON FUNCTION hasched.listen(text) IS
	'LISTEN for jobs of a pull queue: from the commit of this transaction on, a transaction that makes jobs of the queue due sends a NOTIFY on the returned channel when it commits. Jobs due later are not notified: poll for them.';
REVOKE ALL ON FUNCTION hasched.listen(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hasched.listen(text) TO hasched_worker;

COMMENT ON FUNCTION hasched.complete(bigint, text, jsonb) IS
	'Record the success of a leased job, exactly once: a stale token is refused (SQLSTATE JQ006) and changes nothing. Idempotent: repeated with the token whose success was recorded (a lost reply), it succeeds and changes nothing.';
COMMENT ON FUNCTION hasched.complete(bigint[], text[], jsonb[]) IS
	'Record the success of many leased jobs in one statement; returns how many. All or nothing: one stale token (SQLSTATE JQ006, the detail names the jobs) records none. Jobs that already succeeded under the same tokens count as recorded.';
COMMENT ON FUNCTION hasched.fail(bigint, text, text, boolean) IS
	'Record a failed attempt: the job retries after exponential backoff with jitter (state failed) until max_attempts, then it is dead; retry => false makes it dead at once. Returns the new state. Idempotent: repeated with the token whose failure was recorded, it changes nothing and returns the job''s state now.';
