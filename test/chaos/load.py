# Copyright: hasched contributors
#
# load.py: the chaos suite's load generator (run as its own process by
# chaos.py: `chaos.py loadgen ...`).
#
# It submits continuously through one connection path (HAProxy, or a libpq
# multi-host string with target_session_attrs=read-write), in turn an SQL
# job (whose effect is one INSERT into chaos.effect naming the job's key), a
# pull job (run by hasched-worker) and, when the deployment has RabbitMQ,
# an amqp job (dispatched to the brokers, run by hasched-worker --amqp). Each job has a client-side
# unique key, sent as its idempotency key and in its payload. A submit whose
# outcome is unknown (error, timeout) is sent again with the same key until
# it returns, so every key gets one job. Every submit that returned is
# written to OUT as "ack T_ACK KEY JOB_ID QUEUE"; errors as "err T MESSAGE".
#
# A call that has no answer within --timeout seconds (a frozen or cut off
# server answers nothing) is ended by shutting its socket down.
#
# IDENTIFICATION
#	test/chaos/load.py

import json
import os
import signal
import socket
import threading
import time

import psycopg2

SQL_EFFECT = ("INSERT INTO chaos.effect (key, job_id) "
              "SELECT %s, e.job_id FROM hasched.executors() e WHERE e.pid = pg_backend_pid()")

stop = False


def on_term(signum, frame):
    global stop
    stop = True


class Watchdog:
    """Shuts a connection's socket down when a call outlasts its time."""

    def __init__(self):
        self.lock = threading.Lock()
        self.deadline = None
        self.fd = None
        threading.Thread(target=self.run, daemon=True).start()

    def arm(self, conn, secs):
        with self.lock:
            self.fd = conn.fileno()
            self.deadline = time.time() + secs

    def disarm(self):
        with self.lock:
            self.deadline = None
            self.fd = None

    def run(self):
        while True:
            time.sleep(0.1)
            with self.lock:
                if self.deadline is not None and time.time() > self.deadline:
                    try:
                        s = socket.socket(fileno=os.dup(self.fd))
                        s.shutdown(socket.SHUT_RDWR)
                        s.close()
                    except OSError:
                        pass
                    self.deadline = None


def loadgen(dsn, tag, out, rate, timeout, kinds=('sql', 'pull')):
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    f = open(out, 'a', buffering=1)
    wd = Watchdog()
    conn = None
    seq = 0
    period = 1.0 / rate if rate > 0 else 0
    nxt = time.time()
    while not stop:
        key = '%s-%d' % (tag, seq)
        kind = kinds[seq % len(kinds)]
        if kind == 'sql':
            queue = 'chaos_sql'
            payload = {'sql': SQL_EFFECT.replace('%s', "'%s'" % key), 'key': key}
        else:
            queue = 'chaos_' + kind
            payload = {'key': key}
        try:
            if conn is None:
                conn = psycopg2.connect(dsn, connect_timeout=3,
                                        application_name='chaos-load-' + tag)
                conn.autocommit = True
            wd.arm(conn, timeout)
            with conn.cursor() as cur:
                cur.execute('SELECT hasched.submit(%s, %s::jsonb, idempotency_key => %s)',
                            (queue, json.dumps(payload), key))
                jid = cur.fetchone()[0]
            wd.disarm()
            f.write('ack %.3f %s %d %s\n' % (time.time(), key, jid, queue))
            seq += 1
        except Exception as e:  # noqa: BLE001 - every failure: reconnect, same key
            wd.disarm()
            f.write('err %.3f %s\n' % (time.time(), str(e).strip().replace('\n', ' | ')[:300]))
            try:
                if conn is not None:
                    conn.close()
            except Exception:  # noqa: BLE001
                pass
            conn = None
            time.sleep(0.2)
            nxt = time.time()
            continue
        nxt += period
        d = nxt - time.time()
        if d > 0:
            time.sleep(d)
        else:
            nxt = time.time()
    # the last key may have been sent without an answer: say so
    f.write('last %.3f %s-%d\n' % (time.time(), tag, seq))
    f.close()
