-- quotas (jobs per UTC day) and rate limits (per second with a burst)
INSERT INTO hasched.tier (name, jobs_per_day, rate_per_second, burst) VALUES
	('tiny', 3, 1000, 1000),
	('slow', NULL, 0.001, 2);
CREATE ROLE hs_tiny NOLOGIN;
CREATE ROLE hs_slow NOLOGIN;
CREATE ROLE hs_free NOLOGIN;
INSERT INTO hasched.tenant (name, tier) VALUES ('hs_tiny', 'tiny'), ('hs_slow', 'slow');

-- the default tiers
SELECT name, jobs_per_day, rate_per_second, burst FROM hasched.tier ORDER BY jobs_per_day NULLS LAST, name;

-- daily quota: the fourth job of the day is refused and nothing is written
SET hasched.tenant = 'hs_tiny';
SELECT count(*) FROM (SELECT hasched.submit('default', '{}') FROM generate_series(1, 3)) s;
SELECT try($$SELECT hasched.submit('default', '{}')$$);
SELECT try($$SELECT hasched.submit_many('default', ARRAY['{}']::jsonb[])$$);
SELECT count(*) FROM hasched.job WHERE tenant = 'hs_tiny'::regrole;
-- a tenant-level override lifts the tier's limit; an idempotent repeat is
-- the same job, so it is counted once
UPDATE hasched.tenant SET jobs_per_day = 5 WHERE name = 'hs_tiny';
SELECT hasched.submit('default', '{}', idempotency_key => 'x') = hasched.submit('default', '{}', idempotency_key => 'x') AS same;
SELECT tenant, tier, jobs_per_day, used_today FROM hasched.tenants WHERE tenant = 'hs_tiny';

-- rate limit: a burst of 2, then refused with a hint of when to retry
SET hasched.tenant = 'hs_slow';
SELECT hasched.submit('default', '{}') > 0 AS first, hasched.submit('default', '{}') > 0 AS second;
SELECT regexp_replace(try($$SELECT hasched.submit('default', '{}')$$), 'Retry in \d+ ms', 'Retry in N ms');
SELECT try($$SELECT hasched.submit_many('default', ARRAY['{}', '{}', '{}']::jsonb[])$$);
SELECT count(*) FROM hasched.job WHERE tenant = 'hs_slow'::regrole;

-- quotas off: nothing is refused (the jobs still count as the tenant's use
-- of the day: they are in hasched.job)
SET hasched.enforce_quotas = off;
SELECT count(*) FROM (SELECT hasched.submit('default', '{}') FROM generate_series(1, 4)) s;
RESET hasched.enforce_quotas;

-- a tenant without a row gets hasched.default_tier (free: 100 a day, 1/s with a burst of 10)
SET hasched.tenant = 'hs_free';
SELECT count(*) FROM (SELECT hasched.submit('default', '{}') FROM generate_series(1, 10)) s;
SELECT regexp_replace(try($$SELECT hasched.submit('default', '{}')$$), 'Retry in \d+ ms', 'Retry in N ms');
-- hasched.default_tier must name a tier; one removed after it was set is
-- refused at submit
SELECT try($$SET hasched.default_tier = 'gold'$$);
INSERT INTO hasched.tier (name) VALUES ('gold');
SET hasched.default_tier = 'gold';
DELETE FROM hasched.tier WHERE name = 'gold';
SELECT try($$SELECT hasched.submit('default', '{}')$$);
RESET hasched.default_tier;
SELECT tenant, tier, jobs_per_day, used_today, rate_per_second, burst FROM hasched.tenants
 WHERE tenant IN ('hs_tiny', 'hs_slow', 'hs_free') ORDER BY tenant;

-- the day's use is the tenant's jobs created today: deleted ones (history
-- pruning deletes finished jobs) stay counted, in hasched.quota_use
DELETE FROM hasched.job WHERE tenant = 'hs_tiny'::regrole;
SELECT tenant, day = (now() AT TIME ZONE 'UTC')::date AS today, used FROM hasched.quota_use;
SELECT used_today FROM hasched.tenants WHERE tenant = 'hs_tiny';

-- a submit rolled back, or in a savepoint rolled back, is not counted
SET hasched.tenant = 'hs_tiny';
BEGIN;
SELECT hasched.submit('default', '{}') > 0 AS submitted;
ROLLBACK;
BEGIN;
SAVEPOINT s;
SELECT hasched.submit_many('default', ARRAY['{}']::jsonb[]) IS NOT NULL AS submitted;
ROLLBACK TO s;
SELECT hasched.submit('default', '{}') > 0 AS submitted;
COMMIT;
SELECT try($$SELECT hasched.submit('default', '{}')$$);

-- a limit raised in a transaction that rolls back applies only inside it
BEGIN;
UPDATE hasched.tenant SET jobs_per_day = 10 WHERE name = 'hs_tiny';
SELECT hasched.submit('default', '{}') > 0 AS submitted;
ROLLBACK;
SELECT try($$SELECT hasched.submit('default', '{}')$$);
SET hasched.tenant = 'hs_acme';
