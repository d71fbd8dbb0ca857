-- 04_tenant_rules.sql: what may be a tenant, and what a tenant can read
-- (issue 8, items 3 and 4).
--
-- A tenant's jobs are visible to, and cancellable by, every role that has
-- the privileges of the tenant role. So a role that the hasched roles
-- themselves hold (hasched_submitter, hasched_worker, hasched_admin, or any
-- role granted to one of them) would make one tenant's jobs everybody's, and
-- so would a predefined role (pg_monitor, ...): such roles are refused as
-- tenants with JQ015, by submit, submit_many, schedule and the
-- hasched.tenant setting alike, and in rows an administrator writes.
-- Every hasched table that submitters or workers can read either has
-- row-level security or holds no tenant's data.
BEGIN;
SELECT plan(25);

CREATE ROLE acme NOLOGIN;
CREATE ROLE globex NOLOGIN;
CREATE ROLE everyone NOLOGIN;
GRANT everyone TO hasched_submitter;
CREATE ROLE alice LOGIN IN ROLE acme, hasched_submitter;
CREATE ROLE bob LOGIN IN ROLE globex, hasched_submitter;
CREATE ROLE carol LOGIN IN ROLE hasched_submitter;
CREATE ROLE adm LOGIN IN ROLE hasched_admin;
CREATE ROLE nobody LOGIN;
INSERT INTO hasched.tenant (name, tier) VALUES ('acme', 'enterprise'), ('globex', 'enterprise'),
	('carol', 'enterprise'), ('everyone', 'enterprise'), ('hasched_submitter', 'enterprise');
CREATE TEMP TABLE before AS SELECT count(*) AS n FROM hasched.job;
GRANT SELECT ON before TO PUBLIC;

-- ------------------------------------------------------------------------
-- Roles that are not tenants (14)
-- ------------------------------------------------------------------------
SET ROLE alice;
SELECT throws_ok($$SELECT hasched.submit('default', '{}', tenant => 'hasched_submitter')$$, 'JQ015', NULL,
	'hasched_submitter is not a tenant (submit)');
SELECT throws_ok($$SELECT hasched.submit_many('default', ARRAY['{}']::jsonb[], tenant => 'hasched_submitter')$$, 'JQ015', NULL,
	'hasched_submitter is not a tenant (submit_many)');
SELECT throws_ok($$SELECT hasched.schedule('t-sched', '@every 1 hour', tenant => 'hasched_submitter')$$, 'JQ015', NULL,
	'hasched_submitter is not a tenant (schedule)');
SET hasched.tenant = 'hasched_submitter';
SELECT throws_ok($$SELECT hasched.submit('default', '{}')$$, 'JQ015', NULL,
	'hasched_submitter is not a tenant (through the hasched.tenant setting)');
RESET hasched.tenant;
SELECT throws_ok($$SELECT hasched.submit('default', '{}', tenant => 'everyone')$$, 'JQ015', NULL,
	'a role granted to hasched_submitter is not a tenant (every submitter would see its jobs)');
SELECT lives_ok($$SELECT hasched.submit('default', '{}', tenant => 'acme')$$,
	'acme, a role of its own, is a tenant');
SELECT lives_ok($$SELECT hasched.submit('default', '{}')$$,
	'alice is her own tenant');
RESET ROLE;

SET ROLE adm;
SELECT throws_ok($$SELECT hasched.submit('default', '{}', tenant => 'hasched_admin')$$, 'JQ015', NULL,
	'hasched_admin is not a tenant');
SELECT throws_ok($$SELECT hasched.submit('default', '{}', tenant => 'hasched_worker')$$, 'JQ015', NULL,
	'hasched_worker is not a tenant');
SELECT throws_ok(
	$$INSERT INTO hasched.job (queue, tenant, owner, priority, state, run_at, max_attempts, timeout, payload)
	  VALUES ('default', 'hasched_submitter', 'adm', 5, 'pending', now(), 1, '1 minute', '{}')$$,
	'JQ015', NULL,
	'an administrator cannot insert a job whose tenant is hasched_submitter');
SELECT throws_ok(
	$$INSERT INTO hasched.schedule (name, spec, queue, tenant, owner)
	  VALUES ('t-sched2', '@every 1 hour', 'default', 'hasched_submitter', 'adm')$$,
	'JQ015', NULL,
	'an administrator cannot insert a schedule whose tenant is hasched_submitter');
RESET ROLE;

SELECT throws_ok($$SELECT hasched.submit('default', '{}', tenant => 'pg_monitor')$$, 'JQ015', NULL,
	'a predefined role is not a tenant, not even for a superuser');
SELECT lives_ok($$SELECT hasched.submit('default', '{}')$$,
	'the superuser is its own tenant');

SET ROLE carol;
SELECT lives_ok($$SELECT hasched.submit('default', '{}')$$,
	'carol, in no tenant role, is her own tenant');
RESET ROLE;

-- ------------------------------------------------------------------------
-- Nothing of the refusals is left, and nobody sees another's jobs (5)
-- ------------------------------------------------------------------------
SELECT is((SELECT count(*)::int FROM hasched.job
			WHERE tenant::text IN ('hasched_submitter', 'hasched_admin', 'hasched_worker', 'everyone', 'pg_monitor')), 0,
	'no job was made for a role that is not a tenant');
SELECT is((SELECT count(*)::int FROM hasched.quota_use
			WHERE tenant::text IN ('hasched_submitter', 'hasched_admin', 'hasched_worker', 'everyone', 'pg_monitor')), 0,
	'no quota was charged to a role that is not a tenant');
SELECT is((SELECT count(*)::int FROM hasched.schedule WHERE name IN ('t-sched', 't-sched2')), 0, 'no schedule was made');
SET ROLE bob;
SELECT is((SELECT count(*)::int FROM hasched.jobs WHERE tenant::text <> 'globex'), 0,
	'bob sees no job of another tenant');
RESET ROLE;
SET ROLE carol;
SELECT is((SELECT count(*)::int FROM hasched.jobs WHERE tenant::text <> 'carol'), 0,
	'carol sees only her own jobs');
RESET ROLE;

-- ------------------------------------------------------------------------
-- What submitters, workers and other roles can read (6)
-- ------------------------------------------------------------------------
SELECT is_empty(
	$$SELECT c.relname FROM pg_catalog.pg_class c
	   WHERE c.relnamespace = 'hasched'::regnamespace AND c.relkind IN ('r', 'p')
		 AND (pg_catalog.has_table_privilege('hasched_submitter', c.oid, 'SELECT')
			  OR pg_catalog.has_table_privilege('hasched_worker', c.oid, 'SELECT'))
		 AND NOT c.relrowsecurity
		 AND c.relname NOT IN ('queue', 'tier', 'state', 'epoch')$$,
	'every hasched table that submitters or workers read has row-level security, or holds no tenant data');
SELECT is_empty(
	$$SELECT c.relname FROM pg_catalog.pg_class c
	   WHERE c.relnamespace = 'hasched'::regnamespace AND c.relkind = 'v'
		 AND (pg_catalog.has_table_privilege('hasched_submitter', c.oid, 'SELECT')
			  OR pg_catalog.has_table_privilege('hasched_worker', c.oid, 'SELECT'))
		 AND NOT coalesce('security_invoker=true' = ANY (c.reloptions), false)$$,
	'every hasched view that submitters or workers read applies the reader''s row-level security');
-- the schema is usable by everyone (for health() and schedule_next()): so
-- nothing else in it may be open to PUBLIC
SELECT results_eq(
	$$SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
	   WHERE p.pronamespace = 'hasched'::regnamespace
		 AND pg_catalog.has_function_privilege('nobody', p.oid, 'EXECUTE')
	   ORDER BY 1$$,
	$$VALUES ('hasched.backoff_delay(integer,interval,interval,double precision)'),
			 ('hasched.health()'), ('hasched.priority_name(smallint)'), ('hasched.priority_value(text)'),
			 ('hasched.schedule_next(text,text,timestamp with time zone)'),
			 ('hasched.tenant_visible(name)'), ('hasched.tenant_visible(regrole)')$$,
	'a role without a hasched role can run only the functions documented as everyone''s');
SELECT is_empty(
	$$SELECT c.relname FROM pg_catalog.pg_class c
	   WHERE c.relnamespace = 'hasched'::regnamespace
		 AND ((c.relkind IN ('r', 'p', 'v', 'm')
			   AND pg_catalog.has_table_privilege('nobody', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER'))
			  OR (c.relkind = 'S' AND pg_catalog.has_sequence_privilege('nobody', c.oid, 'USAGE, SELECT, UPDATE')))$$,
	'a role without a hasched role has no privilege on any hasched table, view or sequence');
SELECT ok((SELECT relrowsecurity FROM pg_catalog.pg_class WHERE oid = 'hasched.event'::regclass),
	'hasched.event has row-level security');
SELECT ok(EXISTS (SELECT 1 FROM pg_catalog.pg_policy WHERE polrelid = 'hasched.event'::regclass),
	'hasched.event has a policy');

SELECT * FROM finish();
ROLLBACK;
