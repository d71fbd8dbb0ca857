-- claim, heartbeat, complete, fail, cancel, retry, requeue_expired
SET hasched.tenant = 'hs_acme';
INSERT INTO hasched.queue (name, backoff_base, backoff_max, lease) VALUES ('work', '10 seconds', '1 minute', '30 seconds');
SELECT hasched.submit('work', '{"n": 1}', 'low') AS a \gset
SELECT hasched.submit('work', '{"n": 2}', 'medium') AS b \gset
SELECT hasched.submit('work', '{"n": 3}', 'high') AS c \gset
SELECT hasched.submit('work', '{"n": 4}', 'high') AS d \gset
SELECT hasched.submit('work', '{"n": 5}', run_at => now() + interval '1 day') AS e \gset

-- most urgent first, then by run_at; a scheduled job is not due
SELECT job_id - :a AS n, payload, attempt, priority, token ~ '^1:1:\d+$' AS token_ok,
       lease_until > now() + interval '29 seconds' AS leased
  FROM hasched.claim('work', 'w1', 3);
-- the next claim takes the low-priority job that was left
SELECT job_id - :a AS n FROM hasched.claim('work', 'w1', 10);
SELECT count(*) FROM hasched.claim('work', 'w1', 10);
SELECT id - :a AS n, state, worker, attempt FROM hasched.job WHERE queue = 'work' ORDER BY id;

-- tokens of the claimed jobs
SELECT format('%s:%s:%s', epoch, attempt, lease_id) AS tc FROM hasched.job WHERE id = :c \gset
SELECT format('%s:%s:%s', epoch, attempt, lease_id) AS td FROM hasched.job WHERE id = :d \gset
SELECT format('%s:%s:%s', epoch, attempt, lease_id) AS tb FROM hasched.job WHERE id = :b \gset
SELECT format('%s:%s:%s', epoch, attempt, lease_id) AS ta FROM hasched.job WHERE id = :a \gset

-- heartbeat extends the lease
SELECT hasched.heartbeat(:c, :'tc', '2 minutes') > now() + interval '119 seconds' AS extended;

-- complete records the result once; the same token again is a no-op (a
-- report repeated after its reply was lost), other reports with it are stale
SELECT hasched.complete(:c, :'tc', '{"sent": true}');
SELECT state, result, lease_until IS NULL AS lease_gone, finished_at IS NOT NULL AS finished FROM hasched.job WHERE id = :c;
SELECT try(format($$SELECT hasched.complete(%s, %L, '{"sent": "again"}')$$, :c, :'tc'));
SELECT try(format($$SELECT hasched.heartbeat(%s, %L)$$, :c, :'tc'));
SELECT try(format($$SELECT hasched.fail(%s, %L, 'late')$$, :c, :'tc'));
SELECT result FROM hasched.job WHERE id = :c;
-- another job's token, a forged token, a malformed one, an unknown job
SELECT try(format($$SELECT hasched.complete(%s, %L)$$, :d, :'tc'));
SELECT try(format($$SELECT hasched.complete(%s, '1:2:999999')$$, :d));
SELECT try(format($$SELECT hasched.complete(%s, 'not-a-token')$$, :d));
SELECT try(format($$SELECT hasched.complete(%s, '1:1:1:1')$$, :d));
SELECT try($$SELECT hasched.complete(999999999, '1:1:1')$$);
SELECT try(format($$SELECT hasched.complete(%s, NULL)$$, :d));
SELECT state FROM hasched.job WHERE id = :d;

-- fail: retried after backoff while attempts remain (base 10 s: 5..10 s), then dead
SELECT hasched.fail(:d, :'td', 'smtp timeout');
SELECT state, attempt, last_error, run_at - now() BETWEEN interval '4 seconds' AND interval '11 seconds' AS backoff
  FROM hasched.job WHERE id = :d;
-- the same failure again: a no-op that returns the job's state
SELECT try(format($$SELECT hasched.fail(%s, %L, 'twice')$$, :d, :'td'));
SELECT count(*) AS runs, max(error) AS error FROM hasched.job_run WHERE job_id = :d;
SELECT hasched.fail(:b, :'tb', 'bad input', retry => false);
SELECT state, finished_at IS NOT NULL AS finished FROM hasched.job WHERE id = :b;
SELECT try(format($$SELECT hasched.fail(%s, %L, NULL)$$, :a, :'ta'));
-- a job with one attempt goes dead on its first failure
SELECT hasched.submit('work', '{}', 'high', max_attempts => 1) AS f \gset
SELECT token AS tf FROM hasched.claim('work', 'w2', 1) \gset
SELECT hasched.fail(:f, :'tf', 'boom');

-- retry brings dead jobs back with one more attempt; running or succeeded ones cannot
SELECT hasched.retry(:f);
SELECT state, attempt, max_attempts FROM hasched.job WHERE id = :f;
SELECT try(format($$SELECT hasched.retry(%s)$$, :c));
SELECT try(format($$SELECT hasched.retry(%s)$$, :a));
SELECT try($$SELECT hasched.retry(999999999)$$);

-- cancel: a waiting job, a running one (its token goes stale), a finished one
SELECT hasched.cancel(:e) AS cancelled_scheduled;
SELECT hasched.cancel(:a) AS cancelled_running;
SELECT try(format($$SELECT hasched.complete(%s, %L)$$, :a, :'ta'));
SELECT hasched.cancel(:c) AS cancelled_succeeded;
SELECT try($$SELECT hasched.cancel(999999999)$$);
SELECT id - :a AS n, state FROM hasched.job WHERE id IN (:a, :c, :e) ORDER BY id;

-- the run history: one row per attempt that did not succeed (a success is the job row)
SELECT job_id - :a AS n, attempt, outcome, regexp_replace(error, 'by .*', 'by <user>') AS error FROM hasched.job_run
 WHERE job_id IN (:a, :b, :c, :d, :f) ORDER BY job_id, attempt, finished_at;

-- expired leases: requeue_expired counts the attempt and retries after backoff
SELECT count(*) FROM hasched.claim('work', 'drain', 100);
SELECT hasched.submit('work', '{}', 'high') AS g0 \gset
SELECT job_id AS g, token AS tg, job_id = :g0 AS the_new_job
  FROM hasched.claim('work', 'w3', 1, lease => '1 millisecond') \gset
SELECT :'the_new_job' AS the_new_job;
SELECT pg_sleep(0.01);
SELECT hasched.requeue_expired();
SELECT state, attempt, last_error LIKE 'lease expired at %' AS why FROM hasched.job WHERE id = :g;
SELECT try(format($$SELECT hasched.complete(%s, %L)$$, :g, :'tg'));
SELECT hasched.requeue_expired();

-- claim's own refusals
SELECT try($$SELECT count(*) FROM hasched.claim('nosuchqueue', 'w')$$);
SELECT try($$SELECT count(*) FROM hasched.claim('work', '')$$);
SELECT try($$SELECT count(*) FROM hasched.claim('work', 'w', 0)$$);
SELECT try($$SELECT count(*) FROM hasched.claim('work', 'w', 10001)$$);
SELECT try($$SELECT count(*) FROM hasched.claim('work', 'w', 1, '-1 second')$$);
SELECT try($$SELECT count(*) FROM hasched.claim('work', NULL)$$);
INSERT INTO hasched.queue (name, transport) VALUES ('sqljobs', 'sql');
SELECT try($$SELECT count(*) FROM hasched.claim('sqljobs', 'w')$$);

-- per-queue concurrency: at most 2 running at once
INSERT INTO hasched.queue (name, concurrency) VALUES ('narrow', 2);
SELECT count(*) FROM (SELECT hasched.submit('narrow', '{}') FROM generate_series(1, 5)) s;
SELECT count(*) AS first FROM hasched.claim('narrow', 'w', 5);
SELECT count(*) AS second FROM hasched.claim('narrow', 'w', 5);

-- paused: claims hand out nothing; normal again: they do
SELECT hasched.submit('work', '{}', 'high') AS h \gset
SELECT hasched.set_mode('paused', 'maintenance');
SELECT count(*) AS while_paused FROM hasched.claim('work', 'w', 10);
SELECT hasched.set_mode('normal');
SELECT job_id = :h AS after_pause FROM hasched.claim('work', 'w', 10);

-- a claim that is rolled back leaves its jobs claimable: the cursor rewinds
SELECT hasched.submit('work', '{}', 'high') AS r \gset
BEGIN;
SELECT job_id = :r AS claimed_in_tx FROM hasched.claim('work', 'w', 1);
ROLLBACK;
SELECT job_id = :r AS claimed_again FROM hasched.claim('work', 'w', 1);
SELECT hasched.submit('work', '{}', 'high') AS s1 \gset
BEGIN;
SAVEPOINT s;
SELECT job_id = :s1 AS claimed_in_savepoint FROM hasched.claim('work', 'w', 1);
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT job_id = :s1 AS claimed_after_savepoint FROM hasched.claim('work', 'w', 5);
SELECT state FROM hasched.job WHERE id = :s1;

-- complete many at once: all or nothing
SELECT count(*) FROM (SELECT hasched.submit('work', jsonb_build_object('m', g), 'high') FROM generate_series(1, 3) g) s;
CREATE TEMP TABLE batch AS SELECT job_id, token FROM hasched.claim('work', 'wb', 3);
SELECT count(*) FROM batch;
SELECT try($$SELECT hasched.complete((SELECT array_agg(job_id) FROM batch), (SELECT array_agg(token) FROM batch) || '1:1:1'::text)$$);
SELECT try($$SELECT hasched.complete((SELECT array_agg(job_id) FROM batch) || 999999999::bigint, (SELECT array_agg(token) FROM batch) || '1:1:1'::text)$$);
SELECT count(*) FILTER (WHERE state = 'running') AS still_running FROM hasched.job WHERE id IN (SELECT job_id FROM batch);
SELECT hasched.complete(array_agg(job_id), array_agg(token), array_agg('{"ok": 1}'::jsonb)) FROM batch;
SELECT state, result FROM hasched.job WHERE id IN (SELECT job_id FROM batch) GROUP BY 1, 2;
-- the batch again: recorded already, a no-op that counts them
SELECT regexp_replace(try($$SELECT hasched.complete((SELECT array_agg(job_id) FROM batch), (SELECT array_agg(token) FROM batch))$$),
                      'token: [0-9, ]+', 'token: <ids>');
SELECT hasched.complete('{}'::bigint[], '{}'::text[]);

-- the backoff formula: d = least(cap, base * 2^(attempt-1)); delay = d/2 + jitter * d/2
SELECT a, hasched.backoff_delay(a, '1 second', '1 minute', 0) AS least,
       hasched.backoff_delay(a, '1 second', '1 minute', 1) AS most
  FROM generate_series(1, 8) a;
SELECT hasched.backoff_delay(1000, '1 second', '1 hour', 0.5);
SELECT try($$SELECT hasched.backoff_delay(0, '1 second', '1 minute', 0)$$);
SELECT try($$SELECT hasched.backoff_delay(1, '1 minute', '1 second', 0)$$);
SELECT try($$SELECT hasched.backoff_delay(1, '1 second', '1 minute', 2)$$);
SELECT hasched.priority_value('high'), hasched.priority_value('medium'), hasched.priority_value('low'), hasched.priority_value('7');
SELECT try($$SELECT hasched.priority_value('12')$$);
