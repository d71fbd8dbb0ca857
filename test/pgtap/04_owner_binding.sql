-- 04_owner_binding.sql: whose rights a job runs with (issue 8, items 1 and 2).
--
-- A job's SQL runs with the rights of its owner, so the owner must be the
-- role that wrote the job: a member of hasched_admin (who may write
-- hasched.job and hasched.schedule directly) must not be able to name a
-- superuser, or anyone else, as the owner of a job or schedule, nor change
-- the SQL, the queue or the owner of someone else's job or schedule, nor
-- turn the queue where someone else's jobs wait into an sql queue.
-- Jobs and schedules are bound to their roles, not to the roles' names: a
-- rename keeps them, and a role created later under a dropped one's name
-- gets nothing of the dropped role's.
--
-- What the executor then runs is proved with the background workers in
-- test/t/020_owner_escalation.pl and test/t/021_dropped_owner.pl.
BEGIN;
SELECT plan(35);

CREATE ROLE acme NOLOGIN;
CREATE ROLE adm LOGIN IN ROLE hasched_admin;
CREATE ROLE alice LOGIN IN ROLE acme, hasched_submitter;
INSERT INTO hasched.tenant (name, tier) VALUES ('acme', 'enterprise');
INSERT INTO hasched.queue (name, transport) VALUES ('o_sql', 'sql'), ('o_pull', 'pull');
CREATE TEMP TABLE ids (k text PRIMARY KEY, id bigint);
GRANT ALL ON ids TO PUBLIC;
CREATE FUNCTION pg_temp.jid(text) RETURNS bigint LANGUAGE sql STABLE
	AS $$ SELECT id FROM pg_temp.ids WHERE k = $1 $$;

-- the superuser's job for later, its pull job that carries SQL text, its schedule
INSERT INTO ids SELECT 'su:sql', hasched.submit('o_sql', '{"sql": "SELECT 1"}', run_at => now() + interval '1 day');
INSERT INTO ids SELECT 'su:pull', hasched.submit('o_pull', '{"sql": "SELECT 2"}', run_at => now() + interval '1 day');
DO $$ BEGIN PERFORM hasched.schedule('su-sched', '@every 1 hour', 'o_sql', '{"sql": "SELECT 3"}'); END $$;

-- ------------------------------------------------------------------------
-- An administrator writing the tables directly (20)
-- ------------------------------------------------------------------------
SET ROLE adm;
SELECT throws_ok(pg_catalog.format(
	$$INSERT INTO hasched.job (queue, tenant, owner, priority, state, run_at, max_attempts, timeout, payload)
	  VALUES ('o_sql', 'adm', %L, 5, 'pending', now(), 1, '1 minute', '{"sql": "ALTER ROLE adm SUPERUSER"}')$$,
	session_user), '42501', NULL,
	'a member of hasched_admin cannot insert a job whose owner is a superuser');
SELECT throws_ok(
	$$INSERT INTO hasched.job (queue, tenant, owner, priority, state, run_at, max_attempts, timeout, payload)
	  VALUES ('o_sql', 'adm', 'alice', 5, 'pending', now(), 1, '1 minute', '{"sql": "SELECT 1"}')$$,
	'42501', NULL,
	'a member of hasched_admin cannot insert a job owned by another role');
SELECT lives_ok(
	$$WITH j AS (
	  INSERT INTO hasched.job (queue, tenant, owner, priority, state, run_at, max_attempts, timeout, payload)
	  VALUES ('o_sql', 'adm', 'adm', 5, 'scheduled', now() + interval '1 day', 1, '1 minute', '{"sql": "SELECT 1"}')
	  RETURNING id)
	  INSERT INTO ids SELECT 'adm:own', id FROM j$$,
	'a member of hasched_admin may insert a job it owns itself');
SELECT throws_ok(pg_catalog.format('UPDATE hasched.job SET owner = %L WHERE id = %s', session_user, pg_temp.jid('adm:own')),
	'42501', NULL,
	'a member of hasched_admin cannot make a superuser the owner of its job');
SELECT throws_ok(pg_catalog.format($$UPDATE hasched.job SET payload = '{"sql": "ALTER ROLE adm SUPERUSER"}' WHERE id = %s$$,
	pg_temp.jid('su:sql')), '42501', NULL,
	'a member of hasched_admin cannot change the SQL of a superuser''s job');
SELECT throws_ok(pg_catalog.format($$UPDATE hasched.job SET queue = 'o_sql' WHERE id = %s$$, pg_temp.jid('su:pull')),
	'42501', NULL,
	'a member of hasched_admin cannot move a superuser''s pull job (with SQL text in its payload) to an sql queue');
SELECT lives_ok(pg_catalog.format('UPDATE hasched.job SET priority = 1 WHERE id = %s', pg_temp.jid('su:sql')),
	'a member of hasched_admin may still change the priority of any job');
SELECT throws_ok(pg_catalog.format(
	$$INSERT INTO hasched.schedule (name, spec, queue, payload, tenant, owner)
	  VALUES ('adm-sched', '@every 1 second', 'o_sql', '{"sql": "ALTER ROLE adm SUPERUSER"}', 'adm', %L)$$,
	session_user), '42501', NULL,
	'a member of hasched_admin cannot insert a schedule whose owner is a superuser');
SELECT throws_ok($$UPDATE hasched.schedule SET payload = '{"sql": "ALTER ROLE adm SUPERUSER"}' WHERE name = 'su-sched'$$,
	'42501', NULL,
	'a member of hasched_admin cannot change the SQL of a superuser''s schedule');
SELECT throws_ok($$UPDATE hasched.schedule SET queue = 'o_pull' WHERE name = 'su-sched'$$,
	'42501', NULL,
	'a member of hasched_admin cannot change the queue of a superuser''s schedule');
SELECT lives_ok(
	$$INSERT INTO hasched.schedule (name, spec, queue, payload, tenant, owner)
	  VALUES ('adm-own', '@every 1 hour', 'o_sql', '{"sql": "SELECT 1"}', 'adm', 'adm')$$,
	'a member of hasched_admin may insert a schedule it owns itself');
SELECT throws_ok(pg_catalog.format($$UPDATE hasched.schedule SET owner = %L WHERE name = 'adm-own'$$, session_user),
	'42501', NULL,
	'a member of hasched_admin cannot make a superuser the owner of its schedule');
SELECT lives_ok($$UPDATE hasched.schedule SET active = false WHERE name = 'su-sched'$$,
	'a member of hasched_admin may still pause any schedule');
SELECT lives_ok($$UPDATE hasched.schedule SET active = true WHERE name = 'su-sched'$$,
	'and resume it');
-- the queue of a waiting job decides whether an executor runs its payload's
-- SQL: turning the superuser's pull queue into an sql queue would too
SELECT throws_ok($$UPDATE hasched.queue SET transport = 'sql' WHERE name = 'o_pull'$$,
	'42501', NULL,
	'a member of hasched_admin cannot make an sql queue of a queue where another role''s jobs wait');
SELECT lives_ok($$UPDATE hasched.queue SET name = 'o_pull_old' WHERE name = 'o_pull'$$,
	'(it may rename that pull queue)');
SELECT throws_ok($$INSERT INTO hasched.queue (name, transport) VALUES ('o_pull', 'sql')$$,
	'42501', NULL,
	'a member of hasched_admin cannot create an sql queue under the name of another role''s waiting jobs');
SELECT throws_ok($$UPDATE hasched.queue SET name = 'o_pull' WHERE name = 'o_sql'$$,
	'42501', NULL,
	'a member of hasched_admin cannot rename an sql queue to the name of another role''s waiting jobs');
SELECT lives_ok($$INSERT INTO hasched.queue (name, transport) VALUES ('adm_sql', 'sql')$$,
	'a member of hasched_admin may create an sql queue where no other role''s jobs wait');
SELECT lives_ok($$UPDATE hasched.queue SET name = 'o_pull' WHERE name = 'o_pull_old'$$,
	'(and rename the pull queue back)');
RESET ROLE;

-- ------------------------------------------------------------------------
-- Nothing of the refused writes is left (5)
-- ------------------------------------------------------------------------
SELECT is((SELECT payload FROM hasched.job WHERE id = pg_temp.jid('su:sql')), '{"sql": "SELECT 1"}'::jsonb,
	'the superuser''s job kept its SQL');
SELECT is((SELECT queue FROM hasched.job WHERE id = pg_temp.jid('su:pull')), 'o_pull',
	'the superuser''s pull job stayed in its queue');
SELECT is((SELECT payload FROM hasched.schedule WHERE name = 'su-sched'), '{"sql": "SELECT 3"}'::jsonb,
	'the superuser''s schedule kept its SQL');
SELECT is((SELECT count(*)::int FROM hasched.job WHERE payload->>'sql' LIKE '%SUPERUSER%'), 0,
	'no job carries the administrator''s SQL');
SELECT is((SELECT owner::text FROM hasched.schedule WHERE name = 'adm-own'), 'adm',
	'the administrator''s own schedule is still its own');

-- ------------------------------------------------------------------------
-- Bound to the role, not to its name (10)
-- ------------------------------------------------------------------------
CREATE ROLE rn LOGIN IN ROLE hasched_submitter;
INSERT INTO hasched.tenant (name, tier) VALUES ('rn', 'enterprise');
SET ROLE rn;
INSERT INTO ids SELECT 'rn', hasched.submit('o_pull', '{}');
DO $$ BEGIN PERFORM hasched.schedule('rn-sched', '@every 1 hour', 'o_pull'); END $$;
RESET ROLE;
ALTER ROLE rn RENAME TO rn_renamed;
SELECT is((SELECT owner::text FROM hasched.job WHERE id = pg_temp.jid('rn')), 'rn_renamed',
	'a renamed role is still the owner of its job');
SELECT is((SELECT tenant::text FROM hasched.job WHERE id = pg_temp.jid('rn')), 'rn_renamed',
	'a renamed role is still the tenant of its job');
SELECT is((SELECT owner::text FROM hasched.schedule WHERE name = 'rn-sched'), 'rn_renamed',
	'a renamed role is still the owner of its schedule');
SET ROLE rn_renamed;
SELECT is((SELECT count(*)::int FROM hasched.jobs WHERE id = pg_temp.jid('rn')), 1,
	'a renamed tenant still sees its job');
RESET ROLE;

CREATE ROLE gone LOGIN IN ROLE hasched_submitter;
SET ROLE gone;
INSERT INTO ids SELECT 'gone', hasched.submit('o_pull', '{"secret": "of the old gone"}');
DO $$ BEGIN PERFORM hasched.schedule('gone-sched', '@every 1 hour', 'o_pull'); END $$;
RESET ROLE;
DROP ROLE gone;
CREATE ROLE gone LOGIN IN ROLE hasched_submitter;
SELECT is((SELECT owner::text = 'gone' FROM hasched.job WHERE id = pg_temp.jid('gone')), false,
	'a role created under the name of a dropped owner is not the owner of its job');
SELECT is((SELECT owner::text = 'gone' FROM hasched.schedule WHERE name = 'gone-sched'), false,
	'a role created under the name of a dropped owner is not the owner of its schedule');
SET ROLE gone;
SELECT is((SELECT count(*)::int FROM hasched.jobs WHERE id = pg_temp.jid('gone')), 0,
	'a role created under the name of a dropped tenant does not see its jobs');
SELECT is((SELECT count(*)::int FROM hasched.schedules WHERE name = 'gone-sched'), 0,
	'a role created under the name of a dropped tenant does not see its schedules');
SELECT throws_ok(pg_catalog.format('SELECT hasched.cancel(%s)', pg_temp.jid('gone')), 'JQ014', NULL,
	'a role created under the name of a dropped tenant cannot cancel its jobs');
SELECT throws_ok($$SELECT hasched.unschedule('gone-sched')$$, 'JQ022', NULL,
	'a role created under the name of a dropped tenant cannot remove its schedules');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
