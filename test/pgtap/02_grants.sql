-- 02_grants.sql: who may execute what, and who may write the tables.
--
-- Runs as the bootstrap superuser (scripts/pgtap.sh). Roles made here are
-- created inside the transaction and rolled back with it.
BEGIN;
SELECT plan(100);

-- ------------------------------------------------------------------------
-- The three roles (8)
-- ------------------------------------------------------------------------
SELECT has_role('hasched_admin', 'role hasched_admin exists');
SELECT has_role('hasched_submitter', 'role hasched_submitter exists');
SELECT has_role('hasched_worker', 'role hasched_worker exists');
SELECT is_member_of('hasched_submitter', ARRAY['hasched_admin'], 'hasched_admin is a member of hasched_submitter');
SELECT is_member_of('hasched_worker', ARRAY['hasched_admin'], 'hasched_admin is a member of hasched_worker');
SELECT is_empty(
	$$SELECT rolname FROM pg_catalog.pg_roles
	   WHERE rolname IN ('hasched_admin', 'hasched_submitter', 'hasched_worker')
		 AND (rolsuper OR rolcanlogin OR rolcreaterole OR rolcreatedb OR rolbypassrls)$$,
	'the hasched roles are plain NOLOGIN group roles (no superuser, createrole, createdb, bypassrls)');
SELECT ok(NOT pg_catalog.pg_has_role('hasched_submitter', 'hasched_worker', 'MEMBER'),
	'hasched_submitter is not a member of hasched_worker');
SELECT ok(NOT pg_catalog.pg_has_role('hasched_worker', 'hasched_submitter', 'MEMBER'),
	'hasched_worker is not a member of hasched_submitter');

-- ------------------------------------------------------------------------
-- EXECUTE on the API: a matrix of (role, function, expected) (40)
-- ------------------------------------------------------------------------
CREATE TEMP TABLE sig (fn name PRIMARY KEY, args name[] NOT NULL);
INSERT INTO sig VALUES
	('submit', ARRAY['text', 'jsonb', 'text', 'timestamp with time zone', 'text', 'integer', 'interval', 'name']),
	('submit_many', ARRAY['text', 'jsonb[]', 'text', 'timestamp with time zone', 'text[]', 'integer', 'interval', 'name']),
	('cancel', ARRAY['bigint']),
	('retry', ARRAY['bigint']),
	('claim', ARRAY['text', 'text', 'integer', 'interval']),
	('heartbeat', ARRAY['bigint', 'text', 'interval']),
	('complete', ARRAY['bigint', 'text', 'jsonb']),
	('fail', ARRAY['bigint', 'text', 'text', 'boolean']),
	('set_mode', ARRAY['text', 'text']),
	('requeue_expired', ARRAY[]::name[]),
	('claim_cursors', ARRAY[]::name[]);

SELECT function_privs_are('hasched', m.fn, (SELECT s.args FROM sig s WHERE s.fn = m.fn), m.role,
		CASE WHEN m.can THEN ARRAY['EXECUTE'] ELSE ARRAY[]::name[] END,
		pg_catalog.format('%s %s execute hasched.%s', m.role, CASE WHEN m.can THEN 'can' ELSE 'cannot' END, m.fn))
  FROM (VALUES
	-- PUBLIC: nothing of the API
	('public'::name, 'submit'::name, false),
	('public', 'submit_many', false),
	('public', 'cancel', false),
	('public', 'retry', false),
	('public', 'claim', false),
	('public', 'heartbeat', false),
	('public', 'complete', false),
	('public', 'fail', false),
	('public', 'set_mode', false),
	('public', 'requeue_expired', false),
	-- submitters submit and manage their jobs; they do not take work or change the mode
	('hasched_submitter', 'submit', true),
	('hasched_submitter', 'submit_many', true),
	('hasched_submitter', 'cancel', true),
	('hasched_submitter', 'retry', true),
	('hasched_submitter', 'claim', false),
	('hasched_submitter', 'heartbeat', false),
	('hasched_submitter', 'complete', false),
	('hasched_submitter', 'fail', false),
	('hasched_submitter', 'set_mode', false),
	-- workers take work and report on it; they do not submit or change the mode
	('hasched_worker', 'claim', true),
	('hasched_worker', 'heartbeat', true),
	('hasched_worker', 'complete', true),
	('hasched_worker', 'fail', true),
	('hasched_worker', 'submit', false),
	('hasched_worker', 'submit_many', false),
	('hasched_worker', 'set_mode', false),
	('hasched_worker', 'requeue_expired', false),
	-- admins do everything (directly or through membership)
	('hasched_admin', 'submit', true),
	('hasched_admin', 'submit_many', true),
	('hasched_admin', 'cancel', true),
	('hasched_admin', 'retry', true),
	('hasched_admin', 'claim', true),
	('hasched_admin', 'heartbeat', true),
	('hasched_admin', 'complete', true),
	('hasched_admin', 'fail', true),
	('hasched_admin', 'set_mode', true),
	('hasched_admin', 'requeue_expired', true),
	('hasched_admin', 'claim_cursors', true)
  ) AS m (role, fn, can);

-- PUBLIC executes only the harmless helpers and the health report
SELECT is(
	(SELECT pg_catalog.array_agg(p.proname::text ORDER BY p.proname)
	   FROM pg_catalog.pg_proc p
	  WHERE p.pronamespace = 'hasched'::regnamespace
		AND EXISTS (SELECT 1 FROM pg_catalog.aclexplode(coalesce(p.proacl,
						pg_catalog.acldefault('f', p.proowner))) a
					 WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')),
	ARRAY['backoff_delay', 'health', 'priority_name', 'priority_value', 'schedule_next', 'tenant_visible', 'tenant_visible'],
	'PUBLIC executes only backoff_delay, health, priority_name, priority_value, schedule_next, tenant_visible (by name and by role)');
SELECT is_empty(
	$$SELECT p.oid::regprocedure::text
		FROM pg_catalog.pg_proc p
	   WHERE p.pronamespace = 'hasched'::regnamespace AND p.proacl IS NULL$$,
	'no hasched function has the default ACL (which grants EXECUTE to PUBLIC)');

-- ------------------------------------------------------------------------
-- Table, column, sequence and schema privileges (16)
-- ------------------------------------------------------------------------
SELECT table_privs_are('hasched', 'job', 'hasched_submitter', ARRAY['SELECT'],
	'hasched_submitter may only SELECT hasched.job');
SELECT table_privs_are('hasched', 'job', 'hasched_worker', ARRAY['SELECT'],
	'hasched_worker may only SELECT hasched.job');
SELECT table_privs_are('hasched', 'job', 'public', ARRAY[]::name[],
	'PUBLIC has no privilege on hasched.job');
SELECT ok(pg_catalog.has_table_privilege('hasched_admin', 'hasched.job', 'INSERT')
		  AND pg_catalog.has_table_privilege('hasched_admin', 'hasched.job', 'UPDATE')
		  AND pg_catalog.has_table_privilege('hasched_admin', 'hasched.job', 'DELETE'),
	'hasched_admin may INSERT, UPDATE and DELETE hasched.job');
-- write privileges granted directly to anyone other than the owner and hasched_admin
SELECT is_empty(
	$$SELECT c.relname || ': ' || coalesce(r.rolname, 'PUBLIC') || ' ' || a.privilege_type
		FROM pg_catalog.pg_class c,
			 pg_catalog.aclexplode(coalesce(c.relacl, pg_catalog.acldefault('r', c.relowner))) a
		LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
	   WHERE c.relnamespace = 'hasched'::regnamespace AND c.relkind IN ('r', 'p', 'v')
		 AND a.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'TRIGGER', 'REFERENCES')
		 AND a.grantee <> c.relowner
		 AND a.grantee <> 'hasched_admin'::regrole$$,
	'no role but the owner and hasched_admin can write any hasched table or view');
-- a trigger on a hasched table fires inside the API, which runs as the
-- extension owner (a superuser): TRIGGER would make hasched_admin a superuser
SELECT is_empty(
	$$SELECT c.relname FROM pg_catalog.pg_class c
	   WHERE c.relnamespace = 'hasched'::regnamespace AND c.relkind IN ('r', 'p')
		 AND pg_catalog.has_table_privilege('hasched_admin', c.oid, 'TRIGGER')$$,
	'hasched_admin has no TRIGGER privilege on any hasched table');
SELECT is_empty(
	$$SELECT a.attrelid::regclass::text || '.' || a.attname
		FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
	   WHERE c.relnamespace = 'hasched'::regnamespace AND a.attacl IS NOT NULL$$,
	'no column-level grants on hasched tables');
SELECT ok(NOT pg_catalog.has_table_privilege('hasched_submitter', 'hasched.tenant', 'UPDATE')
		  AND NOT pg_catalog.has_table_privilege('hasched_submitter', 'hasched.tenant', 'INSERT')
		  AND NOT pg_catalog.has_table_privilege('hasched_submitter', 'hasched.tier', 'UPDATE'),
	'submitters cannot change tenants or tiers (their own quota)');
SELECT ok(NOT pg_catalog.has_table_privilege('hasched_worker', 'hasched.state', 'UPDATE')
		  AND NOT pg_catalog.has_table_privilege('hasched_submitter', 'hasched.state', 'UPDATE'),
	'neither submitters nor workers can update hasched.state');
SELECT ok(NOT pg_catalog.has_table_privilege('hasched_submitter', 'hasched.quota_use', 'UPDATE')
		  AND NOT pg_catalog.has_table_privilege('hasched_submitter', 'hasched.quota_use', 'DELETE'),
	'submitters cannot reset their quota use');
SELECT sequence_privs_are('hasched', 'job_id_seq', 'hasched_submitter', ARRAY[]::name[],
	'hasched_submitter has no privilege on hasched.job_id_seq');
SELECT sequence_privs_are('hasched', 'lease_id_seq', 'hasched_worker', ARRAY[]::name[],
	'hasched_worker has no privilege on hasched.lease_id_seq');
SELECT schema_privs_are('hasched', 'hasched_submitter', ARRAY['USAGE'],
	'hasched_submitter has USAGE but not CREATE on schema hasched');
SELECT schema_privs_are('hasched', 'hasched_worker', ARRAY['USAGE'],
	'hasched_worker has USAGE but not CREATE on schema hasched');
SELECT ok(NOT pg_catalog.has_schema_privilege('public', 'hasched', 'CREATE'),
	'PUBLIC cannot create objects in schema hasched');
SELECT is_empty(
	$$SELECT coalesce(r.rolname, 'PUBLIC')
		FROM pg_catalog.pg_namespace n,
			 pg_catalog.aclexplode(coalesce(n.nspacl, pg_catalog.acldefault('n', n.nspowner))) a
		LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
	   WHERE n.nspname = 'hasched' AND a.privilege_type = 'CREATE' AND a.grantee <> n.nspowner$$,
	'nobody but the owner has CREATE on schema hasched');

-- ------------------------------------------------------------------------
-- The same, by calling (36)
-- ------------------------------------------------------------------------
CREATE ROLE g_nogrant NOLOGIN;					-- no hasched role at all
CREATE ROLE g_usage NOLOGIN;					-- only USAGE on the schema
GRANT USAGE ON SCHEMA hasched TO g_usage;
CREATE ROLE g_ten NOLOGIN;						-- a tenant
CREATE ROLE g_sub LOGIN IN ROLE g_ten, hasched_submitter;
CREATE ROLE g_wrk LOGIN IN ROLE hasched_worker;
CREATE ROLE g_adm LOGIN IN ROLE hasched_admin;
INSERT INTO hasched.tenant (name, tier) VALUES ('g_ten', 'enterprise');
INSERT INTO hasched.queue (name) VALUES ('g_q');
CREATE TEMP TABLE got (k text PRIMARY KEY, id bigint, token text);
GRANT ALL ON got TO PUBLIC;

SET ROLE g_nogrant;
SELECT throws_ok($$SELECT hasched.submit('g_q', '{}')$$, '42501', NULL,
	'a role with no grants cannot call hasched.submit (42501)');
SELECT throws_ok($$SELECT count(*) FROM hasched.job$$, '42501', NULL,
	'a role with no grants cannot read hasched.job');
RESET ROLE;

SET ROLE g_usage;
SELECT throws_ok($$SELECT hasched.submit('g_q', '{}')$$, '42501', 'permission denied for function submit',
	'USAGE on the schema alone does not allow hasched.submit');
SELECT throws_ok($$SELECT * FROM hasched.claim('g_q', 'x')$$, '42501', 'permission denied for function claim',
	'USAGE on the schema alone does not allow hasched.claim');
SELECT throws_ok($$SELECT hasched.complete(1, '1:1:1')$$, '42501', 'permission denied for function complete',
	'USAGE on the schema alone does not allow hasched.complete');
SELECT throws_ok($$SELECT hasched.set_mode('read_only')$$, '42501', 'permission denied for function set_mode',
	'USAGE on the schema alone does not allow hasched.set_mode');
RESET ROLE;

SET ROLE g_sub;
SELECT lives_ok($$INSERT INTO got (k, id) SELECT 'sub', hasched.submit('g_q', '{"by": "g_sub"}', tenant => 'g_ten')$$,
	'a submitter can call hasched.submit');
SELECT lives_ok($$INSERT INTO got (k, id) SELECT 'many', (hasched.submit_many('g_q', ARRAY['{}', '{}']::jsonb[], tenant => 'g_ten'))[1]$$,
	'a submitter can call hasched.submit_many');
SELECT throws_ok($$SELECT * FROM hasched.claim('g_q', 'sub')$$, '42501', 'permission denied for function claim',
	'a submitter cannot call hasched.claim');
SELECT throws_ok($$SELECT hasched.heartbeat(1, '1:1:1')$$, '42501', 'permission denied for function heartbeat',
	'a submitter cannot call hasched.heartbeat');
SELECT throws_ok($$SELECT hasched.complete(1, '1:1:1')$$, '42501', 'permission denied for function complete',
	'a submitter cannot call hasched.complete');
SELECT throws_ok($$SELECT hasched.fail(1, '1:1:1', 'x')$$, '42501', 'permission denied for function fail',
	'a submitter cannot call hasched.fail');
SELECT throws_ok($$SELECT hasched.set_mode('read_only')$$, '42501', 'permission denied for function set_mode',
	'a submitter cannot call hasched.set_mode');
SELECT throws_ok($$SELECT hasched.requeue_expired()$$, '42501', 'permission denied for function requeue_expired',
	'a submitter cannot call hasched.requeue_expired');
SELECT throws_ok($$INSERT INTO hasched.job (queue, tenant, owner, priority, state, run_at, max_attempts, timeout, payload)
				  VALUES ('g_q', 'g_ten', 'g_sub', 0, 'pending', now(), 1, '1 minute', '{}')$$,
	'42501', NULL, 'a submitter cannot INSERT into hasched.job');
SELECT throws_ok($$UPDATE hasched.job SET priority = 0$$, '42501', NULL,
	'a submitter cannot UPDATE hasched.job');
SELECT throws_ok($$DELETE FROM hasched.job$$, '42501', NULL,
	'a submitter cannot DELETE from hasched.job');
SELECT throws_ok($$TRUNCATE hasched.job$$, '42501', NULL,
	'a submitter cannot TRUNCATE hasched.job');
SELECT throws_ok($$UPDATE hasched.tenant SET tier = 'enterprise'$$, '42501', NULL,
	'a submitter cannot change its tier');
SELECT throws_ok($$DELETE FROM hasched.quota_use$$, '42501', NULL,
	'a submitter cannot reset its quota use');
SELECT throws_ok($$SET hasched.enforce_quotas = off$$, '42501', NULL,
	'a submitter cannot turn quotas off (hasched.enforce_quotas)');
SELECT throws_ok($$SET hasched.default_tier = 'enterprise'$$, '42501', NULL,
	'a submitter cannot change hasched.default_tier');
SELECT throws_ok($$SET hasched.max_payload_bytes = 100000000$$, '42501', NULL,
	'a submitter cannot raise hasched.max_payload_bytes');
RESET ROLE;

SET ROLE g_wrk;
SELECT lives_ok($$INSERT INTO got (k, id, token) SELECT 'claimed', c.job_id, c.token FROM hasched.claim('g_q', 'g_wrk', 1) c$$,
	'a worker can call hasched.claim');
SELECT is((SELECT count(*)::int FROM got WHERE k = 'claimed' AND token IS NOT NULL), 1,
	'the claim returned one job with a lease token');
SELECT lives_ok($$SELECT hasched.heartbeat(id, token) FROM got WHERE k = 'claimed'$$,
	'a worker can call hasched.heartbeat');
SELECT lives_ok($$SELECT hasched.complete(id, token, '{"ok": true}') FROM got WHERE k = 'claimed'$$,
	'a worker can call hasched.complete');
SELECT throws_ok($$SELECT hasched.submit('g_q', '{}', tenant => 'g_ten')$$, '42501', 'permission denied for function submit',
	'a worker cannot call hasched.submit');
SELECT throws_ok($$SELECT hasched.submit_many('g_q', ARRAY['{}']::jsonb[])$$, '42501', 'permission denied for function submit_many',
	'a worker cannot call hasched.submit_many');
SELECT throws_ok($$SELECT hasched.set_mode('paused')$$, '42501', 'permission denied for function set_mode',
	'a worker cannot call hasched.set_mode');
SELECT throws_ok($$UPDATE hasched.job SET state = 'succeeded'$$, '42501', NULL,
	'a worker cannot UPDATE hasched.job directly');
RESET ROLE;

SET ROLE g_adm;
SELECT lives_ok($$SELECT hasched.set_mode('read_only', 'pgtap'); SELECT hasched.set_mode('normal')$$,
	'an admin can call hasched.set_mode');
SELECT lives_ok($$SELECT hasched.requeue_expired()$$, 'an admin can call hasched.requeue_expired');
SELECT lives_ok($$INSERT INTO got (k, id) SELECT 'adm', hasched.submit('g_q', '{"by": "g_adm"}', tenant => 'g_ten')$$,
	'an admin can submit for any tenant');
RESET ROLE;

SELECT is((SELECT state::text FROM hasched.job WHERE id = (SELECT id FROM got WHERE k = 'claimed')), 'succeeded',
	'the job the worker claimed and completed is succeeded');
SELECT is((SELECT mode FROM hasched.state), 'normal', 'the mode is back to normal');

SELECT * FROM finish();
ROLLBACK;
