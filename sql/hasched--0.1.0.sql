/*
 * hasched--0.1.0.sql
 *		Schema of hasched: jobs, queues, tenants and tiers, quota use, run
 *		history, events, epochs, the SQL API, views and security.
 *
 * Naming: tables are singular (hasched.job), the psql views over them are
 * plural (hasched.jobs).  Every object is schema-qualified; functions that
 * run with more rights than their caller pin search_path.
 */

\echo Use "CREATE EXTENSION hasched" to load this file. \quit

/* ------------------------------------------------------------------------
 * Roles (cluster-wide; created once, kept when the extension is dropped)
 * ------------------------------------------------------------------------ */
DO $roles$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'hasched_submitter') THEN
		CREATE ROLE hasched_submitter NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'hasched_worker') THEN
		CREATE ROLE hasched_worker NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'hasched_admin') THEN
		CREATE ROLE hasched_admin NOLOGIN;
	END IF;
	GRANT hasched_submitter, hasched_worker TO hasched_admin;
END
$roles$;

GRANT USAGE ON SCHEMA hasched TO hasched_submitter, hasched_worker, hasched_admin;

/* ------------------------------------------------------------------------
 * Configuration tables
 * ------------------------------------------------------------------------ */
CREATE TABLE hasched.tier (
	name			text PRIMARY KEY
		CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
	jobs_per_day	bigint CHECK (jobs_per_day >= 0),
	rate_per_second	double precision CHECK (rate_per_second > 0),
	burst			integer NOT NULL DEFAULT 1 CHECK (burst >= 1)
);
COMMENT ON TABLE hasched.tier IS
	'Service tiers: jobs per UTC day and a submit rate per second with a burst; NULL means unlimited.';

INSERT INTO hasched.tier (name, jobs_per_day, rate_per_second, burst) VALUES
	('free', 100, 1, 10),
	('pro', 10000, 100, 1000),
	('enterprise', NULL, NULL, 1);

CREATE TABLE hasched.tenant (
	name			name PRIMARY KEY,
	tier			text NOT NULL DEFAULT 'free' REFERENCES hasched.tier (name) ON UPDATE CASCADE,
	jobs_per_day	bigint CHECK (jobs_per_day >= 0),
	rate_per_second	double precision CHECK (rate_per_second > 0),
	burst			integer CHECK (burst >= 1)
);
COMMENT ON TABLE hasched.tenant IS
	'Tenants are roles: a tenant''s jobs are visible to the members of the role. A tenant without a row has tier hasched.default_tier; non-NULL limits here override the tier''s.';

CREATE TABLE hasched.queue (
	name			text PRIMARY KEY
		CHECK (name ~ '^[A-Za-z0-9_.:-]{1,63}$'),
	transport		text NOT NULL DEFAULT 'pull'
		CHECK (transport IN ('pull', 'sql', 'amqp')),
	concurrency		integer NOT NULL DEFAULT 0 CHECK (concurrency >= 0),
	default_timeout	interval NOT NULL DEFAULT '5 minutes' CHECK (default_timeout > '0'),
	default_max_attempts integer NOT NULL DEFAULT 3 CHECK (default_max_attempts >= 1),
	lease			interval NOT NULL DEFAULT '30 seconds' CHECK (lease > '0'),
	backoff_base	interval NOT NULL DEFAULT '1 second' CHECK (backoff_base > '0'),
	backoff_max		interval NOT NULL DEFAULT '1 hour' CHECK (backoff_max >= backoff_base),
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE hasched.queue IS
	'Queues and their settings: transport (pull = claimed by external workers, sql = run by executors, amqp = sent to RabbitMQ), concurrency (0 = unlimited), defaults for timeout and attempts, lease length, retry backoff.';

INSERT INTO hasched.queue (name) VALUES ('default');

/* Periodic jobs: cron (optional seconds field) or @every, per time zone. */
CREATE TABLE hasched.schedule (
	name			text PRIMARY KEY
		CHECK (name ~ '^[A-Za-z0-9_.:-]{1,63}$'),
	spec			text NOT NULL,
	timezone		text NOT NULL DEFAULT 'UTC',
	queue			text NOT NULL,
	payload			jsonb NOT NULL DEFAULT '{}',
	priority		smallint NOT NULL DEFAULT 5 CHECK (priority BETWEEN 0 AND 9),
	tenant			name NOT NULL,
	owner			name NOT NULL,
	misfire			text NOT NULL DEFAULT 'run_once'
		CHECK (misfire IN ('skip', 'run_once')),
	overlap			text NOT NULL DEFAULT 'skip'
		CHECK (overlap IN ('skip', 'queue', 'allow')),
	active			boolean NOT NULL DEFAULT true,
	next_run_at		timestamptz,
	last_run_at		timestamptz,
	last_job_id		bigint,
	queued_fires	integer NOT NULL DEFAULT 0,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE hasched.schedule IS
	'Periodic jobs. misfire: what to do with runs missed while no primary was up (skip them, or run_once now). overlap: when the previous run has not finished (skip this run, queue one run for after it, or allow it in parallel). Create with hasched.schedule().';
CREATE INDEX schedule_next_idx ON hasched.schedule (next_run_at) WHERE active;

/* Cluster-wide scheduler state: one row. */
CREATE TABLE hasched.state (
	one				boolean PRIMARY KEY DEFAULT true CHECK (one),
	mode			text NOT NULL DEFAULT 'normal'
		CHECK (mode IN ('normal', 'read_only', 'paused')),
	reason			text,
	changed_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	changed_by		name
);
COMMENT ON TABLE hasched.state IS
	'The operating mode: normal, read_only (submissions refused, claims and reports served) or paused (submissions accepted, nothing handed out). Change it with hasched.set_mode().';
INSERT INTO hasched.state DEFAULT VALUES;

/* Epochs: one per timeline the scheduler has run on; leases carry theirs. */
CREATE TABLE hasched.epoch (
	epoch			integer PRIMARY KEY,
	timeline		integer NOT NULL,
	started_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	reason			text NOT NULL
);
COMMENT ON TABLE hasched.epoch IS
	'Scheduler epochs: a new one opens on every promotion; a lease token names the epoch it was granted in.';
INSERT INTO hasched.epoch (epoch, timeline, reason)
	SELECT 1, ('x' OPERATOR(pg_catalog.||) pg_catalog.substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8))::bit(32)::integer,
		'extension created';

/* ------------------------------------------------------------------------
 * Jobs
 * ------------------------------------------------------------------------ */
CREATE TYPE hasched.job_state AS ENUM (
	'scheduled', 'pending', 'running', 'dispatched',
	'succeeded', 'failed', 'dead', 'cancelled'
);
COMMENT ON TYPE hasched.job_state IS
	'scheduled (run_at in the future), pending, running (leased), dispatched (in the broker), succeeded, failed (will retry after backoff), dead (attempts spent), cancelled.';

CREATE SEQUENCE hasched.job_id_seq;
CREATE SEQUENCE hasched.lease_id_seq;

CREATE TABLE hasched.job (
	id				bigint PRIMARY KEY DEFAULT pg_catalog.nextval('hasched.job_id_seq'),
	queue			text NOT NULL,
	tenant			name NOT NULL,
	owner			name NOT NULL,
	priority		smallint NOT NULL,
	state			hasched.job_state NOT NULL,
	run_at			timestamptz NOT NULL,
	attempt			integer NOT NULL DEFAULT 0,
	max_attempts	integer NOT NULL,
	timeout			interval NOT NULL,
	idempotency_key	text,
	epoch			integer,
	lease_id		bigint,
	lease_until		timestamptz,
	worker			text,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	started_at		timestamptz,
	finished_at		timestamptz,
	last_error		text,
	result			jsonb,
	schedule		text,
	fire_at			timestamptz,
	payload			jsonb NOT NULL
);
COMMENT ON TABLE hasched.job IS
	'Every job. Change it only through the hasched functions: the trigger hasched_job_state checks each state transition and the ranges of priority, attempt, max_attempts and timeout (in C: CHECK constraints cost every claim and report a re-read of their expressions).';

/*
 * The claim index holds only waiting jobs; claims walk it per (queue,
 * priority) from a cursor kept in shared memory, so the dead entries that
 * claimed jobs leave behind are not walked again (see src/claim.c).
 */
CREATE INDEX job_waiting_idx ON hasched.job (queue, priority, run_at, id)
	WHERE state IN ('scheduled', 'pending', 'failed');
CREATE INDEX job_active_idx ON hasched.job (queue, lease_until)
	WHERE state IN ('running', 'dispatched');
CREATE UNIQUE INDEX job_idempotency_idx ON hasched.job (tenant, idempotency_key)
	WHERE idempotency_key IS NOT NULL;
CREATE INDEX job_tenant_idx ON hasched.job (tenant, created_at);
-- for pruning finished jobs older than hasched.history_retention
CREATE INDEX job_finished_idx ON hasched.job (finished_at)
	WHERE state IN ('succeeded', 'dead', 'cancelled');

CREATE FUNCTION hasched.job_state_trigger() RETURNS trigger
	LANGUAGE c AS 'MODULE_PATHNAME', 'hasched_job_state_trigger';
COMMENT ON FUNCTION hasched.job_state_trigger() IS
	'Checks every job state transition against the state machine and keeps run_at of waiting jobs no earlier than the moment they become claimable.';
CREATE TRIGGER hasched_job_state
	BEFORE INSERT OR UPDATE OF state, run_at, priority, attempt, max_attempts, timeout ON hasched.job
	FOR EACH ROW EXECUTE FUNCTION hasched.job_state_trigger();

/*
 * One row per attempt that ended without success (failed, lease expired,
 * cancelled, failover, executor exited).  The successful attempt of a job
 * is the job row itself (started_at, finished_at, worker, attempt).
 */
CREATE TABLE hasched.job_run (
	job_id			bigint NOT NULL,
	attempt			integer NOT NULL,
	epoch			integer,
	lease_id		bigint,
	worker			text,
	started_at		timestamptz,
	finished_at		timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	outcome			text NOT NULL,
	error			text
);
CREATE INDEX job_run_job_idx ON hasched.job_run (job_id, attempt);
CREATE INDEX job_run_finished_idx ON hasched.job_run (finished_at);
COMMENT ON TABLE hasched.job_run IS
	'Run history: one row per attempt that ended without success; a succeeded job''s last attempt is the job row itself.';

/* Events: mode changes, failovers, requeues. Written asynchronously. */
CREATE TABLE hasched.event (
	id				bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	at				timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	kind			text NOT NULL,
	detail			jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX event_at_idx ON hasched.event (at);
COMMENT ON TABLE hasched.event IS
	'Scheduler events (mode changes, epochs, requeues), for operators and for availability figures.';

/* Jobs counted against per-day quotas, sharded so busy tenants do not serialise. */
CREATE TABLE hasched.quota_use (
	tenant			name NOT NULL,
	day				date NOT NULL,
	shard			smallint NOT NULL,
	used			bigint NOT NULL,
	PRIMARY KEY (tenant, day, shard)
) WITH (fillfactor = 50);
COMMENT ON TABLE hasched.quota_use IS
	'Jobs accepted per tenant and UTC day, spread over shards (one per backend slot) so concurrent submits of one tenant do not wait on one row.';

/* ------------------------------------------------------------------------
 * C functions
 * ------------------------------------------------------------------------ */
CREATE FUNCTION hasched.submit(
	queue text,
	payload jsonb DEFAULT '{}',
	priority text DEFAULT 'medium',
	run_at timestamptz DEFAULT NULL,
	idempotency_key text DEFAULT NULL,
	max_attempts integer DEFAULT NULL,
	timeout interval DEFAULT NULL,
	tenant name DEFAULT NULL)
RETURNS bigint
	LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'hasched_submit';
COMMENT ON FUNCTION hasched.submit(text, jsonb, text, timestamptz, text, integer, interval, name) IS
	'Enqueue one job and return its id. priority: high, medium, low or 0 (most urgent) to 9. The same idempotency_key (per tenant) returns the same job id. Commits with hasched.submit_synchronous_commit.';

CREATE FUNCTION hasched.submit_many(
	queue text,
	payloads jsonb[],
	priority text DEFAULT 'medium',
	run_at timestamptz DEFAULT NULL,
	idempotency_keys text[] DEFAULT NULL,
	max_attempts integer DEFAULT NULL,
	timeout interval DEFAULT NULL,
	tenant name DEFAULT NULL)
RETURNS bigint[]
	LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'hasched_submit_many';
COMMENT ON FUNCTION hasched.submit_many(text, jsonb[], text, timestamptz, text[], integer, interval, name) IS
	'Enqueue one job per payload in one statement; returns the job ids in payload order. idempotency_keys, when given, pairs with payloads.';

CREATE FUNCTION hasched.claim(
	queue text,
	worker text,
	max_jobs integer DEFAULT 1,
	lease interval DEFAULT NULL)
RETURNS TABLE (job_id bigint, token text, payload jsonb, attempt integer,
			   priority smallint, tenant name, timeout interval, lease_until timestamptz)
	LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'hasched_claim';
COMMENT ON FUNCTION hasched.claim(text, text, integer, interval) IS
	'Lease up to max_jobs due jobs of a pull queue, most urgent priority first, then by run_at. Each comes with a lease token for heartbeat, complete and fail.';

CREATE FUNCTION hasched.heartbeat(job_id bigint, token text, lease interval DEFAULT NULL)
RETURNS timestamptz
	LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'hasched_heartbeat';
COMMENT ON FUNCTION hasched.heartbeat(bigint, text, interval) IS
	'Extend the lease of a running job; returns the new lease end. A stale token is refused (SQLSTATE JQ006).';

CREATE FUNCTION hasched.complete(job_id bigint, token text, result jsonb DEFAULT NULL)
RETURNS void
	LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'hasched_complete';
COMMENT ON FUNCTION hasched.complete(bigint, text, jsonb) IS
	'Record the success of a leased job, exactly once: a stale token is refused (SQLSTATE JQ006) and changes nothing.';

CREATE FUNCTION hasched.complete(job_ids bigint[], tokens text[], results jsonb[] DEFAULT NULL)
RETURNS integer
	LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'hasched_complete_many';
COMMENT ON FUNCTION hasched.complete(bigint[], text[], jsonb[]) IS
	'Record the success of many leased jobs in one statement; returns how many. All or nothing: one stale token (SQLSTATE JQ006, the detail names the jobs) records none.';

CREATE FUNCTION hasched.fail(job_id bigint, token text, error text, retry boolean DEFAULT true)
RETURNS hasched.job_state
	LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'hasched_fail';
COMMENT ON FUNCTION hasched.fail(bigint, text, text, boolean) IS
	'Record a failed attempt: the job retries after exponential backoff with jitter (state failed) until max_attempts, then it is dead; retry => false makes it dead at once. Returns the new state.';

CREATE FUNCTION hasched.cancel(job_id bigint)
RETURNS boolean
	LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'hasched_cancel';
COMMENT ON FUNCTION hasched.cancel(bigint) IS
	'Cancel a waiting job, or stop a running one (its lease token becomes stale). False when the job had already finished.';

CREATE FUNCTION hasched.retry(job_id bigint)
RETURNS void
	LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'hasched_retry';
COMMENT ON FUNCTION hasched.retry(bigint) IS
	'Put a dead, failed or cancelled job back to pending now, with one more attempt if its attempts were spent.';

CREATE FUNCTION hasched.requeue_expired()
RETURNS integer
	LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'hasched_requeue_expired';
COMMENT ON FUNCTION hasched.requeue_expired() IS
	'Treat every running job whose lease has ended as a failed attempt (retried after backoff, or dead); returns how many. The scheduler calls it; pull workers are safe without it too.';

CREATE FUNCTION hasched.backoff_delay(attempt integer, base interval, cap interval, jitter double precision)
RETURNS interval
	LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'hasched_backoff_delay';
COMMENT ON FUNCTION hasched.backoff_delay(integer, interval, interval, double precision) IS
	'The retry delay after a failed attempt: d = least(cap, base * 2^(attempt-1)); delay = d/2 + jitter * d/2, jitter in [0,1].';

CREATE FUNCTION hasched.tenant_visible(tenant name)
RETURNS boolean
	LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'hasched_tenant_visible';
COMMENT ON FUNCTION hasched.tenant_visible(name) IS
	'True when the current role may see the tenant''s jobs: it is a member of the tenant role, or of hasched_admin.';

CREATE FUNCTION hasched.priority_value(priority text)
RETURNS smallint
	LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'hasched_priority_value';
COMMENT ON FUNCTION hasched.priority_value(text) IS
	'high = 0, medium = 5, low = 9, or a number 0..9 (0 most urgent).';

CREATE FUNCTION hasched.priority_name(priority smallint)
RETURNS text
	LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
	SET search_path = pg_catalog, pg_temp
	AS $$ SELECT CASE WHEN priority < 5 THEN 'high' WHEN priority < 9 THEN 'medium' ELSE 'low' END $$;
COMMENT ON FUNCTION hasched.priority_name(smallint) IS
	'The class of a priority: 0-4 high, 5-8 medium, 9 low.';

CREATE FUNCTION hasched.claim_cursors()
RETURNS TABLE (queue text, priority smallint, run_at timestamptz, job_id bigint, rewound_at timestamptz)
	LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'hasched_claim_cursors';
COMMENT ON FUNCTION hasched.claim_cursors() IS
	'Diagnostics: the claim cursors in this server''s shared memory.';

CREATE FUNCTION hasched.schedule(
	name text,
	spec text,
	queue text DEFAULT 'default',
	payload jsonb DEFAULT '{}',
	priority text DEFAULT 'medium',
	timezone text DEFAULT 'UTC',
	misfire text DEFAULT 'run_once',
	overlap text DEFAULT 'skip',
	tenant name DEFAULT NULL,
	replace boolean DEFAULT false)
RETURNS timestamptz
	LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'hasched_schedule';
COMMENT ON FUNCTION hasched.schedule(text, text, text, jsonb, text, text, text, text, name, boolean) IS
	'Create (or, with replace, change) a periodic job; returns its next run. spec: cron with 5 fields, or 6 with seconds first, or @every <n> <unit>, or @hourly, @daily, ... Runs go through the same path as submit().';

CREATE FUNCTION hasched.unschedule(name text)
RETURNS void
	LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'hasched_unschedule';
COMMENT ON FUNCTION hasched.unschedule(text) IS
	'Remove a periodic job; jobs it already created are kept.';

CREATE FUNCTION hasched.schedule_next(spec text, timezone text, after timestamptz)
RETURNS timestamptz
	LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'hasched_schedule_next';
COMMENT ON FUNCTION hasched.schedule_next(text, text, timestamptz) IS
	'The first time after `after` at which spec fires in timezone (NULL when never).';

CREATE FUNCTION hasched.health()
RETURNS TABLE (component text, status text, detail text)
	LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'hasched_health';
COMMENT ON FUNCTION hasched.health() IS
	'Health of each component of this server, from shared memory: works on standbys too.';

CREATE FUNCTION hasched.executors()
RETURNS TABLE (slot integer, pid integer, state text, job_id bigint, since timestamptz)
	LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'hasched_executors';
COMMENT ON FUNCTION hasched.executors() IS
	'The executor slots of this server: which background worker runs which job.';

/* ------------------------------------------------------------------------
 * SQL functions
 * ------------------------------------------------------------------------ */
CREATE FUNCTION hasched._wake_workers()
RETURNS void
	LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'hasched_wake_workers';
COMMENT ON FUNCTION hasched._wake_workers() IS
	'Internal: wake the scheduler and an executor when the current transaction commits (set_mode uses it).';

CREATE FUNCTION hasched.set_mode(mode text, reason text DEFAULT NULL)
RETURNS void
	LANGUAGE plpgsql SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF mode IS NULL OR mode NOT IN ('normal', 'read_only', 'paused') THEN
		RAISE EXCEPTION 'unknown mode "%"', mode
			USING ERRCODE = 'JQ017',
				  HINT = 'Use normal, read_only or paused.';
	END IF;
	IF pg_is_in_recovery() THEN
		RAISE EXCEPTION 'cannot set the mode on a standby'
			USING ERRCODE = 'JQ004',
				  DETAIL = 'This server is in recovery; hasched accepts writes only on the primary.',
				  HINT = 'Connect to the primary, for example with target_session_attrs=read-write.';
	END IF;
	UPDATE hasched.state
	   SET mode = set_mode.mode, reason = set_mode.reason,
		   changed_at = clock_timestamp(), changed_by = session_user;
	INSERT INTO hasched.event (kind, detail)
	VALUES ('mode', jsonb_build_object('mode', mode, 'reason', reason, 'by', session_user));
	PERFORM hasched._wake_workers();
END
$$;
COMMENT ON FUNCTION hasched.set_mode(text, text) IS
	'Set the operating mode: normal, read_only (submissions refused with SQLSTATE JQ003) or paused (submissions accepted, claims hand out nothing).';

/* ------------------------------------------------------------------------
 * Views for psql
 * ------------------------------------------------------------------------ */
CREATE VIEW hasched.jobs WITH (security_invoker = true) AS
SELECT j.id, j.queue, j.tenant,
	   CASE WHEN j.state IN ('scheduled', 'pending') AND j.run_at > pg_catalog.now()
			THEN 'scheduled'::hasched.job_state
			WHEN j.state = 'scheduled' THEN 'pending'::hasched.job_state
			ELSE j.state END AS state,
	   j.priority, hasched.priority_name(j.priority) AS priority_class,
	   j.run_at, j.attempt, j.max_attempts, j.timeout, j.idempotency_key,
	   j.worker, j.lease_until, j.created_at, j.started_at, j.finished_at,
	   j.last_error, j.result, j.payload
  FROM hasched.job j;
COMMENT ON VIEW hasched.jobs IS
	'Jobs you may see (your tenants'', or all for hasched_admin); state shows scheduled while run_at is in the future.';

CREATE VIEW hasched.queues WITH (security_invoker = true) AS
SELECT q.name, q.transport, q.concurrency,
	   coalesce(c.pending, 0) AS pending,
	   coalesce(c.scheduled, 0) AS scheduled,
	   coalesce(c.retrying, 0) AS retrying,
	   coalesce(c.running, 0) AS running,
	   pg_catalog.now() - c.oldest_due AS oldest_pending_age
  FROM hasched.queue q
  LEFT JOIN (
	SELECT j.queue,
		   count(*) FILTER (WHERE j.state IN ('scheduled', 'pending') AND j.run_at <= pg_catalog.now()) AS pending,
		   count(*) FILTER (WHERE j.state IN ('scheduled', 'pending') AND j.run_at > pg_catalog.now()) AS scheduled,
		   count(*) FILTER (WHERE j.state = 'failed') AS retrying,
		   count(*) FILTER (WHERE j.state IN ('running', 'dispatched')) AS running,
		   min(j.run_at) FILTER (WHERE j.state IN ('scheduled', 'pending', 'failed') AND j.run_at <= pg_catalog.now()) AS oldest_due
	  FROM hasched.job j
	 WHERE j.state IN ('scheduled', 'pending', 'failed', 'running', 'dispatched')
	 GROUP BY j.queue) c ON c.queue = q.name;
COMMENT ON VIEW hasched.queues IS
	'Queues with depth: pending (due now), scheduled (future), retrying (waiting out a backoff), running, and the age of the oldest due job.';

CREATE VIEW hasched.tenants WITH (security_invoker = true) AS
SELECT r.rolname AS tenant,
	   coalesce(t.tier, pg_catalog.current_setting('hasched.default_tier')) AS tier,
	   coalesce(t.jobs_per_day, tr.jobs_per_day) AS jobs_per_day,
	   coalesce((SELECT sum(u.used) FROM hasched.quota_use u
				  WHERE u.tenant = r.rolname
					AND u.day = (pg_catalog.now() AT TIME ZONE 'UTC')::date), 0)::bigint AS used_today,
	   coalesce(t.rate_per_second, tr.rate_per_second) AS rate_per_second,
	   coalesce(t.burst, tr.burst) AS burst
  FROM (SELECT name AS rolname FROM hasched.tenant
		UNION
		SELECT DISTINCT u.tenant FROM hasched.quota_use u) r
  LEFT JOIN hasched.tenant t ON t.name = r.rolname
  LEFT JOIN hasched.tier tr ON tr.name = coalesce(t.tier, pg_catalog.current_setting('hasched.default_tier'))
 WHERE hasched.tenant_visible(r.rolname);
COMMENT ON VIEW hasched.tenants IS
	'Tenants you may see with their tier, limits and jobs used today (UTC).';

CREATE VIEW hasched.schedules WITH (security_invoker = true) AS
SELECT s.name, s.spec, s.timezone, s.queue, s.tenant, s.active,
	   s.next_run_at, s.last_run_at, s.misfire, s.overlap,
	   j.id AS last_job_id, j.state AS last_job_state, s.queued_fires
  FROM hasched.schedule s
  LEFT JOIN hasched.job j ON j.id = s.last_job_id;
COMMENT ON VIEW hasched.schedules IS
	'Periodic jobs you may see, with their next run and the state of their last job.';

CREATE VIEW hasched.workers WITH (security_invoker = true) AS
SELECT e.slot, e.pid, e.state, e.job_id, e.since FROM hasched.executors() e;
COMMENT ON VIEW hasched.workers IS
	'The in-database executors of this server.';

/* ------------------------------------------------------------------------
 * Security
 * ------------------------------------------------------------------------ */
ALTER TABLE hasched.job ENABLE ROW LEVEL SECURITY;
CREATE POLICY job_tenant ON hasched.job FOR SELECT
	USING (hasched.tenant_visible(tenant));
ALTER TABLE hasched.job_run ENABLE ROW LEVEL SECURITY;
CREATE POLICY job_run_tenant ON hasched.job_run FOR SELECT
	USING (EXISTS (SELECT 1 FROM hasched.job j WHERE j.id = job_run.job_id));
ALTER TABLE hasched.quota_use ENABLE ROW LEVEL SECURITY;
CREATE POLICY quota_use_tenant ON hasched.quota_use FOR SELECT
	USING (hasched.tenant_visible(tenant));
ALTER TABLE hasched.schedule ENABLE ROW LEVEL SECURITY;
CREATE POLICY schedule_tenant ON hasched.schedule FOR SELECT
	USING (hasched.tenant_visible(tenant));
CREATE POLICY admin_all ON hasched.schedule TO hasched_admin USING (true) WITH CHECK (true);
ALTER TABLE hasched.tenant ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_tenant ON hasched.tenant FOR SELECT
	USING (hasched.tenant_visible(name));
CREATE POLICY admin_all ON hasched.job TO hasched_admin USING (true) WITH CHECK (true);
CREATE POLICY admin_all ON hasched.job_run TO hasched_admin USING (true) WITH CHECK (true);
CREATE POLICY admin_all ON hasched.quota_use TO hasched_admin USING (true) WITH CHECK (true);
CREATE POLICY admin_all ON hasched.tenant TO hasched_admin USING (true) WITH CHECK (true);

REVOKE ALL ON ALL TABLES IN SCHEMA hasched FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA hasched FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA hasched FROM PUBLIC;

GRANT SELECT ON hasched.job, hasched.job_run, hasched.quota_use, hasched.tenant,
	hasched.queue, hasched.tier, hasched.state, hasched.epoch, hasched.event,
	hasched.schedule, hasched.jobs, hasched.queues, hasched.tenants, hasched.schedules
	TO hasched_submitter, hasched_worker;
-- not TRIGGER or REFERENCES: the API writes these tables as the extension
-- owner, and a trigger of an admin's would run with the owner's rights
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA hasched TO hasched_admin;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA hasched TO hasched_admin;

GRANT EXECUTE ON FUNCTION
	hasched.submit(text, jsonb, text, timestamptz, text, integer, interval, name),
	hasched.submit_many(text, jsonb[], text, timestamptz, text[], integer, interval, name),
	hasched.cancel(bigint),
	hasched.retry(bigint),
	hasched.schedule(text, text, text, jsonb, text, text, text, text, name, boolean),
	hasched.unschedule(text)
	TO hasched_submitter;
GRANT EXECUTE ON FUNCTION
	hasched.claim(text, text, integer, interval),
	hasched.heartbeat(bigint, text, interval),
	hasched.complete(bigint, text, jsonb),
	hasched.complete(bigint[], text[], jsonb[]),
	hasched.fail(bigint, text, text, boolean)
	TO hasched_worker;
GRANT EXECUTE ON FUNCTION
	hasched.requeue_expired(),
	hasched.set_mode(text, text),
	hasched.claim_cursors(),
	hasched.executors()
	TO hasched_admin;
GRANT SELECT ON hasched.workers TO hasched_admin;
GRANT EXECUTE ON FUNCTION
	hasched.tenant_visible(name),
	hasched.priority_value(text),
	hasched.priority_name(smallint),
	hasched.backoff_delay(integer, interval, interval, double precision),
	hasched.schedule_next(text, text, timestamptz),
	hasched.health()
	TO PUBLIC;

/* pg_dump keeps the rows users add to the configuration tables. */
SELECT pg_catalog.pg_extension_config_dump('hasched.tier', 'WHERE name NOT IN (''free'', ''pro'', ''enterprise'')');
SELECT pg_catalog.pg_extension_config_dump('hasched.tenant', '');
SELECT pg_catalog.pg_extension_config_dump('hasched.queue', 'WHERE name <> ''default''');
SELECT pg_catalog.pg_extension_config_dump('hasched.job', '');
SELECT pg_catalog.pg_extension_config_dump('hasched.schedule', '');
SELECT pg_catalog.pg_extension_config_dump('hasched.job_run', '');
SELECT pg_catalog.pg_extension_config_dump('hasched.event', '');
SELECT pg_catalog.pg_extension_config_dump('hasched.epoch', 'WHERE epoch > 1');
SELECT pg_catalog.pg_extension_config_dump('hasched.quota_use', '');
SELECT pg_catalog.pg_extension_config_dump('hasched.job_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('hasched.lease_id_seq', '');
