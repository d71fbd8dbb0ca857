-- 04_messages.sql: refusals that said the wrong thing, or nothing (issue 8,
-- item 10).
--
-- Each case: the specific SQLSTATE, a message that names the real problem,
-- and nothing changed.
BEGIN;
SELECT plan(26);

CREATE ROLE acme NOLOGIN;
CREATE ROLE alice LOGIN IN ROLE acme, hasched_submitter;
CREATE ROLE w LOGIN IN ROLE hasched_worker;
CREATE ROLE nobody LOGIN;
INSERT INTO hasched.tenant (name, tier) VALUES ('acme', 'enterprise');
INSERT INTO hasched.queue (name) VALUES ('m_pull');
CREATE TEMP TABLE got (k text PRIMARY KEY, job_id bigint, token text, code text, msg text, hint text);
GRANT ALL ON got TO PUBLIC;

-- run a statement, keep its SQLSTATE, message and hint under a key
CREATE FUNCTION pg_temp.try(k text, sql text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	c text;
	m text;
	h text;
BEGIN
	EXECUTE sql;
	INSERT INTO pg_temp.got (k, code) VALUES (k, 'ok');
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS c = RETURNED_SQLSTATE, m = MESSAGE_TEXT, h = PG_EXCEPTION_HINT;
	INSERT INTO pg_temp.got (k, code, msg, hint) VALUES (k, c, m, h);
END
$$;
CREATE FUNCTION pg_temp.got(text) RETURNS text LANGUAGE sql STABLE
	AS $$ SELECT code || coalesce(': ' || msg, '') || coalesce(' (hint: ' || hint || ')', '') FROM pg_temp.got WHERE k = $1 $$;

-- ------------------------------------------------------------------------
-- A timeout or lease too long to count is not "not positive" (8)
-- ------------------------------------------------------------------------
SET ROLE alice;
SET hasched.tenant = 'acme';
SELECT pg_temp.try('submit timeout', $$SELECT hasched.submit('m_pull', '{}', timeout => '300000 years')$$);
SELECT pg_temp.try('submit_many timeout', $$SELECT hasched.submit_many('m_pull', ARRAY['{}']::jsonb[], timeout => '300000 years')$$);
INSERT INTO got (k, job_id) SELECT 'job', hasched.submit('m_pull', '{}');
INSERT INTO got (k, job_id) SELECT 'job2', hasched.submit('m_pull', '{}');
RESET ROLE;
SET ROLE w;
SELECT pg_temp.try('claim lease', $$SELECT * FROM hasched.claim('m_pull', 'w', 1, '300000 years')$$);
UPDATE got SET token = c.token FROM hasched.claim('m_pull', 'w', 2) c WHERE c.job_id = got.job_id;
SELECT pg_temp.try('heartbeat lease', pg_catalog.format('SELECT hasched.heartbeat(%s, %L, %L)',
	(SELECT job_id FROM got WHERE k = 'job'), (SELECT token FROM got WHERE k = 'job'), '300000 years'));
RESET ROLE;
SELECT ok(pg_temp.got('submit timeout') LIKE 'JQ013: %timeout%' AND pg_temp.got('submit timeout') NOT LIKE '%positive%',
	'submit: a timeout of 300000 years is refused as too long, not as not positive: ' || pg_temp.got('submit timeout'));
SELECT ok(pg_temp.got('submit_many timeout') LIKE 'JQ013: %timeout%' AND pg_temp.got('submit_many timeout') NOT LIKE '%positive%',
	'submit_many: a timeout of 300000 years is refused as too long, not as not positive: ' || pg_temp.got('submit_many timeout'));
SELECT ok(pg_temp.got('claim lease') LIKE 'JQ013: %lease%' AND pg_temp.got('claim lease') NOT LIKE '%positive%',
	'claim: a lease of 300000 years is refused as too long, not as not positive: ' || pg_temp.got('claim lease'));
SELECT ok(pg_temp.got('heartbeat lease') LIKE 'JQ013: %lease%' AND pg_temp.got('heartbeat lease') NOT LIKE '%positive%',
	'heartbeat: a lease of 300000 years is refused as too long, not as not positive: ' || pg_temp.got('heartbeat lease'));
SELECT is((SELECT count(token)::int FROM got WHERE k IN ('job', 'job2')), 2, '(the worker holds both jobs)');
SELECT is((SELECT state::text FROM hasched.job WHERE id = (SELECT job_id FROM got WHERE k = 'job')), 'running',
	'the refused heartbeat left the job running');
SELECT ok((SELECT lease_until < now() + interval '1 day' FROM hasched.job WHERE id = (SELECT job_id FROM got WHERE k = 'job')),
	'the refused heartbeat did not extend the lease');
SELECT is((SELECT count(*)::int FROM hasched.job WHERE queue = 'm_pull'), 2, 'the refused submits made no job');

-- ------------------------------------------------------------------------
-- Tokens with blanks are malformed (6)
-- ------------------------------------------------------------------------
SET ROLE w;
SELECT pg_temp.try('blank heartbeat', pg_catalog.format('SELECT hasched.heartbeat(%s, %L)',
	(SELECT job_id FROM got WHERE k = 'job'), replace((SELECT token FROM got WHERE k = 'job'), ':', ': ')));
SELECT pg_temp.try('blank complete', pg_catalog.format('SELECT hasched.complete(%s, %L)',
	(SELECT job_id FROM got WHERE k = 'job'), ' ' || (SELECT token FROM got WHERE k = 'job')));
SELECT pg_temp.try('blank fail', pg_catalog.format('SELECT hasched.fail(%s, %L, %L)',
	(SELECT job_id FROM got WHERE k = 'job'), replace((SELECT token FROM got WHERE k = 'job'), ':', ' :'), 'x'));
SELECT pg_temp.try('blank complete many', pg_catalog.format('SELECT hasched.complete(ARRAY[%s], ARRAY[%L])',
	(SELECT job_id FROM got WHERE k = 'job'), replace((SELECT token FROM got WHERE k = 'job'), ':', ': ')));
RESET ROLE;
SELECT ok(pg_temp.got('blank heartbeat') LIKE 'JQ013: malformed lease token%',
	'a token written with blanks ("1: 1: 2") is malformed (heartbeat): ' || pg_temp.got('blank heartbeat'));
SELECT ok(pg_temp.got('blank complete') LIKE 'JQ013: malformed lease token%',
	'a token with a leading blank is malformed (complete): ' || pg_temp.got('blank complete'));
SELECT ok(pg_temp.got('blank fail') LIKE 'JQ013: malformed lease token%',
	'a token with blanks before the colons is malformed (fail): ' || pg_temp.got('blank fail'));
SELECT ok(pg_temp.got('blank complete many') LIKE 'JQ013: malformed lease token%',
	'a token written with blanks is malformed (complete of many): ' || pg_temp.got('blank complete many'));
SELECT is((SELECT state::text FROM hasched.job WHERE id = (SELECT job_id FROM got WHERE k = 'job')), 'running',
	'the job is still running: no report with a blank-written token was recorded');
SELECT is((SELECT attempt FROM hasched.job WHERE id = (SELECT job_id FROM got WHERE k = 'job')), 1,
	'no attempt was spent');

-- ------------------------------------------------------------------------
-- The same job twice in complete() (2)
-- ------------------------------------------------------------------------
SET ROLE w;
SELECT pg_temp.try('complete twice', pg_catalog.format('SELECT hasched.complete(ARRAY[%s, %s], ARRAY[%L, %L])',
	(SELECT job_id FROM got WHERE k = 'job2'), (SELECT job_id FROM got WHERE k = 'job2'),
	(SELECT token FROM got WHERE k = 'job2'), (SELECT token FROM got WHERE k = 'job2')));
RESET ROLE;
SELECT ok(pg_temp.got('complete twice') LIKE pg_catalog.format('JQ013: %%job %s%%twice%%', (SELECT job_id FROM got WHERE k = 'job2')),
	'complete() with the same job twice names that job as given twice: ' || pg_temp.got('complete twice'));
SELECT is((SELECT state::text FROM hasched.job WHERE id = (SELECT job_id FROM got WHERE k = 'job2')), 'running',
	'and records nothing');

-- ------------------------------------------------------------------------
-- submit_many of nothing to an unknown queue (2)
-- ------------------------------------------------------------------------
SET ROLE alice;
SELECT throws_ok($$SELECT hasched.submit_many('no_such_queue', ARRAY[]::jsonb[])$$, 'JQ010', NULL,
	'submit_many of no payloads to an unknown queue is refused as an unknown queue');
SELECT is(hasched.submit_many('m_pull', ARRAY[]::jsonb[]), ARRAY[]::bigint[],
	'submit_many of no payloads to a known queue returns no ids');
RESET ROLE;

-- ------------------------------------------------------------------------
-- The functions for everyone work for a role without a hasched role (2)
-- ------------------------------------------------------------------------
SET ROLE nobody;
SELECT lives_ok($$SELECT * FROM hasched.health()$$, 'a role with no hasched role may call health()');
SELECT lives_ok($$SELECT hasched.schedule_next('@hourly', 'UTC', now())$$,
	'a role with no hasched role may call schedule_next()');
RESET ROLE;

-- ------------------------------------------------------------------------
-- An @every past the end of time (3)
-- ------------------------------------------------------------------------
SET ROLE alice;
SELECT pg_temp.try('every too long', $$SELECT hasched.schedule('m-every', '@every 106751991 d', 'm_pull', tenant => 'acme')$$);
RESET ROLE;
SELECT is((SELECT code FROM got WHERE k = 'every too long'), 'JQ019', 'an @every past the end of time is an invalid schedule');
SELECT ok((SELECT coalesce(hint, '') NOT LIKE '%February%' AND coalesce(msg || hint, '') LIKE '%@every%'
			 FROM got WHERE k = 'every too long'),
	'its message is about the interval, not about February: ' || pg_temp.got('every too long'));
SELECT is((SELECT count(*)::int FROM hasched.schedule WHERE name = 'm-every'), 0, 'no schedule was made');

-- ------------------------------------------------------------------------
-- hasched.default_tier must name a tier (3)
-- ------------------------------------------------------------------------
SELECT throws_ok($$SET hasched.default_tier = 'no_such_tier'$$, 'JQ015', NULL,
	'SET hasched.default_tier to a tier that does not exist is refused');
SELECT is(current_setting('hasched.default_tier'), 'free', 'the setting is unchanged');
SELECT lives_ok($$SET LOCAL hasched.default_tier = 'pro'$$, 'SET hasched.default_tier to an existing tier works');

SELECT * FROM finish();
ROLLBACK;
