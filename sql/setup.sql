-- setup: the extension, test roles, and try(), which runs a statement and
-- shows its outcome as "ok: <result>" or "SQLSTATE: message | detail | hint",
-- so that every refusal's SQLSTATE is visible in the expected output.
CREATE EXTENSION hasched;
SELECT extname, extversion FROM pg_extension WHERE extname = 'hasched';
SELECT nspname FROM pg_namespace WHERE nspname = 'hasched';

CREATE FUNCTION try(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	r text;
	st text; msg text; det text; hint text;
BEGIN
	EXECUTE sql INTO r;
	RETURN 'ok: ' || coalesce(r, '<null>');
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
		det = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
	RETURN regexp_replace(regexp_replace(
		st || ': ' || msg
		|| CASE WHEN det <> '' THEN ' | ' || det ELSE '' END
		|| CASE WHEN hint <> '' THEN ' | ' || hint ELSE '' END,
		'\d{4}-\d\d-\d\d[ T][0-9:.]+([+-]\d\d(:\d\d)?)?', '<time>', 'g'),
		'job \d+', 'job <id>', 'g');
END
$$;

-- tenants are roles; the regression tests submit for these
CREATE ROLE hs_acme NOLOGIN;
CREATE ROLE hs_globex NOLOGIN;
CREATE ROLE hs_alice LOGIN IN ROLE hs_acme, hasched_submitter;
CREATE ROLE hs_bob LOGIN IN ROLE hs_globex, hasched_submitter;
CREATE ROLE hs_worker LOGIN IN ROLE hasched_worker;
INSERT INTO hasched.tenant (name, tier) VALUES ('hs_acme', 'enterprise'), ('hs_globex', 'enterprise');
SET hasched.tenant = 'hs_acme';
