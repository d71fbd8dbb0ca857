-- submit and submit_many: success paths, idempotency, and every refusal
SET hasched.tenant = 'hs_acme';
INSERT INTO hasched.queue (name, default_max_attempts, default_timeout) VALUES ('mail', 5, '1 minute');

-- defaults come from the queue; priority names map to numbers
SELECT hasched.submit('mail', '{"to": "a@example.com"}') AS j1 \gset
SELECT queue, tenant, state, priority, attempt, max_attempts, timeout, payload
  FROM hasched.job WHERE id = :j1;
SELECT hasched.submit('mail', '{}', 'high') AS j2 \gset
SELECT hasched.submit('mail', '{}', 'LOW') AS j3 \gset
SELECT hasched.submit('mail', '{}', ' 3 ', max_attempts => 1, timeout => '5 seconds') AS j4 \gset
SELECT id - :j1 AS n, priority, hasched.priority_name(priority), max_attempts, timeout
  FROM hasched.job WHERE id IN (:j2, :j3, :j4) ORDER BY id;

-- run_at in the future: scheduled; in the past: due now (run_at is not before submission)
SELECT hasched.submit('mail', '{}', run_at => now() + interval '1 hour') AS j5 \gset
SELECT hasched.submit('mail', '{}', run_at => '2000-01-01') AS j6 \gset
SELECT id - :j1 AS n, state, run_at > now() + interval '59 minutes' AS later, run_at > '2001-01-01' AS not_before_submit
  FROM hasched.job WHERE id IN (:j5, :j6) ORDER BY id;
SELECT id - :j1 AS n, state FROM hasched.jobs WHERE id IN (:j5, :j6) ORDER BY id;

-- idempotency: the same key returns the same job, once
SELECT hasched.submit('mail', '{"v": 1}', idempotency_key => 'order-17') AS k1 \gset
SELECT hasched.submit('mail', '{"v": 2}', idempotency_key => 'order-17') = :k1 AS same_id;
SELECT count(*), min(payload::text) FROM hasched.job WHERE idempotency_key = 'order-17';
-- the key is per tenant
SELECT hasched.submit('mail', '{"v": 3}', idempotency_key => 'order-17', tenant => 'hs_globex') <> :k1 AS other_tenant_other_job;

-- submit_many: ids in payload order, keys pair with payloads
SELECT array_length(hasched.submit_many('mail', ARRAY['{"i":1}', '{"i":2}', '{"i":3}']::jsonb[]), 1);
SELECT (ids[1] = :k1) AS dup_key_same_job, ids[2] IS NOT NULL AS unkeyed, ids[3] = ids[4] AS repeated_key
  FROM (SELECT hasched.submit_many('mail', ARRAY['{"i":4}', '{"i":5}', '{"i":6}', '{"i":7}']::jsonb[],
        idempotency_keys => ARRAY['order-17', NULL, 'order-18', 'order-18'])) s(ids);
SELECT j.payload FROM unnest(hasched.submit_many('mail', ARRAY['{"p":"x"}', '{"p":"y"}']::jsonb[], 'high'))
  WITH ORDINALITY u(id, ord) JOIN hasched.job j ON j.id = u.id ORDER BY ord;
SELECT hasched.submit_many('mail', '{}'::jsonb[]);

-- refusals: each has its own SQLSTATE and changes nothing
SELECT count(*) AS jobs_before FROM hasched.job \gset
SELECT try($$SELECT hasched.submit('nosuchqueue', '{}')$$);
SELECT try($$SELECT hasched.submit(NULL, '{}')$$);
SELECT try($$SELECT hasched.submit('mail', NULL)$$);
SELECT try($$SELECT hasched.submit('mail', '{}', 'urgent')$$);
SELECT try($$SELECT hasched.submit('mail', '{}', '10')$$);
SELECT try($$SELECT hasched.submit('mail', '{}', '-1')$$);
SELECT try($$SELECT hasched.submit('mail', '{}', max_attempts => 0)$$);
SELECT try($$SELECT hasched.submit('mail', '{}', timeout => '0 seconds')$$);
SELECT try($$SELECT hasched.submit('mail', '{}', timeout => '-1 minute')$$);
SELECT try($$SELECT hasched.submit('mail', '{}', run_at => 'infinity')$$);
SELECT try($$SELECT hasched.submit('mail', '{}', idempotency_key => '')$$);
SELECT try($$SELECT hasched.submit('mail', '{}', idempotency_key => repeat('k', 256))$$);
SELECT try($$SELECT hasched.submit('mail', '{}', tenant => 'nosuchrole')$$);
SET hasched.max_payload_bytes = 100;
SELECT try($$SELECT hasched.submit('mail', jsonb_build_object('blob', repeat('x', 200)))$$);
SELECT try($$SELECT hasched.submit_many('mail', ARRAY['{}', jsonb_build_object('blob', repeat('x', 200))])$$);
RESET hasched.max_payload_bytes;
SELECT try($$SELECT hasched.submit_many('mail', ARRAY['{}', NULL]::jsonb[])$$);
SELECT try($$SELECT hasched.submit_many('mail', ARRAY['{}', '{}']::jsonb[], idempotency_keys => ARRAY['a'])$$);
SELECT try($$SELECT hasched.submit_many('mail', ARRAY[['{}'], ['{}']]::jsonb[])$$);
SELECT try($$SELECT hasched.submit_many('nosuchqueue', ARRAY['{}']::jsonb[])$$);
SELECT count(*) = :jobs_before AS nothing_written FROM hasched.job;

-- modes: read_only refuses submits, paused accepts them
SELECT hasched.set_mode('read_only', 'load test');
SELECT try($$SELECT hasched.submit('mail', '{}')$$);
SELECT try($$SELECT hasched.submit_many('mail', ARRAY['{}']::jsonb[])$$);
SELECT hasched.set_mode('paused');
SELECT try($$SELECT hasched.submit('mail', '{}') > 0$$);
SELECT hasched.set_mode('normal');
SELECT try($$SELECT hasched.set_mode('sleepy')$$);
SELECT kind, detail->>'mode' AS mode, detail->>'reason' AS reason FROM hasched.event ORDER BY id;

-- the state machine: an impossible transition is an error, whoever tries it
SELECT try(format($$UPDATE hasched.job SET state = 'succeeded' WHERE id = %s RETURNING state$$, :j1));
-- a new job starts scheduled or pending, even written by hand by an admin
-- (only a superuser may put back a row in any state, as pg_restore does:
-- test/t/010_dump_restore.pl)
CREATE ROLE hs_admin NOLOGIN IN ROLE hasched_admin;
SET ROLE hs_admin;
SELECT try($$INSERT INTO hasched.job (queue, tenant, owner, priority, state, run_at, max_attempts, timeout, payload)
             VALUES ('mail', 'hs_acme', 'hs_admin', 5, 'running', now(), 1, '1 minute', '{}') RETURNING id$$);
RESET ROLE;
SELECT state FROM hasched.job WHERE id = :j1;

-- the views
SELECT name, transport, pending, scheduled, retrying, running, oldest_pending_age IS NOT NULL AS has_age
  FROM hasched.queues WHERE name = 'mail';

-- names in hints are quoted, so a hint can be copied and run safely
SELECT try($$SELECT hasched.submit('x''); DROP TABLE hasched.job; --', '{}')$$);
SELECT try($$SELECT hasched.submit('mail', '{}', tenant => 'x"; DROP ROLE hasched_admin; --')$$);
