-- schedules: next-run computation, time zones, and every refusal
SET hasched.tenant = 'hs_acme';
SET timezone = 'UTC';

-- cron with and without seconds, @every, macros; in UTC
SELECT spec, hasched.schedule_next(spec, 'UTC', '2026-01-31 23:59:59.5+00') AS next
  FROM unnest(ARRAY['* * * * * *', '*/15 * * * *', '0 0 29 2 *', '0 0 31 * *', '30 8 * * mon-fri',
                    '0 0 1 1 *', '@hourly', '@daily', '@weekly', '@monthly', '@yearly',
                    '@every 90 seconds', '0 0 13 * fri']) AS spec;
SELECT hasched.schedule_next('0 0 30 2 *', 'UTC', '2026-01-01') AS never;

-- time zones: 9:00 in New York is 14:00 UTC in winter and 13:00 UTC in summer
SELECT after, hasched.schedule_next('0 0 9 * * *', 'America/New_York', after) AS next
  FROM unnest(ARRAY['2026-03-07 12:00+00', '2026-03-08 12:00+00', '2026-11-01 12:00+00']::timestamptz[]) AS after;
-- a wall-clock time skipped by the change to summer time comes out after it
SELECT hasched.schedule_next('0 30 2 * * *', 'America/New_York', '2026-03-08 05:00+00');
SELECT hasched.schedule_next('0 0 9 * * *', 'Asia/Kolkata', '2026-06-01 00:00+00');

-- create, list, replace, remove
INSERT INTO hasched.queue (name, transport) VALUES ('cronsql', 'sql');
SELECT hasched.schedule('nightly', '0 0 3 * * *', 'default', '{"job": "report"}', 'low', 'Europe/Berlin') > now() AS in_future;
SELECT name, spec, timezone, queue, tenant, misfire, overlap, active, last_job_id
  FROM hasched.schedules ORDER BY name;
SELECT hasched.schedule('sqltick', '@every 1 minute', 'cronsql', '{"sql": "SELECT 1"}', overlap => 'queue', misfire => 'skip') IS NOT NULL AS created;
SELECT name, misfire, overlap, next_run_at - now() BETWEEN interval '59 seconds' AND interval '61 seconds' AS in_a_minute
  FROM hasched.schedules WHERE name = 'sqltick';
SELECT try($$SELECT hasched.schedule('nightly', '0 0 4 * * *')$$);
SELECT hasched.schedule('nightly', '0 0 4 * * *', replace => true) IS NOT NULL AS replaced;
SELECT spec, queue, timezone FROM hasched.schedule WHERE name = 'nightly';

-- refusals, and nothing written by them
SELECT count(*) AS schedules_before FROM hasched.schedule \gset
SELECT try($$SELECT hasched.schedule('bad', '61 * * * *')$$);
SELECT try($$SELECT hasched.schedule('bad', '* * *')$$);
SELECT try($$SELECT hasched.schedule('bad', 'every day')$$);
SELECT try($$SELECT hasched.schedule('bad', '@every 0 seconds')$$);
SELECT try($$SELECT hasched.schedule('bad', '0 0 30 2 *')$$);
SELECT try($$SELECT hasched.schedule('bad', '* * * * *', timezone => 'Mars/Olympus')$$);
SELECT try($$SELECT hasched.schedule('bad', '* * * * *', misfire => 'later')$$);
SELECT try($$SELECT hasched.schedule('bad', '* * * * *', overlap => 'sometimes')$$);
SELECT try($$SELECT hasched.schedule('bad', '* * * * *', priority => 'urgent')$$);
SELECT try($$SELECT hasched.schedule('bad', '* * * * *', 'nosuchqueue')$$);
SELECT try($$SELECT hasched.schedule('bad', '* * * * *', 'cronsql', '{"sql": "SELEC 1"}')$$);
SELECT try($$SELECT hasched.schedule('bad', '* * * * *', 'cronsql', '{}')$$);
SELECT try($$SELECT hasched.schedule('bad name!', '* * * * *')$$);
SELECT try($$SELECT hasched.schedule('bad', NULL)$$);
SET ROLE hs_alice;
SELECT try($$SELECT hasched.schedule('bad', '* * * * *', tenant => 'hs_globex')$$);
RESET ROLE;
SELECT try($$SELECT hasched.schedule_next('* * * * *', 'Nowhere/Special', now())$$);
SELECT count(*) = :schedules_before AS nothing_written FROM hasched.schedule;

-- another tenant's schedule is invisible and cannot be removed
SET ROLE hs_bob;
SELECT count(*) AS bob_sees FROM hasched.schedules;
SELECT try($$SELECT hasched.unschedule('nightly')$$);
RESET ROLE;
SELECT hasched.unschedule('nightly');
SELECT try($$SELECT hasched.unschedule('nightly')$$);
SELECT name FROM hasched.schedules ORDER BY name;

-- the SQL of a job of an sql queue is checked at submit
SELECT try($$SELECT hasched.submit('cronsql', '{"sql": "SELEC 1"}')$$);
SELECT try($$SELECT hasched.submit('cronsql', '{"query": "SELECT 1"}')$$);
SELECT try($$SELECT hasched.submit_many('cronsql', ARRAY['{"sql": "SELECT 1"}', '{"sql": "DELET FROM x"}']::jsonb[])$$);
SELECT hasched.submit('cronsql', '{"sql": "SELECT 1; SELECT 2"}') > 0 AS two_statements_ok;

-- a plain submitter creates, replaces and removes its own schedules
SET ROLE hs_alice;
SELECT hasched.schedule('alice-job', '@every 5 minutes', 'default', '{"a": 1}') IS NOT NULL AS created;
SELECT hasched.schedule('alice-job', '@every 10 minutes', 'default', '{"a": 2}', replace => true) IS NOT NULL AS replaced;
SELECT name, spec, tenant, owner FROM hasched.schedule WHERE name = 'alice-job';
RESET ROLE;
SET ROLE hs_bob;
SELECT try($$SELECT hasched.schedule('alice-job', '@every 1 minute', tenant => 'hs_globex', replace => true)$$);
RESET ROLE;
SET ROLE hs_alice;
SELECT hasched.unschedule('alice-job');
RESET ROLE;
