-- 03_rls.sql: tenant isolation, and escalation attempts that must all fail.
--
-- Tenants acme and globex (NOLOGIN roles, enterprise tier so that rate
-- limits and quotas do not get in the way); alice submits for acme, bob for
-- globex, w is a worker, adm an administrator. Everything happens in one
-- transaction that is rolled back, roles included.
--
-- Part 1 plants functions and operators in a schema put first on
-- search_path and calls the API through it: the hasched functions must pin
-- their own search_path, so nothing planted is ever called (a planted
-- function called from inside the API would run as the extension owner).
-- Part 2: what each role sees and may do to the other tenant's jobs.
-- Part 3: SQL in queue names, tenant names, payloads, keys and error hints.
-- Part 4: the worker (claims any tenant's job, sees no rows) and the admin.
-- Part 5: an administrator must not get its code run as the extension owner.
BEGIN;
SELECT plan(98);

-- ------------------------------------------------------------------------
-- Setup (as the superuser)
-- ------------------------------------------------------------------------
CREATE ROLE acme NOLOGIN;
CREATE ROLE globex NOLOGIN;
CREATE ROLE alice LOGIN IN ROLE acme, hasched_submitter;
CREATE ROLE bob LOGIN IN ROLE globex, hasched_submitter;
CREATE ROLE w LOGIN IN ROLE hasched_worker;
CREATE ROLE adm LOGIN IN ROLE hasched_admin;
INSERT INTO hasched.tenant (name, tier) VALUES ('acme', 'enterprise'), ('globex', 'enterprise');
-- a queue of its own for part 1, with a concurrency limit (another claim path)
INSERT INTO hasched.queue (name, concurrency) VALUES ('r_evil', 5);

-- job ids and tokens by a key, readable by every role of the test
CREATE TEMP TABLE ids (k text PRIMARY KEY, id bigint, ids bigint[], token text, st text);
CREATE TEMP TABLE errs (step text, code text, msg text, hint text);
CREATE TEMP TABLE truth (id bigint, tenant text, queue text, state text);
CREATE TEMP TABLE wc (job_id bigint, token text, tenant text);
GRANT ALL ON ids, errs, truth, wc TO PUBLIC;
CREATE FUNCTION pg_temp.jid(text) RETURNS bigint LANGUAGE sql STABLE
	AS $$ SELECT id FROM pg_temp.ids WHERE k = $1 $$;
-- ok() that shows the hint it looked at when it fails
CREATE FUNCTION pg_temp.ok_hint(boolean, text, text) RETURNS text LANGUAGE sql
	AS $$ SELECT ok(coalesce($1, false), $2)
				 || CASE WHEN coalesce($1, false) THEN '' ELSE E'\n' || diag('hint was: ' || coalesce($3, '(none)')) END $$;

-- ========================================================================
-- Part 1: a hostile search_path (23)
-- ========================================================================
-- alice plants look-alikes of what the API's queries use. Each records
-- that it ran (and as whom), then behaves like the original.
CREATE SCHEMA evil AUTHORIZATION alice;
SET ROLE alice;
CREATE TABLE evil.calls (who name NOT NULL DEFAULT current_user, what text NOT NULL);
CREATE TABLE evil.leaked (who name NOT NULL DEFAULT current_user, p jsonb);
GRANT USAGE ON SCHEMA evil TO PUBLIC;
GRANT SELECT, INSERT ON evil.calls, evil.leaked TO PUBLIC;

CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE plpgsql
	AS $$ BEGIN INSERT INTO evil.calls (what) VALUES ('now()'); RETURN pg_catalog.now(); END $$;
CREATE FUNCTION evil.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql
	AS $$ BEGIN INSERT INTO evil.calls (what) VALUES ('clock_timestamp()'); RETURN pg_catalog.clock_timestamp(); END $$;
CREATE FUNCTION evil.random() RETURNS double precision LANGUAGE plpgsql
	AS $$ BEGIN INSERT INTO evil.calls (what) VALUES ('random()'); RETURN pg_catalog.random(); END $$;
CREATE FUNCTION evil.nextval(regclass) RETURNS bigint LANGUAGE plpgsql
	AS $$ BEGIN INSERT INTO evil.calls (what) VALUES ('nextval()'); RETURN pg_catalog.nextval($1); END $$;
CREATE FUNCTION evil.hashtext(text) RETURNS integer LANGUAGE plpgsql
	AS $$ BEGIN INSERT INTO evil.calls (what) VALUES ('hashtext()'); RETURN pg_catalog.hashtext($1); END $$;
CREATE FUNCTION evil.pg_advisory_xact_lock(integer, integer) RETURNS void LANGUAGE plpgsql
	AS $$ BEGIN INSERT INTO evil.calls (what) VALUES ('pg_advisory_xact_lock()'); PERFORM pg_catalog.pg_advisory_xact_lock($1, $2); END $$;
CREATE FUNCTION evil.pg_is_in_recovery() RETURNS boolean LANGUAGE plpgsql
	AS $$ BEGIN INSERT INTO evil.calls (what) VALUES ('pg_is_in_recovery()'); RETURN pg_catalog.pg_is_in_recovery(); END $$;
CREATE FUNCTION evil.unnest(jsonb[]) RETURNS SETOF jsonb LANGUAGE plpgsql
	AS $$ BEGIN INSERT INTO evil.calls (what) VALUES ('unnest(jsonb[])'); RETURN QUERY SELECT * FROM pg_catalog.unnest($1); END $$;
CREATE FUNCTION evil.jsonb_build_object(text, text, text, text, text, name) RETURNS jsonb LANGUAGE plpgsql
	AS $$ BEGIN INSERT INTO evil.calls (what) VALUES ('jsonb_build_object()'); RETURN pg_catalog.jsonb_build_object($1, $2, $3, $4, $5, $6); END $$;
CREATE FUNCTION evil.eq_text(text, text) RETURNS boolean LANGUAGE plpgsql
	AS $$ BEGIN INSERT INTO evil.calls (what) VALUES ('text = text'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE FUNCTION evil.eq_name(name, name) RETURNS boolean LANGUAGE plpgsql
	AS $$ BEGIN INSERT INTO evil.calls (what) VALUES ('name = name'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE FUNCTION evil.eq_int8(bigint, bigint) RETURNS boolean LANGUAGE plpgsql
	AS $$ BEGIN INSERT INTO evil.calls (what) VALUES ('bigint = bigint'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE FUNCTION evil.eq_state(hasched.job_state, hasched.job_state) RETURNS boolean LANGUAGE plpgsql
	AS $$ BEGIN INSERT INTO evil.calls (what) VALUES ('job_state = job_state'); RETURN $1::text OPERATOR(pg_catalog.=) $2::text; END $$;
CREATE FUNCTION evil.le_tstz(timestamptz, timestamptz) RETURNS boolean LANGUAGE plpgsql
	AS $$ BEGIN INSERT INTO evil.calls (what) VALUES ('timestamptz <= timestamptz'); RETURN $1 OPERATOR(pg_catalog.<=) $2; END $$;
CREATE FUNCTION evil.plus_tstz(timestamptz, interval) RETURNS timestamptz LANGUAGE plpgsql
	AS $$ BEGIN INSERT INTO evil.calls (what) VALUES ('timestamptz + interval'); RETURN $1 OPERATOR(pg_catalog.+) $2; END $$;
CREATE FUNCTION evil.cat_text(text, text) RETURNS text LANGUAGE plpgsql
	AS $$ BEGIN INSERT INTO evil.calls (what) VALUES ('text || text'); RETURN $1 OPERATOR(pg_catalog.||) $2; END $$;
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.eq_text);
CREATE OPERATOR evil.= (LEFTARG = name, RIGHTARG = name, FUNCTION = evil.eq_name);
CREATE OPERATOR evil.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.eq_int8);
CREATE OPERATOR evil.= (LEFTARG = hasched.job_state, RIGHTARG = hasched.job_state, FUNCTION = evil.eq_state);
CREATE OPERATOR evil.<= (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = evil.le_tstz);
CREATE OPERATOR evil.+ (LEFTARG = timestamptz, RIGHTARG = interval, FUNCTION = evil.plus_tstz);
CREATE OPERATOR evil.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.cat_text);
-- for part 2: a leaky function in a WHERE clause, to try to read past RLS
CREATE FUNCTION evil.leak(jsonb) RETURNS boolean LANGUAGE plpgsql COST 0.0001
	AS $$ BEGIN INSERT INTO evil.leaked (p) VALUES ($1); RETURN true; END $$;
RESET ROLE;

-- No pgTAP call between SET search_path and RESET search_path: pgTAP's own
-- functions would use the planted operators. Each step records its error,
-- if any, in errs; the DO blocks themselves use no operator.
SET ROLE alice;
SET hasched.tenant = 'acme';
SET search_path = evil, public, pg_catalog;
DO $$
DECLARE
	jid bigint;
	many bigint[];
	done boolean;
BEGIN
	BEGIN
		SELECT hasched.submit('r_evil', '{"n": 1}'::jsonb, 'high') INTO jid;
		INSERT INTO pg_temp.ids (k, id) VALUES ('evil1', jid);
		INSERT INTO pg_temp.ids (k, st) VALUES ('user after submit', current_user);
		INSERT INTO pg_temp.ids (k, st) VALUES ('path after submit', current_setting('search_path'));
	EXCEPTION WHEN OTHERS THEN
		INSERT INTO pg_temp.errs VALUES ('submit', SQLSTATE, SQLERRM);
	END;
	BEGIN
		SELECT hasched.submit('r_evil', '{"n": 2}'::jsonb, idempotency_key => 'evil-key') INTO jid;
		INSERT INTO pg_temp.ids (k, id) VALUES ('evil2', jid);
		SELECT hasched.submit('r_evil', '{"n": 2}'::jsonb, idempotency_key => 'evil-key') INTO jid;
		INSERT INTO pg_temp.ids (k, id) VALUES ('evil2 again', jid);
	EXCEPTION WHEN OTHERS THEN
		INSERT INTO pg_temp.errs VALUES ('submit idempotent', SQLSTATE, SQLERRM);
	END;
	BEGIN
		SELECT hasched.submit_many('r_evil', ARRAY['{"n": 3}', '{"n": 4}']::jsonb[],
								   idempotency_keys => ARRAY['evil-3', NULL]) INTO many;
		INSERT INTO pg_temp.ids (k, ids) VALUES ('evil3', many);
	EXCEPTION WHEN OTHERS THEN
		INSERT INTO pg_temp.errs VALUES ('submit_many', SQLSTATE, SQLERRM);
	END;
	BEGIN
		SELECT hasched.cancel(many[2]) INTO done;
		INSERT INTO pg_temp.ids (k, id, st) VALUES ('evil4 cancelled', many[2], done::text);
		PERFORM hasched.retry(many[2]);
	EXCEPTION WHEN OTHERS THEN
		INSERT INTO pg_temp.errs VALUES ('cancel/retry', SQLSTATE, SQLERRM);
	END;
	BEGIN
		PERFORM hasched.submit('nosuchqueue', '{}'::jsonb);
	EXCEPTION WHEN OTHERS THEN
		INSERT INTO pg_temp.errs VALUES ('unknown queue', SQLSTATE, SQLERRM);
	END;
	INSERT INTO pg_temp.ids (k, st) VALUES ('user after error', current_user);
	INSERT INTO pg_temp.ids (k, st) VALUES ('path after error', current_setting('search_path'));
END
$$;
RESET ROLE;

SET ROLE w;
DO $$
DECLARE
	jid bigint;
	tok text;
	st hasched.job_state;
BEGIN
	BEGIN
		SELECT c.job_id, c.token INTO jid, tok FROM hasched.claim('r_evil', 'w-evil', 1) c;
		INSERT INTO pg_temp.ids (k, id, token) VALUES ('claim1', jid, tok);
		PERFORM hasched.heartbeat(jid, tok, '1 minute');
		PERFORM hasched.complete(jid, tok, '{"done": true}');
		INSERT INTO pg_temp.ids (k, st) VALUES ('user after claim', current_user);
	EXCEPTION WHEN OTHERS THEN
		INSERT INTO pg_temp.errs VALUES ('claim/heartbeat/complete', SQLSTATE, SQLERRM);
	END;
	BEGIN
		-- the same token again: a no-op (idempotent reports)
		PERFORM hasched.complete(jid, tok, '{"twice": true}');
	EXCEPTION WHEN OTHERS THEN
		INSERT INTO pg_temp.errs VALUES ('repeated report', SQLSTATE, SQLERRM);
	END;
	BEGIN
		PERFORM hasched.complete(jid, '1:1:0', '{"forged": true}');
	EXCEPTION WHEN OTHERS THEN
		INSERT INTO pg_temp.errs VALUES ('stale token', SQLSTATE, SQLERRM);
	END;
	BEGIN
		SELECT c.job_id, c.token INTO jid, tok FROM hasched.claim('r_evil', 'w-evil', 1, '10 seconds') c;
		SELECT hasched.fail(jid, tok, 'evil-fail', false) INTO st;
		INSERT INTO pg_temp.ids (k, id, token, st) VALUES ('claim2', jid, tok, st::text);
	EXCEPTION WHEN OTHERS THEN
		INSERT INTO pg_temp.errs VALUES ('claim/fail', SQLSTATE, SQLERRM);
	END;
END
$$;
RESET ROLE;

SET ROLE adm;
DO $$
BEGIN
	BEGIN
		PERFORM hasched.set_mode('paused', 'evil search_path test');
		PERFORM hasched.set_mode('normal');
		PERFORM hasched.requeue_expired();
	EXCEPTION WHEN OTHERS THEN
		INSERT INTO pg_temp.errs VALUES ('set_mode/requeue_expired', SQLSTATE, SQLERRM);
	END;
END
$$;
RESET ROLE;

-- control: the trap works, called directly (as alice) it is used
SET ROLE alice;
DO $$ BEGIN PERFORM now(); PERFORM 'a'::text = 'a'::text; END $$;
RESET ROLE;
RESET search_path;
RESET hasched.tenant;

SELECT results_eq(
	$$SELECT who, what FROM evil.calls ORDER BY what$$,
	$$VALUES ('alice'::name, 'now()'::text), ('alice', 'text = text')$$,
	'no planted function or operator ran inside the API (only the two control calls)');
SELECT results_eq(
	$$SELECT step, code FROM errs ORDER BY step$$,
	$$VALUES ('stale token', 'JQ006'), ('unknown queue', 'JQ010')$$,
	'under the hostile search_path every call worked; only the expected refusals');
SELECT results_eq(
	$$SELECT k, st FROM ids WHERE k LIKE 'user after %' OR k LIKE 'path after %' ORDER BY k$$,
	$$VALUES ('path after error', 'evil, public, pg_catalog'), ('path after submit', 'evil, public, pg_catalog'),
			 ('user after claim', 'w'), ('user after error', 'alice'), ('user after submit', 'alice')$$,
	'the API gives the caller back its own role and search_path, after success and after an error');
SELECT results_eq(
	$$SELECT queue, tenant, owner, priority, payload FROM hasched.job WHERE id = pg_temp.jid('evil1')$$,
	$$VALUES ('r_evil'::text, 'acme'::regrole, 'alice'::regrole, 0::smallint, '{"n": 1}'::jsonb)$$,
	'submit under a hostile search_path stored the right job');
SELECT ok(pg_temp.jid('evil1') IS NOT NULL AND pg_temp.jid('evil2') IS NOT NULL
		  AND pg_temp.jid('evil1') <> pg_temp.jid('evil2'), 'two distinct job ids');
SELECT is(pg_temp.jid('evil2 again'), pg_temp.jid('evil2'),
	'the idempotency key returned the same job under a hostile search_path');
SELECT is((SELECT cardinality(ids) FROM ids WHERE k = 'evil3'), 2, 'submit_many returned two ids');
SELECT is((SELECT st FROM ids WHERE k = 'evil4 cancelled'), 'true', 'cancel under a hostile search_path');
SELECT is((SELECT state::text FROM hasched.job WHERE id = (SELECT ids[2] FROM ids WHERE k = 'evil3')), 'pending',
	'retry under a hostile search_path brought the cancelled job back');
SELECT is(pg_temp.jid('claim1'), pg_temp.jid('evil1'), 'claim under a hostile search_path took the high-priority job first');
SELECT is((SELECT state::text FROM hasched.job WHERE id = pg_temp.jid('evil1')), 'succeeded',
	'complete under a hostile search_path');
SELECT is((SELECT result FROM hasched.job WHERE id = pg_temp.jid('evil1')), '{"done": true}'::jsonb,
	'the stale second complete changed nothing');
SELECT is(pg_temp.jid('claim2'), pg_temp.jid('evil2'), 'the second claim took the next job');
SELECT is((SELECT st FROM ids WHERE k = 'claim2'), 'dead', 'fail(retry => false) returned dead');
SELECT is((SELECT last_error FROM hasched.job WHERE id = pg_temp.jid('evil2')), 'evil-fail',
	'fail recorded the error');
SELECT is((SELECT count(*)::int FROM hasched.job_run WHERE job_id IN (pg_temp.jid('evil1'), pg_temp.jid('evil2'))), 1,
	'one run row per attempt that did not succeed (the success is the job row)');
SELECT is((SELECT mode FROM hasched.state), 'normal', 'set_mode under a hostile search_path');
SELECT ok(EXISTS (SELECT 1 FROM hasched.event WHERE kind = 'mode' AND detail->>'mode' = 'paused'
					AND detail->>'reason' = 'evil search_path test'),
	'set_mode recorded its event');
SELECT ok((SELECT run_at BETWEEN now() - interval '1 hour' AND clock_timestamp() + interval '1 minute'
			 FROM hasched.job WHERE id = pg_temp.jid('evil1')),
	'run_at of the job is a sane time');

-- temp objects planted by the caller are not used either (pg_temp last)
SET ROLE alice;
SET hasched.tenant = 'acme';
CREATE TEMP TABLE queue (name text, default_timeout interval, default_max_attempts int);
INSERT INTO pg_temp.queue VALUES ('only-in-temp', '1 second', 1);
SELECT throws_ok($$SELECT hasched.submit('only-in-temp', '{}')$$, 'JQ010', NULL,
	'a temp table named like a hasched table is not used by submit');
SELECT lives_ok($$INSERT INTO ids (k, id) SELECT 'temp-shadow', hasched.submit('r_evil', '{"n": 5}')$$,
	'submit works with a temp table named queue in the session');
DROP TABLE pg_temp.queue;
RESET hasched.tenant;
RESET ROLE;
SELECT is((SELECT default_max_attempts FROM hasched.job j JOIN hasched.queue q ON q.name = j.queue
			WHERE j.id = pg_temp.jid('temp-shadow')) ,
		  (SELECT max_attempts FROM hasched.job WHERE id = pg_temp.jid('temp-shadow')),
	'the job got the defaults of hasched.queue');
SELECT is((SELECT count(*)::int FROM evil.calls), 2, 'still no planted function called');

-- ========================================================================
-- Part 2: tenant isolation and escalation (43)
-- ========================================================================
SET ROLE alice;
SET hasched.tenant = 'acme';
SELECT lives_ok($$INSERT INTO ids (k, id) SELECT 'acme:1', hasched.submit('default', '{"secret": "acme-1"}')$$,
	'alice submits a job for acme');
SELECT lives_ok($$INSERT INTO ids (k, id) SELECT 'acme:2', hasched.submit('default', '{"secret": "acme-2"}', idempotency_key => 'shared-key')$$,
	'alice submits a job for acme with an idempotency key');
SELECT lives_ok($$INSERT INTO ids (k, id) SELECT 'acme:sql',
		hasched.submit('default', '{"secret": "acme-sql", "sql": "x''); DROP TABLE hasched.job; --", "q": "O''Reilly \"quoted\" $1 %s"}')$$,
	'alice submits a payload that contains SQL text');
RESET ROLE;

SET ROLE bob;
SET hasched.tenant = 'globex';
SELECT lives_ok($$INSERT INTO ids (k, id) SELECT 'globex:1', hasched.submit('default', '{"secret": "globex-1"}')$$,
	'bob submits a job for globex');
SELECT lives_ok($$INSERT INTO ids (k, id) SELECT 'globex:2', hasched.submit('default', '{"secret": "globex-2"}', idempotency_key => 'shared-key')$$,
	'bob submits with the same idempotency key as alice');
SELECT lives_ok($$INSERT INTO ids (k, id) SELECT 'globex:later',
		hasched.submit('default', '{"secret": "globex-later"}', run_at => now() + interval '1 hour')$$,
	'bob submits a job for later');
RESET ROLE;

SELECT isnt(pg_temp.jid('globex:2'), pg_temp.jid('acme:2'),
	'the same idempotency key in another tenant makes a new job (no other tenant''s job id leaks)');
DELETE FROM truth;
INSERT INTO truth SELECT id, tenant, queue, state FROM hasched.job;
SELECT ok((SELECT count(*) FROM truth WHERE tenant = 'globex') > 0 AND (SELECT count(*) FROM truth WHERE tenant = 'acme') > 0,
	'there are jobs of both tenants');
SELECT is((SELECT owner::text FROM hasched.job WHERE id = pg_temp.jid('acme:1')), 'alice',
	'the owner of a job is the role that submitted it');

-- what alice sees
SET ROLE alice;
SELECT results_eq($$SELECT id FROM hasched.jobs ORDER BY id$$,
	$$SELECT id FROM truth WHERE tenant = 'acme' ORDER BY id$$,
	'alice sees exactly the acme jobs in hasched.jobs');
SELECT results_eq($$SELECT id FROM hasched.job ORDER BY id$$,
	$$SELECT id FROM truth WHERE tenant = 'acme' ORDER BY id$$,
	'alice sees exactly the acme jobs in hasched.job');
SELECT is((SELECT count(*)::int FROM hasched.job WHERE tenant = 'globex'::regrole), 0,
	'alice counts no globex job in hasched.job');
SELECT is((SELECT count(*)::int FROM hasched.jobs WHERE id = pg_temp.jid('globex:1')), 0,
	'alice cannot read bob''s job by its id');
SELECT is((SELECT (pending + scheduled)::int FROM hasched.queues WHERE name = 'default'),
		  (SELECT count(*)::int FROM truth WHERE tenant = 'acme' AND queue = 'default' AND state IN ('pending', 'scheduled')),
	'hasched.queues counts only alice''s jobs for alice');
SELECT results_eq($$SELECT tenant FROM hasched.tenants$$, $$VALUES ('acme'::name)$$,
	'hasched.tenants shows alice only acme');
SELECT results_eq($$SELECT name FROM hasched.tenant$$, $$VALUES ('acme'::name)$$,
	'hasched.tenant shows alice only acme');
SELECT is((SELECT count(*)::int FROM hasched.quota_use WHERE tenant <> 'acme'), 0,
	'hasched.quota_use shows alice only acme');
SET hasched.tenant = 'globex';
SELECT is((SELECT count(*)::int FROM hasched.jobs WHERE tenant = 'globex'), 0,
	'setting hasched.tenant to globex does not let alice see globex jobs');
SET hasched.tenant = 'acme';
SELECT throws_ok($$GRANT globex TO alice$$, '42501', NULL, 'alice cannot make herself a member of globex');
SELECT lives_ok($$SELECT count(*) FROM hasched.job WHERE evil.leak(payload)$$,
	'alice runs a leaky function over hasched.job');
SELECT lives_ok($$SELECT count(*) FROM hasched.jobs WHERE evil.leak(payload)$$,
	'alice runs a leaky function over hasched.jobs');
RESET ROLE;
SELECT is_empty($$SELECT l.p FROM evil.leaked l
				   WHERE NOT EXISTS (SELECT 1 FROM hasched.job j WHERE j.tenant = 'acme'::regrole AND j.payload = l.p)$$,
	'a leaky function in alice''s WHERE clause saw no row of another tenant');
SELECT ok((SELECT count(*) FROM evil.leaked) > 0, '(the leaky function did run on alice''s rows)');

-- bob against alice's jobs
SET ROLE bob;
SET hasched.tenant = 'globex';
SELECT is((SELECT count(*)::int FROM hasched.jobs WHERE tenant = 'acme'), 0, 'bob sees no acme job in hasched.jobs');
SELECT is((SELECT count(*)::int FROM hasched.job WHERE id = pg_temp.jid('acme:1')), 0,
	'bob cannot read alice''s job by its id');
SELECT throws_ok(pg_catalog.format('SELECT hasched.cancel(%s)', pg_temp.jid('acme:1')), 'JQ014',
	pg_catalog.format('job %s does not exist', pg_temp.jid('acme:1')),
	'bob cannot cancel alice''s job: it "does not exist" (JQ014)');
SELECT throws_ok(pg_catalog.format('SELECT hasched.retry(%s)', pg_temp.jid('acme:1')), 'JQ014',
	pg_catalog.format('job %s does not exist', pg_temp.jid('acme:1')),
	'bob cannot retry alice''s job (JQ014)');
SELECT throws_ok('SELECT hasched.cancel(-1)', 'JQ014', 'job -1 does not exist',
	'a job that does not exist gives the same error (no oracle for other tenants'' ids)');
SELECT throws_ok($$SELECT hasched.submit('default', '{}', tenant => 'acme')$$, '42501', NULL,
	'bob cannot submit for acme by argument (42501)');
SET hasched.tenant = 'acme';
SELECT throws_ok($$SELECT hasched.submit('default', '{}')$$, '42501', NULL,
	'bob cannot submit for acme through hasched.tenant (42501)');
SET hasched.tenant = 'globex';
SELECT throws_ok(pg_catalog.format('SELECT hasched.complete(%s, %L)', pg_temp.jid('acme:1'), '1:1:1'), '42501', NULL,
	'bob cannot complete alice''s job');
RESET ROLE;
SELECT is((SELECT state::text FROM hasched.job WHERE id = pg_temp.jid('acme:1')), 'pending',
	'bob''s attempts changed nothing: alice''s job is still pending');

-- alice's own escalation attempts
SET ROLE alice;
SET hasched.tenant = 'acme';
SELECT throws_ok($$SELECT hasched.submit('default', '{}', tenant => 'globex')$$, '42501',
	'permission denied to submit jobs for tenant "globex"', 'alice cannot submit for globex (42501)');
SELECT throws_ok($$SELECT hasched.submit('default', '{}', tenant => 'hasched_admin')$$, 'JQ015', NULL,
	'alice cannot submit as tenant hasched_admin (not a tenant: JQ015)');
SELECT throws_ok(pg_catalog.format('SELECT hasched.submit(%L, %L, tenant => %L)', 'default', '{}', session_user), '42501', NULL,
	'alice cannot submit as the superuser''s tenant');
SELECT throws_ok($$INSERT INTO hasched.job (queue, tenant, owner, priority, state, run_at, max_attempts, timeout, payload)
				  VALUES ('default', 'globex', 'bob', 0, 'pending', now(), 1, '1 minute', '{}')$$, '42501', NULL,
	'alice cannot INSERT into hasched.job');
SELECT throws_ok(pg_catalog.format('UPDATE hasched.job SET state = %L WHERE id = %s', 'succeeded', pg_temp.jid('acme:1')),
	'42501', NULL, 'alice cannot UPDATE her own job directly');
SELECT throws_ok($$UPDATE hasched.job SET payload = '{}'$$, '42501', NULL, 'alice cannot UPDATE hasched.job');
SELECT throws_ok($$DELETE FROM hasched.job$$, '42501', NULL, 'alice cannot DELETE from hasched.job');
SELECT throws_ok($$SELECT hasched.set_mode('read_only', 'alice')$$, '42501', NULL, 'alice cannot call set_mode');
SELECT throws_ok($$SELECT * FROM hasched.claim('default', 'alice')$$, '42501', NULL, 'alice cannot call claim');
SELECT is(
	(SELECT hasched.cancel(pg_temp.jid('acme:2'))), true, 'alice can cancel her own job');
SELECT lives_ok(pg_catalog.format('SELECT hasched.retry(%s)', pg_temp.jid('acme:2')), 'alice can retry her own job');
RESET ROLE;

-- ========================================================================
-- Part 3: injection (12)
-- ========================================================================
SET ROLE alice;
SET hasched.tenant = 'acme';
SELECT throws_ok($$SELECT hasched.submit('default''; DROP TABLE hasched.job; --', '{}')$$, 'JQ010',
	'queue "default''; DROP TABLE hasched.job; --" does not exist',
	'a queue name with SQL in it is an unknown queue (JQ010)');
SELECT throws_ok($$SELECT hasched.submit('default', '{}', tenant => 'acme''; DROP TABLE hasched.job; --')$$, 'JQ015', NULL,
	'a tenant name with quotes is an unknown tenant (JQ015)');
SET hasched.tenant = 'x"; DROP TABLE hasched.job; --';
SELECT throws_ok($$SELECT hasched.submit('default', '{}')$$, 'JQ015', NULL,
	'a hasched.tenant setting with quotes is an unknown tenant (JQ015)');
SET hasched.tenant = 'acme';
SELECT lives_ok($$INSERT INTO ids (k, id) SELECT 'acme:key', hasched.submit('default', '{"secret": "acme-key"}',
		idempotency_key => $k$'); DELETE FROM hasched.job; --$k$)$$,
	'an idempotency key with SQL in it is accepted as data');
-- the hints of these errors are SQL meant to be copied by a person (into a
-- superuser session, from a log): the names in them must be quoted, or the
-- attacker's text becomes the administrator's SQL
DO $$
DECLARE h text;
BEGIN
	BEGIN
		PERFORM hasched.submit('x''); DROP TABLE hasched.job; --', '{}');
	EXCEPTION WHEN OTHERS THEN
		GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT;
		INSERT INTO pg_temp.errs VALUES ('hint: submit queue', SQLSTATE, SQLERRM, h);
	END;
	BEGIN
		PERFORM hasched.submit('default', '{}', tenant => 'x"; DROP ROLE hasched_admin; --');
	EXCEPTION WHEN OTHERS THEN
		GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT;
		INSERT INTO pg_temp.errs VALUES ('hint: tenant', SQLSTATE, SQLERRM, h);
	END;
END
$$;
RESET ROLE;
SET ROLE w;
DO $$
DECLARE h text;
BEGIN
	PERFORM * FROM hasched.claim('x''); DROP TABLE hasched.job; --', 'w');
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT;
	INSERT INTO pg_temp.errs VALUES ('hint: claim queue', SQLSTATE, SQLERRM, h);
END
$$;
RESET ROLE;
SELECT pg_temp.ok_hint((SELECT code = 'JQ010' AND strpos(hint, 'VALUES (' || quote_literal('x''); DROP TABLE hasched.job; --') || ')') > 0
			 FROM errs WHERE step = 'hint: submit queue'),
	'the hint of an unknown queue (submit) quotes the name as a literal',
	(SELECT hint FROM errs WHERE step = 'hint: submit queue'));
SELECT pg_temp.ok_hint((SELECT code = 'JQ010' AND strpos(hint, 'VALUES (' || quote_literal('x''); DROP TABLE hasched.job; --') || ')') > 0
			 FROM errs WHERE step = 'hint: claim queue'),
	'the hint of an unknown queue (claim) quotes the name as a literal',
	(SELECT hint FROM errs WHERE step = 'hint: claim queue'));
SELECT pg_temp.ok_hint((SELECT code = 'JQ015' AND strpos(hint, 'CREATE ROLE ' || quote_ident('x"; DROP ROLE hasched_admin; --')) > 0
			 FROM errs WHERE step = 'hint: tenant'),
	'the hint of an unknown tenant quotes the name as an identifier',
	(SELECT hint FROM errs WHERE step = 'hint: tenant'));
SELECT has_table('hasched', 'job', 'hasched.job still exists');
SELECT is((SELECT count(*)::int FROM hasched.job WHERE id IN (SELECT id FROM truth)),
		  (SELECT count(*)::int FROM truth), 'no job was deleted');
SELECT is((SELECT payload FROM hasched.job WHERE id = pg_temp.jid('acme:sql')),
	'{"secret": "acme-sql", "sql": "x''); DROP TABLE hasched.job; --", "q": "O''Reilly \"quoted\" $1 %s"}'::jsonb,
	'a payload with SQL text is stored verbatim');
SELECT is((SELECT payload->>'sql' FROM hasched.job WHERE id = pg_temp.jid('acme:sql')),
	'x''); DROP TABLE hasched.job; --', 'the SQL text in the payload is intact');
SELECT is((SELECT idempotency_key FROM hasched.job WHERE id = pg_temp.jid('acme:key')),
	$k$'); DELETE FROM hasched.job; --$k$, 'the idempotency key is stored verbatim');

-- ========================================================================
-- Part 4: the worker and the admin (17)
-- ========================================================================
DELETE FROM truth;
INSERT INTO truth SELECT id, tenant, queue, state FROM hasched.job;
SET ROLE w;
SELECT is((SELECT count(*)::int FROM hasched.job), 0, 'w, a member of no tenant, sees no row of hasched.job');
SELECT is((SELECT count(*)::int FROM hasched.jobs), 0, 'w sees no row of hasched.jobs');
SELECT throws_ok($$SELECT * FROM hasched.claim('default''; DELETE FROM hasched.job; --', 'w')$$, 'JQ010', NULL,
	'claim on a queue name with SQL in it is an unknown queue (JQ010)');
SELECT lives_ok($$INSERT INTO wc SELECT c.job_id, c.token, c.tenant FROM hasched.claim('default', 'w''); DROP TABLE hasched.job; --', 100) c$$,
	'w claims from queue default');
SELECT results_eq($$SELECT job_id FROM wc ORDER BY job_id$$,
	$$SELECT id FROM truth WHERE queue = 'default' AND state = 'pending' ORDER BY id$$,
	'w claimed every due job of default, whatever its tenant');
SELECT results_eq($$SELECT DISTINCT tenant FROM wc ORDER BY tenant$$, $$VALUES ('acme'::text), ('globex')$$,
	'the claimed jobs belong to both tenants');
SELECT lives_ok($$SELECT hasched.fail(job_id, token, 'no retry', false) FROM wc$$,
	'w reports the jobs of both tenants (as failed for good, so that they have run history)');
SELECT is((SELECT count(*)::int FROM hasched.job), 0, 'after reporting them w still sees no job row');
SELECT is((SELECT count(*)::int FROM hasched.job_run), 0, 'w sees no run history');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM hasched.job WHERE id IN (SELECT job_id FROM wc) AND state = 'dead'),
		  (SELECT count(*)::int FROM wc), 'every claimed job is dead, as reported');
SELECT is((SELECT DISTINCT worker FROM hasched.job WHERE id IN (SELECT job_id FROM wc)),
	'w''); DROP TABLE hasched.job; --', 'the worker name is stored verbatim');

SET ROLE bob;
SELECT is((SELECT count(*)::int FROM hasched.job_run WHERE job_id IN (SELECT job_id FROM wc WHERE tenant = 'acme')), 0,
	'bob sees no run history of acme jobs');
RESET ROLE;
SET ROLE alice;
SELECT is((SELECT count(*)::int FROM hasched.job_run WHERE job_id IN (SELECT job_id FROM wc)),
		  (SELECT count(*)::int FROM wc WHERE tenant = 'acme'), 'alice sees the run history of her jobs only');
RESET ROLE;

DELETE FROM truth;
INSERT INTO truth SELECT id, tenant, queue, state FROM hasched.job;
SET ROLE adm;
SELECT results_eq($$SELECT id FROM hasched.job ORDER BY id$$, $$SELECT id FROM truth ORDER BY id$$,
	'a member of hasched_admin sees every job in hasched.job');
SELECT results_eq($$SELECT id FROM hasched.jobs ORDER BY id$$, $$SELECT id FROM truth ORDER BY id$$,
	'a member of hasched_admin sees every job in hasched.jobs');
SELECT is((SELECT count(DISTINCT tenant)::int FROM hasched.job_run r JOIN hasched.job j ON j.id = r.job_id
			WHERE j.tenant IN ('acme'::regrole, 'globex'::regrole)), 2, 'the admin sees the run history of both tenants');
SELECT is(hasched.cancel(pg_temp.jid('globex:later')), true, 'the admin can cancel a job of any tenant');
RESET ROLE;

-- ========================================================================
-- Part 5: the admin cannot get its code run by the API (3)
-- ========================================================================
-- The API runs its statements as the extension owner (a superuser). A
-- trigger on a table the API writes would run there too, with the
-- superuser's rights: an administrator of hasched must not be able to
-- create one (it could ALTER ROLE itself SUPERUSER).
CREATE SCHEMA adm_own AUTHORIZATION adm;
SET ROLE adm;
CREATE TABLE adm_own.ran (who name, super boolean);
GRANT USAGE ON SCHEMA adm_own TO PUBLIC;
GRANT INSERT ON adm_own.ran TO PUBLIC;
CREATE FUNCTION adm_own.trap() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO adm_own.ran SELECT current_user, r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user;
	RETURN NEW;
END
$$;
SELECT throws_ok($$CREATE TRIGGER adm_trap BEFORE INSERT ON hasched.job FOR EACH ROW EXECUTE FUNCTION adm_own.trap()$$,
	'42501', NULL, 'a member of hasched_admin cannot create a trigger on hasched.job');
RESET ROLE;
SET ROLE alice;
SET hasched.tenant = 'acme';
SELECT lives_ok($$SELECT hasched.submit('default', '{"after": "trap"}')$$, 'alice submits a job (after the trigger attempt)');
RESET ROLE;
SELECT is_empty($$SELECT who, super FROM adm_own.ran$$,
	'no code of the admin ran inside submit (as the extension owner)');
DROP TRIGGER IF EXISTS adm_trap ON hasched.job;

SELECT * FROM finish();
ROLLBACK;
