-- tenants see and cancel only their own jobs; the API checks the caller
SET hasched.tenant = 'hs_acme';
SELECT hasched.submit('default', '{"secret": "acme"}') AS acme_job \gset
SELECT hasched.submit('default', '{"secret": "globex"}', tenant => 'hs_globex') AS globex_job \gset

SET ROLE hs_alice;
SELECT current_setting('hasched.tenant');
SELECT count(*) > 0 AS sees_own, bool_and(tenant = 'hs_acme') AS only_own FROM hasched.jobs;
SELECT count(*) AS globex_rows FROM hasched.job WHERE id = :globex_job;
SELECT try(format('SELECT hasched.cancel(%s)', :globex_job));
SELECT try(format('SELECT hasched.retry(%s)', :globex_job));
SELECT try($$SELECT hasched.submit('default', '{}', tenant => 'hs_globex')$$);
SELECT try(format('UPDATE hasched.job SET state = %L WHERE id = %s RETURNING 1', 'cancelled', :acme_job));
SELECT try($$DELETE FROM hasched.job RETURNING 1$$);
SELECT try($$SELECT hasched.set_mode('read_only')$$);
SELECT try($$SELECT count(*) FROM hasched.claim('default', 'alice')$$);
SELECT hasched.cancel(:acme_job) AS cancels_own;
RESET ROLE;
SELECT state FROM hasched.job WHERE id = :globex_job;

-- a role that belongs to no tenant and has no hasched role can do nothing
CREATE ROLE hs_nobody LOGIN;
SET ROLE hs_nobody;
SELECT try($$SELECT hasched.submit('default', '{}')$$);
SELECT try($$SELECT count(*) FROM hasched.job$$);
RESET ROLE;

-- the functions pin their search_path: objects planted earlier in it are not used
CREATE SCHEMA evil;
CREATE TABLE evil.calls (n int);
CREATE FUNCTION evil.clock_timestamp() RETURNS timestamptz LANGUAGE sql
	AS $$ INSERT INTO evil.calls VALUES (1) RETURNING now() - interval '10 years' $$;
CREATE FUNCTION evil.texteq(text, text) RETURNS boolean LANGUAGE sql
	AS $$ SELECT true $$;
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.texteq);
GRANT USAGE ON SCHEMA evil TO PUBLIC;
SET search_path = evil, pg_catalog, public;
SELECT hasched.submit('default', '{}', 'high') AS planted \gset
SELECT try($$SELECT hasched.submit('nosuchqueue', '{}')$$);
SELECT count(*) = 1 AS one_claimed FROM hasched.claim('default', 'w', 1);
RESET search_path;
SELECT count(*) AS evil_calls FROM evil.calls;
DROP SCHEMA evil CASCADE;
