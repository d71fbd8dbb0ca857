-- 01_schema.sql: the objects of the hasched schema and their shape.
--
-- Runs as the bootstrap superuser in a database where CREATE EXTENSION
-- pgtap, hasched has been done (scripts/pgtap.sh). Self-contained: all in
-- one transaction that is rolled back.
BEGIN;
SELECT plan(105);

-- ------------------------------------------------------------------------
-- Schema, tables, views, sequences (17)
-- ------------------------------------------------------------------------
SELECT has_schema('hasched', 'schema hasched exists');
SELECT has_table('hasched', 'tier', 'table hasched.tier exists');
SELECT has_table('hasched', 'tenant', 'table hasched.tenant exists');
SELECT has_table('hasched', 'queue', 'table hasched.queue exists');
SELECT has_table('hasched', 'state', 'table hasched.state exists');
SELECT has_table('hasched', 'epoch', 'table hasched.epoch exists');
SELECT has_table('hasched', 'job', 'table hasched.job exists');
SELECT has_table('hasched', 'job_run', 'table hasched.job_run exists');
SELECT has_table('hasched', 'event', 'table hasched.event exists');
SELECT has_table('hasched', 'quota_use', 'table hasched.quota_use exists');
SELECT has_view('hasched', 'jobs', 'view hasched.jobs exists');
SELECT has_view('hasched', 'queues', 'view hasched.queues exists');
SELECT has_view('hasched', 'tenants', 'view hasched.tenants exists');
SELECT has_sequence('hasched', 'job_id_seq', 'sequence hasched.job_id_seq exists');
SELECT has_sequence('hasched', 'lease_id_seq', 'sequence hasched.lease_id_seq exists');
-- a view over an RLS table that is not security_invoker runs as its owner
-- (the superuser) and would show every tenant's rows
SELECT is_empty(
	$$SELECT c.relname FROM pg_catalog.pg_class c
	   WHERE c.relnamespace = 'hasched'::regnamespace AND c.relkind = 'v'
		 AND NOT coalesce(c.reloptions @> ARRAY['security_invoker=true'], false)$$,
	'every view in schema hasched is security_invoker (RLS applies to the caller)');
SELECT is(
	(SELECT count(*)::int FROM pg_catalog.pg_class c
	  WHERE c.oid IN ('hasched.jobs'::regclass, 'hasched.queues'::regclass, 'hasched.tenants'::regclass)
		AND c.reloptions @> ARRAY['security_invoker=true']),
	3, 'jobs, queues and tenants views are security_invoker');

-- ------------------------------------------------------------------------
-- The job_state enum (3)
-- ------------------------------------------------------------------------
SELECT has_type('hasched', 'job_state', 'type hasched.job_state exists');
SELECT has_enum('hasched', 'job_state', 'hasched.job_state is an enum');
SELECT enum_has_labels('hasched', 'job_state',
	ARRAY['scheduled', 'pending', 'running', 'dispatched', 'succeeded', 'failed', 'dead', 'cancelled'],
	'hasched.job_state has the eight states, in order');

-- ------------------------------------------------------------------------
-- Functions: signatures and return types (26)
-- ------------------------------------------------------------------------
SELECT has_function('hasched', 'submit',
	ARRAY['text', 'jsonb', 'text', 'timestamp with time zone', 'text', 'integer', 'interval', 'name'],
	'submit(queue, payload, priority, run_at, idempotency_key, max_attempts, timeout, tenant) exists');
SELECT function_returns('hasched', 'submit',
	ARRAY['text', 'jsonb', 'text', 'timestamp with time zone', 'text', 'integer', 'interval', 'name'],
	'bigint', 'submit returns bigint');
SELECT has_function('hasched', 'submit_many',
	ARRAY['text', 'jsonb[]', 'text', 'timestamp with time zone', 'text[]', 'integer', 'interval', 'name'],
	'submit_many(queue, payloads[], ...) exists');
SELECT function_returns('hasched', 'submit_many',
	ARRAY['text', 'jsonb[]', 'text', 'timestamp with time zone', 'text[]', 'integer', 'interval', 'name'],
	'bigint[]', 'submit_many returns bigint[]');
SELECT has_function('hasched', 'claim', ARRAY['text', 'text', 'integer', 'interval'],
	'claim(queue, worker, max_jobs, lease) exists');
SELECT function_returns('hasched', 'claim', ARRAY['text', 'text', 'integer', 'interval'],
	'setof record', 'claim returns a set');
SELECT has_function('hasched', 'heartbeat', ARRAY['bigint', 'text', 'interval'],
	'heartbeat(job_id, token, lease) exists');
SELECT function_returns('hasched', 'heartbeat', ARRAY['bigint', 'text', 'interval'],
	'timestamp with time zone', 'heartbeat returns the new lease end');
SELECT has_function('hasched', 'complete', ARRAY['bigint', 'text', 'jsonb'],
	'complete(job_id, token, result) exists');
SELECT function_returns('hasched', 'complete', ARRAY['bigint', 'text', 'jsonb'],
	'void', 'complete returns void');
SELECT has_function('hasched', 'fail', ARRAY['bigint', 'text', 'text', 'boolean'],
	'fail(job_id, token, error, retry) exists');
SELECT function_returns('hasched', 'fail', ARRAY['bigint', 'text', 'text', 'boolean'],
	'hasched.job_state', 'fail returns the new job_state');
SELECT has_function('hasched', 'cancel', ARRAY['bigint'], 'cancel(job_id) exists');
SELECT function_returns('hasched', 'cancel', ARRAY['bigint'], 'boolean', 'cancel returns boolean');
SELECT has_function('hasched', 'retry', ARRAY['bigint'], 'retry(job_id) exists');
SELECT has_function('hasched', 'set_mode', ARRAY['text', 'text'], 'set_mode(mode, reason) exists');
SELECT function_returns('hasched', 'set_mode', ARRAY['text', 'text'], 'void', 'set_mode returns void');
SELECT has_function('hasched', 'requeue_expired', ARRAY[]::name[], 'requeue_expired() exists');
SELECT has_function('hasched', 'backoff_delay',
	ARRAY['integer', 'interval', 'interval', 'double precision'], 'backoff_delay(attempt, base, cap, jitter) exists');
SELECT has_function('hasched', 'tenant_visible', ARRAY['name'], 'tenant_visible(name) exists');
SELECT function_returns('hasched', 'tenant_visible', ARRAY['name'], 'boolean', 'tenant_visible returns boolean');
SELECT has_function('hasched', 'priority_value', ARRAY['text'], 'priority_value(text) exists');
SELECT has_function('hasched', 'priority_name', ARRAY['smallint'], 'priority_name(smallint) exists');
SELECT has_function('hasched', 'claim_cursors', ARRAY[]::name[], 'claim_cursors() exists');
SELECT has_function('hasched', 'job_state_trigger', ARRAY[]::name[], 'job_state_trigger() exists');
SELECT function_returns('hasched', 'job_state_trigger', ARRAY[]::name[], 'trigger', 'job_state_trigger is a trigger function');

-- ------------------------------------------------------------------------
-- SECURITY DEFINER functions pin a safe search_path (5)
-- ------------------------------------------------------------------------
SELECT is_definer('hasched', 'set_mode', ARRAY['text', 'text'], 'set_mode is SECURITY DEFINER');
SELECT is_empty(
	$$SELECT p.oid::regprocedure::text
		FROM pg_catalog.pg_proc p
	   WHERE p.pronamespace = 'hasched'::regnamespace AND p.prosecdef
		 AND NOT EXISTS (SELECT 1 FROM pg_catalog.unnest(p.proconfig) c
						  WHERE c LIKE 'search_path=%')$$,
	'every SECURITY DEFINER function in hasched has search_path in proconfig');
-- pinned means: only trusted schemas, and pg_temp named explicitly and last
-- (unnamed, pg_temp is searched first for tables and types)
SELECT is_empty(
	$$SELECT p.oid::regprocedure::text || ': ' || c
		FROM pg_catalog.pg_proc p, pg_catalog.unnest(p.proconfig) c
	   WHERE p.pronamespace = 'hasched'::regnamespace AND p.prosecdef
		 AND c LIKE 'search_path=%'
		 AND (EXISTS (SELECT 1 FROM pg_catalog.unnest(pg_catalog.string_to_array(
							pg_catalog.replace(pg_catalog.substr(c, 13), ' ', ''), ',')) s
					   WHERE s NOT IN ('pg_catalog', 'pg_temp', 'hasched'))
			  OR pg_catalog.replace(c, ' ', '') NOT LIKE '%,pg_temp')$$,
	'SECURITY DEFINER functions pin search_path to pg_catalog/hasched with pg_temp last');
SELECT is_empty(
	$$SELECT p.oid::regprocedure::text
		FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang
	   WHERE p.pronamespace = 'hasched'::regnamespace AND p.prosecdef
		 AND l.lanname IN ('c', 'plpgsql', 'sql')
		 AND p.proconfig IS NULL$$,
	'no C, plpgsql or SQL SECURITY DEFINER function in hasched lacks proconfig');
SELECT ok(
	(SELECT 'search_path=pg_catalog, pg_temp' = ANY (p.proconfig)
	   FROM pg_catalog.pg_proc p WHERE p.oid = 'hasched.set_mode(text, text)'::regprocedure),
	'set_mode pins search_path = pg_catalog, pg_temp');

-- ------------------------------------------------------------------------
-- hasched.job: key columns and types (21)
-- ------------------------------------------------------------------------
SELECT col_is_pk('hasched', 'job', 'id', 'job.id is the primary key');
SELECT col_type_is('hasched', 'job', 'id', 'bigint', 'job.id is bigint');
SELECT col_type_is('hasched', 'job', 'queue', 'text', 'job.queue is text');
SELECT col_type_is('hasched', 'job', 'tenant', 'regrole', 'job.tenant is regrole (bound to the role, not its name)');
SELECT col_type_is('hasched', 'job', 'owner', 'regrole', 'job.owner is regrole (bound to the role, not its name)');
SELECT col_type_is('hasched', 'job', 'priority', 'smallint', 'job.priority is smallint');
SELECT col_type_is('hasched', 'job', 'state', 'hasched.job_state', 'job.state is hasched.job_state');
SELECT col_type_is('hasched', 'job', 'run_at', 'timestamp with time zone', 'job.run_at is timestamptz');
SELECT col_type_is('hasched', 'job', 'attempt', 'integer', 'job.attempt is integer');
SELECT col_type_is('hasched', 'job', 'max_attempts', 'integer', 'job.max_attempts is integer');
SELECT col_type_is('hasched', 'job', 'timeout', 'interval', 'job.timeout is interval');
SELECT col_type_is('hasched', 'job', 'idempotency_key', 'text', 'job.idempotency_key is text');
SELECT col_type_is('hasched', 'job', 'epoch', 'integer', 'job.epoch is integer');
SELECT col_type_is('hasched', 'epoch', 'fencing_token', 'bigint', 'epoch.fencing_token is bigint (the ZooKeeper leader''s token)');
SELECT col_type_is('hasched', 'job', 'lease_id', 'bigint', 'job.lease_id is bigint');
SELECT col_type_is('hasched', 'job', 'lease_until', 'timestamp with time zone', 'job.lease_until is timestamptz');
SELECT col_type_is('hasched', 'job', 'payload', 'jsonb', 'job.payload is jsonb');
SELECT col_type_is('hasched', 'job', 'result', 'jsonb', 'job.result is jsonb');
SELECT col_type_is('hasched', 'job', 'last_error', 'text', 'job.last_error is text');
SELECT col_not_null('hasched', 'job', 'tenant', 'job.tenant is NOT NULL');
SELECT col_not_null('hasched', 'job', 'owner', 'job.owner is NOT NULL');
SELECT col_not_null('hasched', 'job', 'payload', 'job.payload is NOT NULL');

-- ------------------------------------------------------------------------
-- Indexes and the state trigger on hasched.job (8)
-- ------------------------------------------------------------------------
SELECT has_index('hasched', 'job', 'job_waiting_idx', ARRAY['queue', 'priority', 'run_at', 'id'],
	'claim index job_waiting_idx on (queue, priority, run_at, id)');
SELECT ok(
	(SELECT i.indpred IS NOT NULL FROM pg_catalog.pg_index i
	  WHERE i.indexrelid = 'hasched.job_waiting_idx'::regclass),
	'job_waiting_idx is a partial index');
SELECT matches(
	(SELECT pg_catalog.pg_get_expr(i.indpred, i.indrelid) FROM pg_catalog.pg_index i
	  WHERE i.indexrelid = 'hasched.job_waiting_idx'::regclass),
	'scheduled.*pending.*failed',
	'job_waiting_idx holds the waiting states scheduled, pending, failed');
SELECT doesnt_match(
	(SELECT pg_catalog.pg_get_expr(i.indpred, i.indrelid) FROM pg_catalog.pg_index i
	  WHERE i.indexrelid = 'hasched.job_waiting_idx'::regclass),
	'running|dispatched|succeeded|dead|cancelled',
	'job_waiting_idx leaves out running and finished jobs');
SELECT has_index('hasched', 'job', 'job_idempotency_idx', ARRAY['tenant', 'idempotency_key'],
	'idempotency index on (tenant, idempotency_key): keys are per tenant');
SELECT index_is_unique('hasched', 'job', 'job_idempotency_idx', 'job_idempotency_idx is unique');
SELECT is((SELECT am.amname::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_am am ON am.oid = c.relam
	  WHERE c.oid = 'hasched.job_created_idx'::regclass), 'brin',
	'jobs by creation time: a BRIN index on created_at (a claim or report adds no entry to it)');
SELECT hasnt_index('hasched', 'job', 'job_tenant_idx', 'no B-tree on (tenant, created_at): 0.1.0''s is dropped');
SELECT has_trigger('hasched', 'job', 'hasched_job_state', 'state trigger hasched_job_state exists');
SELECT trigger_is('hasched', 'job', 'hasched_job_state', 'hasched', 'job_state_trigger',
	'hasched_job_state calls hasched.job_state_trigger()');

-- ------------------------------------------------------------------------
-- Other key columns (5)
-- ------------------------------------------------------------------------
SELECT col_is_pk('hasched', 'quota_use', ARRAY['tenant', 'day', 'shard'],
	'quota_use primary key is (tenant, day, shard)');
SELECT col_type_is('hasched', 'tenant', 'name', 'name', 'tenant.name is name (a role name)');
SELECT col_is_pk('hasched', 'tenant', 'name', 'tenant.name is the primary key');
SELECT col_type_is('hasched', 'tier', 'jobs_per_day', 'bigint', 'tier.jobs_per_day is bigint');
SELECT col_type_is('hasched', 'job_run', 'job_id', 'bigint', 'job_run.job_id is bigint');

-- ------------------------------------------------------------------------
-- Row-level security (8)
-- ------------------------------------------------------------------------
SELECT ok((SELECT relrowsecurity FROM pg_catalog.pg_class WHERE oid = 'hasched.job'::regclass),
	'RLS is enabled on hasched.job');
SELECT ok((SELECT relrowsecurity FROM pg_catalog.pg_class WHERE oid = 'hasched.job_run'::regclass),
	'RLS is enabled on hasched.job_run');
SELECT ok((SELECT relrowsecurity FROM pg_catalog.pg_class WHERE oid = 'hasched.quota_use'::regclass),
	'RLS is enabled on hasched.quota_use');
SELECT ok((SELECT relrowsecurity FROM pg_catalog.pg_class WHERE oid = 'hasched.tenant'::regclass),
	'RLS is enabled on hasched.tenant');
SELECT policy_cmd_is('hasched', 'job', 'job_tenant', 'select',
	'the tenant policy on hasched.job is for SELECT only');
SELECT ok(
	(SELECT pol.polroles = ARRAY[0::oid] FROM pg_catalog.pg_policy pol
	  WHERE pol.polrelid = 'hasched.job'::regclass AND pol.polname = 'job_tenant'),
	'the tenant policy on hasched.job applies to everyone (PUBLIC)');
SELECT policy_roles_are('hasched', 'job', 'admin_all', ARRAY['hasched_admin'],
	'the unrestricted policy on hasched.job applies to hasched_admin only');
SELECT is_empty(
	$$SELECT pol.polname FROM pg_catalog.pg_policy pol
	   WHERE pol.polrelid = 'hasched.job'::regclass
		 AND pol.polcmd <> 'r'
		 AND NOT (pol.polroles = ARRAY['hasched_admin'::regrole::oid])$$,
	'no policy on hasched.job other than the admin one allows writes');

-- ------------------------------------------------------------------------
-- Default configuration rows (6)
-- ------------------------------------------------------------------------
SELECT results_eq(
	$$SELECT name, jobs_per_day FROM hasched.tier
	   WHERE name IN ('free', 'pro', 'enterprise') ORDER BY name$$,
	$$VALUES ('enterprise'::text, NULL::bigint), ('free', 100), ('pro', 10000)$$,
	'default tiers: free 100/day, pro 10000/day, enterprise unlimited');
SELECT is((SELECT rate_per_second FROM hasched.tier WHERE name = 'enterprise'), NULL::double precision,
	'enterprise has no rate limit');
SELECT ok((SELECT rate_per_second IS NOT NULL AND burst >= 1 FROM hasched.tier WHERE name = 'free'),
	'free has a rate limit with a burst');
SELECT results_eq($$SELECT name, transport FROM hasched.queue WHERE name = 'default'$$,
	$$VALUES ('default'::text, 'pull'::text)$$, 'queue default exists and is a pull queue');
SELECT results_eq($$SELECT mode FROM hasched.state$$, $$VALUES ('normal'::text)$$,
	'one state row, mode normal');
SELECT ok(EXISTS (SELECT 1 FROM hasched.epoch WHERE epoch = 1), 'epoch 1 recorded at creation');

-- ------------------------------------------------------------------------
-- The three roles (3)
-- ------------------------------------------------------------------------
SELECT has_role('hasched_admin', 'role hasched_admin exists');
SELECT has_role('hasched_submitter', 'role hasched_submitter exists');
SELECT has_role('hasched_worker', 'role hasched_worker exists');

SELECT * FROM finish();
ROLLBACK;
