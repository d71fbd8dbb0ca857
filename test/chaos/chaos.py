#!/usr/bin/python3
# Copyright: hasched contributors
#
# chaos.py: hasched's chaos suite (issue 12). Run through test/chaos/run.sh
# (`make chaos`, `make soak`), which builds, installs and, as root, runs this
# as an ordinary user.
#
#   chaos.py run   --dir DIR [--scenarios a,b,...] [--repeat 3] [--report FILE]
#   chaos.py soak  --dir DIR [--minutes 30] [--fault-every 180] [--report FILE]
#   chaos.py smoke --dir DIR            one postmaster SIGKILL, the checker;
#                                       exit 1 when a safety figure is not 0
#   chaos.py loadgen DSN TAG OUT RATE   (internal: one load generator)
#
# The deployment is deploy.py's (ZooKeeper x3, Patroni x3 with hasched,
# HAProxy, netgate, and for run and soak a RabbitMQ cluster x3); the load is
# load.py's generators (one through HAProxy, one through a multi-host
# string), two hasched-workers in pull mode (one with ZooKeeper liveness),
# two in AMQP mode (run and soak: one through HAProxy, one through the
# multi-host string, each with the three brokers) and a cron schedule every
# second whose runs are SQL jobs; the checker reads the surviving primary
# and the generators' logs. Environment: CHAOS_PORT_BASE (25000),
# PG_BINDIR (where postgres and hasched-worker are), CHAOS_RATE (submits
# per second per generator, 10), CHAOS_RABBIT=0 (no RabbitMQ),
# CHAOS_CIRCUIT_OPEN (10s).
#
# IDENTIFICATION
#	test/chaos/chaos.py

import argparse
import json
import os
import platform
import random
import re
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploy  # noqa: E402
from deploy import log, http_get, children_of, rss_kb  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

SCENARIOS = ['pm_kill', 'node_kill', 'freeze', 'pm_stop', 'sync_kill', 'zk_one',
             'zk_quorum', 'worker_kill', 'cutoff', 'rabbit_one', 'rabbit_all', 'region']
RABBIT_SCENARIOS = ('rabbit_one', 'rabbit_all')
TITLES = {
    'pm_kill': "SIGKILL of the primary's postmaster",
    'node_kill': "SIGKILL of the leader's Patroni and postmaster (node death)",
    'freeze': 'primary frozen (SIGSTOP of Patroni and PostgreSQL past the TTL, then SIGCONT)',
    'pm_stop': "SIGSTOP of the primary's postmaster alone (15 s)",
    'sync_kill': "SIGKILL of the synchronous standby's postmaster",
    'zk_one': 'one ZooKeeper node killed (10 s)',
    'zk_quorum': 'ZooKeeper quorum lost (2 of 3 killed, 20 s)',
    'worker_kill': 'a hasched-worker killed mid-job (SIGKILL)',
    'cutoff': 'primary cut off from the others (netgate drops its packets, 25 s)',
    'region': 'region loss: primary and sync standby killed, DR standby promoted by hand',
    'rabbit_one': 'one RabbitMQ node killed (SIGKILL, 15 s)',
    'rabbit_all': 'all three RabbitMQ nodes killed (SIGKILL, 30 s)',
}
QUEUES = ('chaos_sql', 'chaos_pull', 'chaos_amqp')
QUEUES_SQL = "('chaos_sql', 'chaos_pull', 'chaos_amqp')"
MISFIRE_S = 5.0          # hasched.misfire_threshold (default)


def now():
    return time.time()


class Suite:
    def __init__(self, workdir, base, bindir, user, rate, rabbit=True):
        self.dir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.rabbit = rabbit
        self.dep = deploy.Deployment(os.path.join(workdir, 'deploy'), base, bindir, user,
                                     rabbit=rabbit)
        self.rabbit_rot = 0
        self.bindir = bindir
        self.base = base
        self.rate = rate
        self.loads = {}
        self.workers = {}
        self.worker_seq = 0
        self.injections = []
        self.runs_log = os.path.join(workdir, 'runs.log')
        self.rss = []            # (t, {name: kb})
        self.notes = []
        self.zk_rot = 0

    # ---- set-up ----
    def start(self):
        self.dep.start()
        ld = self.dep.leader()
        ld.sql("CREATE EXTENSION IF NOT EXISTS hasched")
        ld.sql("""
            CREATE SCHEMA IF NOT EXISTS chaos;
            CREATE TABLE IF NOT EXISTS chaos.effect (
                key text NOT NULL, job_id bigint,
                at timestamptz NOT NULL DEFAULT clock_timestamp(),
                port integer DEFAULT inet_server_port());
            CREATE INDEX IF NOT EXISTS effect_key_idx ON chaos.effect (key);
            INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise')
                ON CONFLICT DO NOTHING;
            INSERT INTO hasched.queue (name, transport, concurrency, lease)
                VALUES ('chaos_sql', 'sql', 4, '30 seconds'),
                       ('chaos_pull', 'pull', 16, '20 seconds')
                ON CONFLICT DO NOTHING;
        """)
        if self.rabbit:
            # after deploy.py formed the RabbitMQ cluster: the dispatcher
            # declares the quorum queues with a member on each node
            ld.sql("INSERT INTO hasched.queue (name, transport, concurrency, lease) "
                   "VALUES ('chaos_amqp', 'amqp', 16, '20 seconds') ON CONFLICT DO NOTHING")
        cron_sql = ("INSERT INTO chaos.effect (key, job_id) SELECT 'cron:' || "
                    "to_char(j.fire_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), j.id "
                    "FROM hasched.executors() e JOIN hasched.job j ON j.id = e.job_id "
                    "WHERE e.pid = pg_backend_pid()")
        ld.sql("SELECT hasched.schedule('chaos-cron', '* * * * * *', 'chaos_sql', %s::jsonb, "
               "misfire => 'run_once', overlap => 'allow', replace => true)",
               (json.dumps({'sql': cron_sql}),))
        if not self.dep.wait_healthy(60):
            raise RuntimeError('hasched does not act on the leader: %s' % self.dep.describe())
        self.start_workers()
        self.start_load()

    def start_load(self):
        for tag, dsn in (('hap', self.dep.haproxy_dsn()), ('mh', self.dep.multihost_dsn())):
            out = os.path.join(self.dir, 'load-%s.log' % tag)
            kinds = 'sql,pull,amqp' if self.rabbit else 'sql,pull'
            p = deploy.Proc('load-' + tag, [deploy.PYTHON, os.path.abspath(__file__), 'loadgen',
                                             dsn, tag, out, str(self.rate), kinds],
                            os.path.join(self.dir, 'load-%s.out' % tag),
                            env=self.dep.env).start()
            self.loads[tag] = (p, out)

    def stop_load(self):
        for p, _ in self.loads.values():
            p.stop(timeout=15)

    def worker_argv(self, k):
        hw = os.path.join(self.bindir, 'hasched-worker')
        if k == 'w1':   # multi-host string, ZooKeeper liveness
            return [hw, '--db', self.dep.multihost_dsn(), '--queue', 'chaos_pull',
                    '--concurrency', '4', '--poll-interval', '1',
                    '--zookeeper', self.dep.zk_connect(), '--zookeeper-path', '/hasched/chaos',
                    '--zookeeper-session-timeout', '4000',
                    '--health-port', str(self.base + 401),
                    '--', os.path.join(HERE, 'job.sh')]
        if k == 'w2':   # HAProxy
            return [hw, '--db', self.dep.haproxy_dsn(), '--queue', 'chaos_pull',
                    '--concurrency', '4', '--poll-interval', '1',
                    '--health-port', str(self.base + 402),
                    '--', os.path.join(HERE, 'job.sh')]
        # AMQP: a1 through HAProxy, brokers from rabbit1 on (the
        # dispatcher's order); a2 through the multi-host string, brokers
        # from rabbit2 on; each fails over along its list
        db = self.dep.haproxy_dsn() if k == 'a1' else self.dep.multihost_dsn()
        return [hw, '--db', db, '--amqp', self.dep.rabbit_urls(1 if k == 'a1' else 2),
                '--queue', 'chaos_amqp', '--concurrency', '4',
                '--health-port', str(self.base + (403 if k == 'a1' else 404)),
                '--', os.path.join(HERE, 'job.sh')]

    def start_worker(self, k):
        env = dict(self.dep.env)
        env['CHAOS_RUNS'] = self.runs_log
        self.workers[k] = deploy.Proc(k, self.worker_argv(k),
                                      os.path.join(self.dir, 'worker-%s.log' % k),
                                      env=env).start()

    def start_workers(self):
        for k in ('w1', 'w2') + (('a1', 'a2') if self.rabbit else ()):
            self.start_worker(k)

    def stop(self):
        self.stop_load()
        for w in self.workers.values():
            w.stop(timeout=40)
        self.dep.stop()

    # ---- helpers ----
    def leader(self, secs=60):
        nd = self.dep.wait_leader(secs)
        if nd is None:
            raise RuntimeError('no writable leader: %s' % self.dep.describe())
        return nd

    def sync_standby(self):
        c = self.dep.cluster() or {}
        for m in c.get('members', []):
            if m.get('role') == 'sync_standby':
                return self.dep.node(m['name'])
        return None

    def proc_tree(self, nd):
        pids = []
        if nd.patroni and nd.patroni.alive():
            pids.append(nd.patroni.pid)
            pids += children_of(nd.patroni.pid)
        pm = nd.postmaster_pid()
        if pm:
            pids.append(pm)
            pids += children_of(pm)
        return sorted(set(pids))

    def wait_acting(self, exclude=None, secs=120):
        """The first node (not exclude) whose /primary says 200 and that takes
        a write; returns (node, time)."""
        end = now() + secs
        while now() < end:
            for nd in self.dep.nodes:
                if nd is exclude:
                    continue
                st, _ = http_get(nd.health_port, '/primary', timeout=0.5)
                # the health listener of a SIGKILLed postmaster answers for a
                # moment: a new connection must work too
                if st == 200 and nd.try_sql('SELECT pg_is_in_recovery()',
                                            timeout_ms=1000) == [(False,)]:
                    return nd, now()
            time.sleep(0.2)
        return None, None

    def settle(self, inj, secs=150):
        """After the heal: wait for a healthy cluster; detect and recover
        the same-timeline split brain (a running replica that does not
        stream) with the runbook's reinit."""
        t0 = now()
        if self.dep.wait_healthy(min(60, secs)):
            inj['settled_s'] = round(now() - t0, 1)
            return True
        stuck = self.dep.stuck_replicas()
        if stuck:
            names = ','.join(nd.name for nd in stuck)
            inj['split_brain'] = names
            log('same-timeline split brain: %s running but not streaming; reinit (runbook)'
                % names)
            for nd in stuck:
                r = self.dep.patronictl('reinit', deploy.SCOPE, nd.name, '--force', '--wait')
                log('patronictl reinit %s: rc %d %s' % (nd.name, r.returncode,
                                                         r.stdout.strip()[-200:]))
        ok = self.dep.wait_healthy(max(10, secs - (now() - t0)))
        inj['settled_s'] = round(now() - t0, 1)
        if not ok:
            inj['unsettled'] = self.dep.describe()
            log('cluster not healthy after the heal: %s' % self.dep.describe())
        return ok

    # ---- scenarios: each returns after the heal; inj gets fault_t ----
    def sc_pm_kill(self, inj):
        ld = self.leader()
        pm = ld.postmaster_pid()
        inj['node'] = ld.name
        inj['fault_t'] = now()
        os.kill(pm, signal.SIGKILL)
        nd, t = self.wait_acting(exclude=None)
        inj['acting'] = nd.name if nd else None
        inj['acting_s'] = round(t - inj['fault_t'], 2) if t else None

    def sc_node_kill(self, inj):
        ld = self.leader()
        pids = [ld.patroni.pid, ld.postmaster_pid()]
        inj['node'] = ld.name
        inj['fault_t'] = now()
        for p in pids:
            os.kill(p, signal.SIGKILL)
        ld.patroni.p.wait()
        nd, t = self.wait_acting(exclude=ld)
        inj['acting'] = nd.name if nd else None
        inj['acting_s'] = round(t - inj['fault_t'], 2) if t else None
        # the node comes back (Patroni rejoins it, with pg_rewind)
        ld.start_patroni()

    def sc_freeze(self, inj):
        ld = self.leader()
        pids = self.proc_tree(ld)
        inj['node'] = ld.name
        inj['fault_t'] = now()
        for p in pids:
            try:
                os.kill(p, signal.SIGSTOP)
            except OSError:
                pass
        nd, t = self.wait_acting(exclude=ld, secs=deploy.TTL + 40)
        inj['acting'] = nd.name if nd else None
        inj['acting_s'] = round(t - inj['fault_t'], 2) if t else None
        rest = inj['fault_t'] + deploy.TTL + 5 - now()
        if rest > 0:
            time.sleep(rest)
        for p in pids:
            try:
                os.kill(p, signal.SIGCONT)
            except OSError:
                pass

    def sc_pm_stop(self, inj):
        ld = self.leader()
        pm = ld.postmaster_pid()
        inj['node'] = ld.name
        inj['fault_t'] = now()
        os.kill(pm, signal.SIGSTOP)
        samples = {'primary200': 0, 'health200': 0, 'health503': 0, 'noanswer': 0,
                   'newconn_ok': 0, 'newconn_fail': 0, 'patroni_leader': 0, 'n': 0}
        end = now() + 15
        while now() < end:
            samples['n'] += 1
            st, _ = http_get(ld.health_port, '/primary', timeout=1)
            samples['primary200'] += (st == 200)
            st, _ = http_get(ld.health_port, '/health', timeout=1)
            if st == 200:
                samples['health200'] += 1
            elif st == 503:
                samples['health503'] += 1
            else:
                samples['noanswer'] += 1
            ok = ld.try_sql('SELECT 1', timeout_ms=1000) is not None
            samples['newconn_ok' if ok else 'newconn_fail'] += 1
            r = ld.rest('/patroni')
            samples['patroni_leader'] += bool(r and r.get('role') == 'master')
            time.sleep(0.5)
        os.kill(pm, signal.SIGCONT)
        inj['pm_stop'] = samples
        log('postmaster SIGSTOP 15 s: %s' % samples)

    def sc_sync_kill(self, inj):
        sb = self.sync_standby()
        if sb is None:
            raise RuntimeError('no sync standby: %s' % self.dep.describe())
        inj['node'] = sb.name
        inj['fault_t'] = now()
        os.kill(sb.postmaster_pid(), signal.SIGKILL)
        # Patroni starts it again by itself

    def sc_zk_one(self, inj):
        i = self.zk_rot % 3 + 1
        self.zk_rot += 1
        inj['node'] = 'zk%d' % i
        inj['fault_t'] = now()
        self.dep.zk_kill(i)
        time.sleep(10)
        self.dep.zk_start(i)
        self.dep.zk_wait(60)

    def sc_zk_quorum(self, inj):
        i = self.zk_rot % 3 + 1
        self.zk_rot += 1
        j = i % 3 + 1
        inj['node'] = 'zk%d+zk%d' % (i, j)
        inj['fault_t'] = now()
        self.dep.zk_kill(i)
        self.dep.zk_kill(j)
        time.sleep(20)
        self.dep.zk_start(i)
        self.dep.zk_start(j)
        self.dep.zk_wait(90)

    def sc_worker_kill(self, inj):
        ld = self.leader()
        k = 'w1' if self.worker_seq % 2 == 0 else 'w2'
        self.worker_seq += 1
        w = self.workers[k]
        held = []
        end = now() + 20
        while now() < end and not held:
            r = ld.try_sql("SELECT id FROM hasched.job WHERE queue = 'chaos_pull' "
                           "AND state = 'running' AND worker LIKE %s", ('%:' + str(w.pid),))
            held = [x[0] for x in (r or [])]
            if not held:
                time.sleep(0.05)
        inj['node'] = '%s (%s)' % (k, 'ZooKeeper liveness' if k == 'w1' else 'lease only')
        inj['fault_t'] = now()
        w.kill()
        self.start_worker(k)
        # every job it held done again
        t_done = None
        end = now() + 90
        while held and now() < end:
            r = self.dep.leader()
            r = r.try_sql("SELECT count(*) FROM hasched.job WHERE id = ANY(%s) "
                          "AND state = 'succeeded'", (held,)) if r else None
            if r and r[0][0] == len(held):
                t_done = now()
                break
            time.sleep(0.2)
        inj['held'] = len(held)
        inj['held_done_s'] = round(t_done - inj['fault_t'], 2) if t_done else None

    def sc_cutoff(self, inj):
        ld = self.leader()
        inj['node'] = ld.name
        inj['fault_t'] = now()
        self.dep.cut([ld.name])
        # what the cut off node says meanwhile (read directly, not through
        # its gate): when its /primary stops answering 200
        end = inj['fault_t'] + 60
        while now() < end:
            st, _ = http_get(ld.health_port, '/primary', timeout=0.5)
            if st != 200:
                inj['old_primary_stops_s'] = round(now() - inj['fault_t'], 2)
                inj['old_primary_then'] = st
                break
            time.sleep(0.2)
        nd, t = self.wait_acting(exclude=ld, secs=60)
        inj['acting'] = nd.name if nd else None
        inj['acting_s'] = round(t - inj['fault_t'], 2) if t else None
        rest = inj['fault_t'] + 25 - now()
        if rest > 0:
            time.sleep(rest)
        self.dep.cut([])

    def sc_region(self, inj):
        """doc/runbooks.md, "The region is lost" with Patroni."""
        ld = self.leader()
        sb = self.sync_standby()
        dr = self.dep.nodes[2]
        if sb is None or dr in (ld, sb):
            raise RuntimeError('region: the DR node is not the async standby: %s'
                               % self.dep.describe())
        pids = [ld.patroni.pid, ld.postmaster_pid(), sb.patroni.pid, sb.postmaster_pid()]
        inj['node'] = '%s+%s' % (ld.name, sb.name)
        inj['fault_t'] = now()
        for p in pids:
            if p:
                os.kill(p, signal.SIGKILL)
        ld.patroni.p.wait()
        sb.patroni.p.wait()
        # runbook step 1: how far is the DR node
        r = dr.try_sql("SELECT pg_last_wal_replay_lsn()::text, "
                       "extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8")
        inj['dr_replay'] = r[0][0] if r else None
        inj['dr_lag_s'] = round(float(r[0][1]), 3) if r and r[0][1] is not None else None
        # step 2: decide the region is gone (here: we killed it); wait until
        # Patroni's leader key expired so the DCS shows no leader
        time.sleep(1)
        # step 3: drop the synchronous requirement, lift the DR node's tags
        t_manual = now()
        rr = self.dep.patronictl('edit-config', deploy.SCOPE, '--force', '-q',
                                 '-s', 'synchronous_mode=false',
                                 '-s', 'synchronous_mode_strict=false')
        if rr.returncode != 0:
            log('patronictl edit-config: %s %s' % (rr.stdout, rr.stderr))
        self.set_tags(dr, False)
        nd, t = self.wait_acting(exclude=None, secs=120)
        inj['acting'] = nd.name if nd else None
        inj['acting_s'] = round(t - inj['fault_t'], 2) if t else None
        inj['manual_s'] = round(now() - t_manual, 2)
        # the lost region comes back: as replicas of the DR node (pg_rewind)
        ld.start_patroni()
        sb.start_patroni()
        end = now() + 120
        while now() < end:
            c = self.dep.cluster() or {}
            ms = [m for m in c.get('members', []) if m.get('state') == 'running']
            if len(ms) == 3 and all(self.dep.streaming(self.dep.node(m['name']))
                                    for m in ms if m.get('role') != 'leader'):
                break
            time.sleep(1)
        # fail back: synchronous again, the DR node back to DR, switch over
        self.dep.patronictl('edit-config', deploy.SCOPE, '--force', '-q',
                            '-s', 'synchronous_mode=true', '-s', 'synchronous_mode_strict=true')
        end = now() + 60
        while now() < end and self.sync_standby() is None:
            time.sleep(1)
        cand = ld if ld is not dr else sb
        rr = self.dep.patronictl('switchover', deploy.SCOPE, '--leader', dr.name,
                                 '--candidate', self.sync_standby().name
                                 if self.sync_standby() else cand.name, '--force')
        log('switchover back: rc %d %s' % (rr.returncode, (rr.stdout + rr.stderr).strip()[-300:]))
        time.sleep(3)
        self.set_tags(dr, True)

    # ---- RabbitMQ ----
    def dispatcher_state(self):
        """(status, broker index 1..3 it is connected to or None) of the
        dispatcher on the leader, from hasched.health()."""
        ld = self.dep.leader()
        r = ld.try_sql("SELECT status, detail FROM hasched.health() "
                       "WHERE component = 'dispatcher'", timeout_ms=1000) if ld else None
        if not r:
            return None, None
        m = re.search(r'connected to broker (\d+) of', r[0][1] or '')
        return r[0][0], (int(m.group(1)) if m and r[0][0] == 'ok' else None)

    def sc_rabbit_one(self, inj):
        """One node SIGKILLed for 15 s, then started again: the
        dispatcher's broker in rounds 1 and 3, another one in round 2."""
        _, cur = self.dispatcher_state()
        rot = self.rabbit_rot
        self.rabbit_rot += 1
        wb = self.worker_brokers()
        others = sorted(set(wb.values()) - {cur})
        if cur is None:
            i, why = rot % 3 + 1, 'the dispatcher was not connected'
        elif rot % 2 == 0:
            i, why = cur, "the dispatcher's"
        elif others:
            i = others[0]
            why = "not the dispatcher's; %s's" % ', '.join(k for k, v in sorted(wb.items())
                                                           if v == i)
        else:
            i, why = cur % 3 + 1, "no client's"
        r = self.dep.rabbits[i - 1]
        if rot % 2 == 0 and cur is not None:
            on = [k for k, v in sorted(wb.items()) if v == i]
            if on:
                why += ' and %s\'s' % ', '.join(on)
        inj['node'] = '%s (%s)' % (r.name, why)
        inj['dispatcher_on'] = cur
        inj['fault_t'] = now()
        r.kill()
        # where the dispatcher went, and when
        end = inj['fault_t'] + 15
        while now() < end:
            st, b = self.dispatcher_state()
            if cur == i and b is not None and b != i and 'dispatcher_moved_s' not in inj:
                inj['dispatcher_moved_s'] = round(now() - inj['fault_t'], 2)
                inj['dispatcher_to'] = 'rabbit%d' % b
            time.sleep(0.1)
        inj['restart_t'] = now()
        r.start()
        ok = r.wait_ready(120)
        inj['broker_back_s'] = round(now() - inj['restart_t'], 1) if ok else None
        if not self.dep.rabbit_wait(120):
            inj['unsettled'] = 'RabbitMQ cluster not whole: %s' % self.dep.rabbit_running()

    def sc_rabbit_all(self, inj):
        """All three nodes SIGKILLed, 30 s, then started again together."""
        inj['node'] = 'rabbit1+rabbit2+rabbit3'
        inj['fault_t'] = now()
        for r in self.dep.rabbits:
            r.kill()
        end = inj['fault_t'] + 30
        while now() < end:
            st, _ = self.dispatcher_state()
            if st and st != 'ok' and 'dispatcher_noticed_s' not in inj:
                inj['dispatcher_noticed_s'] = round(now() - inj['fault_t'], 2)
                inj['dispatcher_said'] = st
            time.sleep(0.2)
        inj['restart_t'] = now()
        for r in self.dep.rabbits:
            r.start()
        ok = self.dep.rabbit_wait(180)
        inj['broker_back_s'] = round(now() - inj['restart_t'], 1) if ok else None
        if not ok:
            inj['unsettled'] = 'RabbitMQ cluster not whole: %s' % self.dep.rabbit_running()
        end = now() + 90
        while now() < end:
            st, b = self.dispatcher_state()
            if b is not None:
                inj['dispatcher_back_s'] = round(now() - inj['restart_t'], 1)
                break
            time.sleep(0.2)
        self.wait_amqp_done(inj['restart_t'], 90)

    def wait_amqp_done(self, since, secs):
        """Until an AMQP job completed after since (the checker measures
        when from the job rows)."""
        end = now() + secs
        while now() < end:
            ld = self.dep.leader()
            r = ld.try_sql("SELECT count(*) FROM hasched.job WHERE queue = 'chaos_amqp' "
                           "AND finished_at > to_timestamp(%s)", (since,)) if ld else None
            if r and r[0][0] > 0:
                return True
            time.sleep(0.5)
        return False

    def worker_brokers(self):
        """{worker: broker index 1..3} of the AMQP workers connected now
        (their health endpoints)."""
        out = {}
        for k, port in (('a1', self.base + 403), ('a2', self.base + 404)):
            st, body = http_get(port, '/health', timeout=1)
            m = re.search(r'"broker": \{"ok": true, "url": "[^"]*:(\d+)/', body or '')
            if m:
                out[k] = int(m.group(1)) - self.base - 500
        return out

    def set_tags(self, nd, dr):
        with open(nd.config_path()) as f:
            conf = json.load(f)
        conf['tags']['nofailover'] = dr
        conf['tags']['nosync'] = dr
        with open(nd.config_path(), 'w') as f:
            json.dump(conf, f, indent=1)
        nd.patroni.send(signal.SIGHUP)

    def inject(self, name):
        inj = {'scenario': name, 'started': now()}
        log('---- %s' % TITLES[name])
        try:
            getattr(self, 'sc_' + name)(inj)
        except Exception as e:  # noqa: BLE001 - a scenario that could not run is reported
            inj['error'] = str(e)
            log('scenario %s failed to run: %s' % (name, e))
        self.settle(inj)
        inj['healed_t'] = now()
        log('%s: %s; cluster: %s' % (name, {k: v for k, v in inj.items()
                                             if k not in ('started',)}, self.dep.describe()))
        self.injections.append(inj)
        # a few seconds of plain load between faults
        time.sleep(5)
        return inj

    # ---- memory ----
    def sample_rss(self):
        """{process: (VmRSS, RssAnon, role)}: role is the node's (primary or
        standby, from Patroni's leader), since a standby's scheduler and
        listener do less than a primary's and a promotion is no leak."""
        s = {}
        try:
            lead = self.dep.leader()
        except Exception:  # noqa: BLE001 - no answer: role unknown
            lead = None
        for name, pid in self.dep.hasched_pids().items():
            kb = rss_kb(pid)
            if kb:
                role = ('?' if lead is None else
                        'primary' if name.startswith(lead.name + ' ') else 'standby')
                s['%s [%d]' % (name, pid)] = kb + (role,)
        for k, w in self.workers.items():
            if w.alive():
                kb = rss_kb(w.pid)
                if kb:
                    s['hasched-worker %s [%d]' % (k, w.pid)] = kb + ('worker',)
        self.rss.append((now(), s))

    # ---- the end ----
    def drain(self, secs=90):
        """Stops the load and waits until no chaos job is left unfinished."""
        self.stop_load()
        end = now() + secs
        self.dep.wait_healthy(60)
        while now() < end:
            ld = self.dep.leader()
            r = ld.try_sql("SELECT count(*) FROM hasched.job WHERE queue IN " + QUEUES_SQL +
                           " AND state NOT IN ('succeeded', 'dead', 'cancelled')"
                           " AND (schedule IS NULL OR fire_at < now() - interval '3 seconds')"
                           ) if ld else None
            if r and r[0][0] == 0:
                return True
            time.sleep(1)
        return False


# ---------------------------------------------------------------------------
# the checker

def read_acks(path):
    acks, errs, last = [], [], None
    with open(path) as f:
        for line in f:
            p = line.split(' ', 4)
            if p[0] == 'ack':
                acks.append((float(p[1]), p[2], int(p[3]), p[4].strip()))
            elif p[0] == 'err':
                errs.append(float(p[1]))
            elif p[0] == 'last':
                last = p[2].strip()
    return acks, errs, last


def _ts(line, fmt):
    try:
        return time.mktime(time.strptime(line[:19], fmt)) + float('0.' + line[20:23])
    except ValueError:
        return None


def log_times(suite, ft, nxt):
    """From the nodes' logs: when Patroni promoted a node after the fault,
    when its PostgreSQL finished recovery and when hasched's scheduler became
    active there (the design's "scheduler active within 1 s of promotion")."""
    out = {}
    for nd in suite.dep.nodes:
        try:
            with open(os.path.join(nd.dir, 'patroni.log')) as f:
                for line in f:
                    if 'promoted self to leader' in line:
                        t = _ts(line, '%Y-%m-%d %H:%M:%S')
                        # the earliest promotion after the fault, on any node
                        if t and ft <= t < nxt and t - ft < out.get('patroni_s', 1e9):
                            out['patroni_s'] = round(t - ft, 2)
                            out['promoted'] = nd.name
        except OSError:
            pass
    nd = suite.dep.node(out.get('promoted', ''))
    if nd:
        t_rec = None
        try:
            with open(os.path.join(nd.dir, 'patroni.out'), errors='replace') as f:
                for line in f:
                    if t_rec is None and ('archive recovery complete' in line):
                        t = _ts(line, '%Y-%m-%d %H:%M:%S')
                        if t and ft <= t < nxt:
                            t_rec = t
                    elif t_rec and 'scheduler active on timeline' in line:
                        t = _ts(line, '%Y-%m-%d %H:%M:%S')
                        if t and t >= t_rec - 0.001:
                            out['promoted_pg_s'] = round(t_rec - ft, 2)
                            out['resume_s'] = round(t - t_rec, 3)
                            break
        except OSError:
            pass
    return out


def check(suite):
    dep = suite.dep
    ld = dep.wait_leader(60)
    if ld is None:
        raise RuntimeError('checker: no leader')
    # surviving primary's view
    jobs = ld.sql("SELECT id, queue, state, attempt, idempotency_key, schedule, "
                  "extract(epoch FROM fire_at)::float8, extract(epoch FROM finished_at)::float8, "
                  "result, extract(epoch FROM started_at)::float8 "
                  "FROM hasched.job WHERE queue IN " + QUEUES_SQL,
                  timeout_ms=120000)
    effects = ld.sql("SELECT key, count(*) FROM chaos.effect GROUP BY key", timeout_ms=120000)
    acks, errs = [], []
    last_keys = set()
    for tag, (_, out) in suite.loads.items():
        a, e, last = read_acks(out)
        acks += a
        errs += e
        if last:
            last_keys.add(last)
    acks.sort()
    by_key = {}
    dup_jobs = 0
    for j in jobs:
        k = j[4]
        if k is None:
            continue
        if k in by_key:
            dup_jobs += 1
        by_key[k] = j
    acked_keys = {a[1]: a for a in acks}
    lost = [a for a in acks if a[1] not in by_key]
    wrong_id = [a for a in acks if a[1] in by_key and by_key[a[1]][0] != a[2]]
    # stale results: a pull job's result names another attempt than its own
    stale = [j for j in jobs if j[1] in ('chaos_pull', 'chaos_amqp') and j[2] == 'succeeded'
             and j[8]
             and isinstance(j[8], dict) and j[8].get('attempt') != j[3]]
    eff = dict(effects)
    dup_effects = sorted(k for k, c in eff.items() if c > 1 and not k.startswith('cron:'))
    dup_cron_eff = sorted(k for k, c in eff.items() if c > 1 and k.startswith('cron:'))
    # SQL jobs that succeeded without their effect (the effect and the
    # success commit together: this must be 0 too)
    no_effect = [j for j in jobs if j[1] == 'chaos_sql' and j[2] == 'succeeded'
                 and j[4] and j[4] not in eff]
    stuck = [j for j in jobs if j[2] not in ('succeeded', 'dead', 'cancelled')]
    dead = [j for j in jobs if j[2] == 'dead']
    # unexpected: a key nobody sent (not acked, not the one in flight at stop)
    unexpected = [j for j in jobs if j[4] is not None and j[4] not in acked_keys
                  and j[4] not in last_keys]
    unexpected += [j for j in jobs if j[4] is None and j[5] != 'chaos-cron']
    # cron
    fires = {}
    for j in jobs:
        if j[5] == 'chaos-cron' and j[6] is not None:
            fires[round(j[6])] = fires.get(round(j[6]), 0) + 1
    cron_double = sorted(t for t, c in fires.items() if c > 1)
    missed = []
    if fires:
        first, last = min(fires), max(fires)
        missed = [t for t in range(first, last + 1) if t not in fires]
    # per injection
    injs = suite.injections
    finishes = sorted(j[7] for j in jobs if j[7] is not None)
    amqp_done = sorted(j[7] for j in jobs if j[1] == 'chaos_amqp' and j[7] is not None)
    amqp_start = sorted(j[9] for j in jobs if j[1] == 'chaos_amqp' and j[9] is not None)
    ack_times = [a[0] for a in acks]
    import bisect
    rows = []
    for n, inj in enumerate(injs):
        ft = inj.get('fault_t')
        if ft is None:
            inj['skipped'] = True
            continue
        nxt = injs[n + 1]['fault_t'] if n + 1 < len(injs) and injs[n + 1].get('fault_t') \
            else inj['healed_t'] + 5
        # completions: the longest pause from the fault on; recovery = the
        # fault to the end of that pause (0 when no pause beyond 1 s)
        i = bisect.bisect_right(finishes, ft)
        j2 = bisect.bisect_left(finishes, nxt)
        pts = [ft] + finishes[i:j2]
        if len(pts) == 1:
            inj['pause_s'] = round(nxt - ft, 2)
            inj['recovery_s'] = None
        else:
            g, end = max(((b - a, b) for a, b in zip(pts, pts[1:])), default=(0, ft))
            inj['pause_s'] = round(g, 2)
            inj['recovery_s'] = round(end - ft, 2) if g > 1.0 else 0.0
        if suite.rabbit:
            # AMQP jobs alone: the longest pause in their starts (the
            # dispatch) and in their completions, from the fault to the
            # next fault (or the end of the window: the rabbit scenarios
            # return once AMQP jobs complete again)
            for key, ts in (('amqp_start_pause_s', amqp_start),
                            ('amqp_pause_s', amqp_done)):
                seg = [ft] + ts[bisect.bisect_right(ts, ft):bisect.bisect_left(ts, nxt)] + [nxt]
                inj[key] = round(max(b - a for a, b in zip(seg, seg[1:])), 2)
            if inj.get('restart_t'):
                # the brokers were started again then: the first AMQP job
                # completed after that
                k = bisect.bisect_right(amqp_done, inj['restart_t'])
                inj['amqp_recovery_s'] = (round(amqp_done[k] - inj['restart_t'], 2)
                                          if k < len(amqp_done) else None)
        promo = log_times(suite, ft, nxt)
        inj.update(promo)
        # longest gap in accepted submits from the last ack before the fault
        i0 = max(0, bisect.bisect_right(ack_times, ft) - 1)
        i1 = bisect.bisect_right(ack_times, nxt)
        seg = ack_times[i0:i1]
        gap = max((b - a for a, b in zip(seg, seg[1:])), default=None)
        if seg and seg[-1] < nxt and (i1 >= len(ack_times)):
            gap = max(gap or 0, nxt - seg[-1])
        inj['max_gap_s'] = round(gap, 2) if gap is not None else None
        inj['lost'] = sum(1 for a in lost if ft - 30 <= a[0] < nxt)
        lost_in = [a[0] for a in lost if ft - 30 <= a[0] < nxt]
        inj['rpo_s'] = round(max(lost_in) - min(lost_in), 2) if lost_in else 0.0
        rec_t = ft + (inj['recovery_s'] if inj['recovery_s'] is not None else nxt - ft)
        inj['cron_missed'] = sum(1 for t in missed if ft - 1 <= t <= nxt)
        inj['cron_missed_beyond'] = sum(1 for t in missed
                                        if ft - 1 <= t <= nxt and t > rec_t + MISFIRE_S + 1)
        rows.append(inj)
    in_window = set()
    for inj in rows:
        ft = inj['fault_t']
        for t in missed:
            if ft - 1 <= t <= inj['healed_t'] + 5:
                in_window.add(t)
    res = {
        'submits': len(acks), 'submit_errors': len(errs), 'jobs': len(jobs),
        'lost': len(lost), 'wrong_id': len(wrong_id), 'dup_jobs': dup_jobs,
        'stale_results': len(stale), 'dup_effects': len(dup_effects),
        'dup_cron_effects': len(dup_cron_eff), 'no_effect': len(no_effect),
        'stuck': len(stuck), 'dead': len(dead), 'unexpected': len(unexpected),
        'cron_runs': len(fires), 'cron_double': len(cron_double),
        'cron_missed': len(missed),
        'cron_missed_outside_faults': len([t for t in missed if t not in in_window]),
        'split_brain': [i.get('split_brain') for i in injs if i.get('split_brain')],
        'lost_keys': [a[1] for a in lost][:20],
        'stuck_ids': [(j[0], j[2]) for j in stuck][:20],
        'dup_effect_keys': dup_effects[:20],
    }
    # the quorum queues' members (one on each node, or the loss of one
    # node is the loss of the queue)
    res['rabbit_members'] = {}
    for r in dep.rabbits:
        if not r.alive():
            continue
        c = r.ctl('list_queues', '--no-table-headers', 'name', 'type', 'members', timeout=60)
        for line in c.stdout.splitlines() if c.returncode == 0 else []:
            p = line.split(None, 2)
            if len(p) == 3 and p[0].startswith('hasched.chaos_amqp.'):
                res['rabbit_members'][p[0]] = '%s, %d members' % (p[1], p[2].count('@'))
        break
    # pull commands run more than once (at least once by design: a worker
    # killed mid-job, a lease lost)
    try:
        runs = {}
        with open(suite.runs_log) as f:
            for line in f:
                p = line.split()
                if p:
                    runs[p[0]] = runs.get(p[0], 0) + 1
        res['pull_reruns'] = sum(1 for c in runs.values() if c > 1)
    except OSError:
        res['pull_reruns'] = 0
    return res, rows


def fmt(v):
    if v is None:
        return '-'
    if isinstance(v, float):
        return '%.1f' % v if v >= 10 else '%.2f' % v
    return str(v)


def rng(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return '-'
    if len(vals) == 1:
        return fmt(vals[0])
    return '%s / %s / %s' % (fmt(min(vals)), fmt(statistics.median(vals)), fmt(max(vals)))


def report(suite, res, rows, title, extra=''):
    out = []
    out.append('### %s' % title)
    out.append('')
    out.append('%s UTC on %s (%s, %d cores, load average %s at the end); Patroni 3.0.2 on '
               'ZooKeeper, ttl %d / loop_wait %d, synchronous_mode_strict; %s%d submits '
               '(%d per second per generator, 2 generators), %d cron runs.'
               % (time.strftime('%Y-%m-%d %H:%M', time.gmtime()), platform.node(),
                  platform.machine(), os.cpu_count(), os.getloadavg()[0].__round__(2),
                  deploy.TTL, deploy.LOOP_WAIT,
                  'RabbitMQ 3.10 cluster of 3 (%s; hasched.circuit_open_duration %s); '
                  % ('; '.join('%s %s' % kv for kv in sorted(res.get('rabbit_members', {})
                                                             .items())) or 'no queue',
                     deploy.RABBIT_CIRCUIT_OPEN) if suite.rabbit else '',
                  res['submits'], suite.rate, res['cron_runs']))
    out.append('')
    out.append('Per scenario, min / median / max over the runs, in seconds from the fault: '
               '*promoted* = Patroni promoted a node (its log); *acting* = a node answers '
               '`/primary` 200 and takes a new connection; *resume* = hasched\'s scheduler '
               'active after PostgreSQL left recovery (its log); *recovery* = the first job '
               'completed after the longest pause in completions (0: no pause over 1 s); '
               '*pause* = that pause; *gap* = the longest time without an accepted submit; '
               '*lost* = acknowledged submits missing afterwards; *cron missed* = seconds '
               'without a cron run ("beyond" = later than the recovery + the misfire '
               'threshold, 5 s).' + (' *AMQP pause* = the longest pause in the completions of '
               'AMQP jobs alone (in their starts, i.e. the dispatch, in the notes).'
               if suite.rabbit else ''))
    out.append('')
    amqp_col = ' AMQP pause |' if suite.rabbit else ''
    out.append('| scenario | runs | promoted | acting | resume | recovery | pause |%s gap | lost | '
               'cron missed (beyond) | split brain | notes |' % amqp_col)
    out.append('| --- | --- | --- | --- | --- | --- | --- |%s --- | --- | --- | --- | --- |'
               % (' --- |' if suite.rabbit else ''))
    for sc in SCENARIOS:
        rs = [r for r in rows if r['scenario'] == sc]
        if not rs:
            continue
        notes = []
        if sc == 'worker_kill':
            for r in rs:
                notes.append('%s: %s held jobs done again after %s s'
                             % (r.get('node'), r.get('held'), fmt(r.get('held_done_s'))))
        if sc == 'pm_stop':
            for r in rs[:1]:
                s = r.get('pm_stop', {})
                notes.append('during the stop: /primary 200 in %s of %s samples, /health 200 '
                             '%s / 503 %s, new connections failed %s of %s, Patroni still '
                             'leader in %s' % (s.get('primary200'), s.get('n'),
                                               s.get('health200'), s.get('health503'),
                                               s.get('newconn_fail'), s.get('n'),
                                               s.get('patroni_leader')))
        if sc == 'region':
            for r in rs:
                notes.append('DR lag at loss %s s, RPO %s submits over %s s, DR acting %s s '
                             'after the loss (%s s after the manual step)'
                             % (fmt(r.get('dr_lag_s')), r.get('lost'), fmt(r.get('rpo_s')),
                                fmt(r.get('acting_s')), fmt(r.get('manual_s'))))
        if sc == 'cutoff':
            notes.append('the cut-off node\'s `/primary` stopped answering 200 after %s s '
                         '(then: %s)' % (', '.join(fmt(r.get('old_primary_stops_s')) for r in rs),
                                         ', '.join(str(r.get('old_primary_then')) for r in rs)))
        if sc == 'rabbit_one':
            for r in rs:
                notes.append('%s: the dispatcher %s; AMQP starts paused %s s; the node back '
                             '%s s after its restart'
                             % (r.get('node'), 'moved to %s after %s s' % (
                                 r.get('dispatcher_to'), fmt(r.get('dispatcher_moved_s')))
                                if r.get('dispatcher_moved_s') is not None else
                                'stayed on rabbit%s' % r.get('dispatcher_on'),
                                fmt(r.get('amqp_start_pause_s')), fmt(r.get('broker_back_s'))))
        if sc == 'rabbit_all':
            for r in rs:
                notes.append('health said "%s" %s s after the kill; cluster back %s s after '
                             'the restart, dispatcher connected %s s, first AMQP job '
                             'completed %s s after it'
                             % (r.get('dispatcher_said'), fmt(r.get('dispatcher_noticed_s')),
                                fmt(r.get('broker_back_s')), fmt(r.get('dispatcher_back_s')),
                                fmt(r.get('amqp_recovery_s'))))
        errs = [r['error'] for r in rs if r.get('error')]
        if errs:
            notes.append('not run: ' + '; '.join(errs))
        uns = [r['unsettled'] for r in rs if r.get('unsettled')]
        if uns:
            notes.append('not healthy after the heal: ' + '; '.join(uns))
        out.append('| %s | %d | %s | %s | %s | %s | %s |%s %s | %d | %d (%d) | %s | %s |' % (
            TITLES[sc], len(rs), rng([r.get('patroni_s') for r in rs]),
            rng([r.get('acting_s') for r in rs]), rng([r.get('resume_s') for r in rs]),
            rng([r.get('recovery_s') for r in rs]), rng([r.get('pause_s') for r in rs]),
            ' %s |' % rng([r.get('amqp_pause_s') for r in rs]) if suite.rabbit else '',
            rng([r.get('max_gap_s') for r in rs]),
            sum(r.get('lost', 0) for r in rs), sum(r.get('cron_missed', 0) for r in rs),
            sum(r.get('cron_missed_beyond', 0) for r in rs),
            ', '.join(r['split_brain'] for r in rs if r.get('split_brain')) or 'no',
            '; '.join(notes)))
    out.append('')
    out.append('Whole run: acknowledged submits lost %d (of them in region loss, expected '
               'with an asynchronous DR standby: %d); acknowledged ids that differ %d; '
               'results recorded twice %d (jobs per key %d, results of a stale attempt %d); '
               'SQL effects twice %d; SQL jobs succeeded without their effect %d; cron runs '
               'fired twice %d (effects twice %d); cron seconds missed %d, outside any fault '
               'window %d; jobs stuck in a non-final state after the drain %d; dead %d; '
               'unexpected jobs %d; pull commands run more than once (at least once: workers '
               'killed, leases lost) %d; submit errors seen by clients %d.'
               % (res['lost'], sum(r.get('lost', 0) for r in rows if r['scenario'] == 'region'),
                  res['wrong_id'], res['dup_jobs'] + res['stale_results'], res['dup_jobs'],
                  res['stale_results'], res['dup_effects'], res['no_effect'],
                  res['cron_double'], res['dup_cron_effects'], res['cron_missed'],
                  res['cron_missed_outside_faults'], res['stuck'], res['dead'],
                  res['unexpected'], res['pull_reruns'], res['submit_errors']))
    if extra:
        out.append('')
        out.append(extra)
    return '\n'.join(out) + '\n'


def safety_failures(res, rows):
    bad = []
    region_lost = sum(r.get('lost', 0) for r in rows if r['scenario'] == 'region')
    for k in ('wrong_id', 'dup_jobs', 'stale_results', 'dup_effects', 'dup_cron_effects',
              'no_effect', 'cron_double', 'stuck', 'unexpected'):
        if res[k]:
            bad.append('%s=%d' % (k, res[k]))
    if res['lost'] - region_lost:
        bad.append('lost=%d (outside region loss)' % (res['lost'] - region_lost))
    return bad


def targets(res, rows):
    out = ['Targets:']

    def line(ok, text):
        if ' - s' in text or '()' in text or 'max - s' in text:
            out.append('- not measured (scenario not run): %s' % text)
            return
        out.append('- %s %s' % ('met:' if ok else 'MISSED:', text))
    fo = [r.get('recovery_s') for r in rows
          if r['scenario'] in ('pm_kill', 'node_kill', 'freeze', 'cutoff')]
    fo_ok = [v for v in fo if v is not None]
    line(fo_ok and len(fo_ok) == len(fo) and max(fo_ok) <= 40,
         'primary failover <= 40 s end to end (max %s s over %d runs)' % (fmt(max(fo_ok)) if fo_ok
                                                                       else '-', len(fo)))
    line(fo_ok and len(fo_ok) == len(fo) and max(fo_ok) <= 15,
         'aim: failover <= 15 s (max %s s)' % (fmt(max(fo_ok)) if fo_ok else '-'))
    rs = [r.get('resume_s') for r in rows if r.get('resume_s') is not None
          and r['scenario'] != 'zk_quorum']
    line(rs and max(rs) <= 1.0, 'scheduler resume <= 1 s after promotion (max %s s over %d '
         'promotions, ZooKeeper quorum loss apart)' % (fmt(max(rs)) if rs else '-', len(rs)))
    rq = [r.get('resume_s') for r in rows if r.get('resume_s') is not None
          and r['scenario'] == 'zk_quorum']
    line(rq and max(rq) <= 1.0, 'scheduler resume <= 1 s after the promotion that follows a '
         'ZooKeeper quorum loss (max %s s over %d)%s'
         % (fmt(max(rq)) if rq else '-', len(rq),
            '' if rq and max(rq) <= 1.0 else
            ': is the election znode of the promoted node\'s previous postmaster deleted '
            '(its log: "deleted election znode ... previous postmaster")?'))
    zk = [r.get('max_gap_s') for r in rows if r['scenario'] == 'zk_one']
    zk_ok = [v for v in zk if v is not None]
    line(zk_ok and max(zk_ok) <= 1.0,
         'one ZooKeeper node lost: no pause beyond 1 s (longest submit gap %s s)'
         % (fmt(max(zk_ok)) if zk_ok else '-'))
    r1 = [r for r in rows if r['scenario'] == 'rabbit_one']
    if r1:
        worst = max(max(r.get('amqp_start_pause_s') or 0, r.get('amqp_pause_s') or 0)
                    for r in r1)
        line(worst <= 1.0, 'one RabbitMQ node lost: no pause in AMQP dispatch beyond 1 s '
             '(longest pause in AMQP starts %s s, in AMQP completions %s s, over %d runs)'
             % (fmt(max(r.get('amqp_start_pause_s') or 0 for r in r1)),
                fmt(max(r.get('amqp_pause_s') or 0 for r in r1)), len(r1)))
    ra = [r.get('amqp_recovery_s') for r in rows if r['scenario'] == 'rabbit_all']
    if ra:
        line(all(v is not None for v in ra),
             'all RabbitMQ nodes lost for 30 s: AMQP jobs completed again after the restart '
             '(first after %s s)' % ', '.join(fmt(v) for v in ra))
    wk = [r.get('held_done_s') for r in rows if r['scenario'] == 'worker_kill']
    line(all(v is not None and v <= 20 + 5 for v in wk),
         'worker crash: its jobs done again within the lease (20 s) + one run (%s)'
         % ', '.join(fmt(v) for v in wk))
    region_lost = sum(r.get('lost', 0) for r in rows if r['scenario'] == 'region')
    line(res['lost'] - region_lost == 0,
         '0 acknowledged submits lost with a synchronous standby (%d)' % (res['lost'] - region_lost))
    line(res['dup_jobs'] + res['stale_results'] == 0, '0 results recorded twice')
    line(res['dup_effects'] == 0, '0 SQL effects twice')
    line(res['cron_double'] == 0 and res['dup_cron_effects'] == 0, '0 cron runs fired twice')
    line(res['stuck'] == 0, '0 jobs stuck after the drain')
    return '\n'.join(out) + '\n'


# ---------------------------------------------------------------------------

def make_suite(a, rabbit=True):
    base = int(os.environ.get('CHAOS_PORT_BASE', a.port_base))
    bindir = os.environ.get('PG_BINDIR') or subprocess.check_output(
        [os.environ.get('PG_CONFIG', '/usr/lib/postgresql/15/bin/pg_config'), '--bindir'],
        text=True).strip()
    import pwd
    user = pwd.getpwuid(os.getuid()).pw_name
    rate = float(os.environ.get('CHAOS_RATE', '10'))
    return Suite(os.path.abspath(a.dir), base, bindir, user, rate, rabbit)


def write_report(a, text):
    sys.stdout.write('\n' + text)
    if a.report:
        with open(a.report, 'w') as f:
            f.write(text)
        log('report written to %s' % a.report)


def cmd_run(a):
    scen = a.scenarios.split(',') if a.scenarios else SCENARIOS
    s = make_suite(a, rabbit=os.environ.get('CHAOS_RABBIT', '1') != '0')
    if not s.rabbit:
        scen = [x for x in scen if x not in RABBIT_SCENARIOS]
    for sc in scen:
        if sc not in SCENARIOS:
            sys.exit('unknown scenario %s (known: %s)' % (sc, ', '.join(SCENARIOS)))
    t0 = now()
    rc = 0
    try:
        s.start()
        log('deployed in %.0f s; load running' % (now() - t0))
        time.sleep(10)
        # region loss last in each round: it fails back afterwards
        for rnd in range(a.repeat):
            for sc in scen:
                s.inject(sc)
        drained = s.drain()
        log('drained: %s' % drained)
        res, rows = check(s)
        text = report(s, res, rows, 'Chaos run (`make chaos`, %d rounds, %.0f min)'
                      % (a.repeat, (now() - t0) / 60))
        text += '\n' + targets(res, rows)
        bad = safety_failures(res, rows)
        if bad:
            text += '\nSAFETY FAILURES: %s\n' % ', '.join(bad)
            rc = 1
        text += '\nDetails: %s\n' % json.dumps({k: v for k, v in res.items()
                                                if isinstance(v, list) and v})
        write_report(a, text)
        with open(os.path.join(s.dir, 'injections.json'), 'w') as f:
            json.dump(s.injections, f, indent=1, default=str)
    finally:
        s.stop()
    return rc


def cmd_smoke(a):
    # no RabbitMQ: the CI smoke stays short
    s = make_suite(a, rabbit=False)
    rc = 0
    t0 = now()
    try:
        s.start()
        log('deployed in %.0f s' % (now() - t0))
        time.sleep(5)
        s.inject('pm_kill')
        s.drain(60)
        res, rows = check(s)
        text = report(s, res, rows, 'Chaos smoke (one postmaster SIGKILL)')
        bad = safety_failures(res, rows)
        r = rows[0] if rows else {}
        if r.get('recovery_s') is None:
            bad.append('no job completed after the fault')
        if res['submits'] == 0:
            bad.append('no submit acknowledged')
        write_report(a, text)
        print('smoke: %s' % ('ok' if not bad else 'FAILED: ' + ', '.join(bad)))
        rc = 1 if bad else 0
    finally:
        s.stop()
    log('smoke took %.0f s' % (now() - t0))
    return rc


# the kinds of hasched process whose memory the soak must show flat
MEM_KINDS = ('scheduler', 'executor', 'coordinator', 'health listener', 'dispatcher',
             'hasched-worker')
MEM_MIN_SAMPLES = 20            # 10 min of samples 30 s apart, in one role
MEM_FLAT_RULE = ('Verdict, on the longest stretch of at least %d samples (%d min) in '
                 'which the process\'s node kept one role (primary or standby, from '
                 'Patroni): flat when its RssAnon at the stretch\'s last sample is at '
                 'most 256 kB or 2 %% above the highest of the stretch\'s warm-up '
                 '(its first third); a process that never lived that long in one '
                 'role is too short to tell. The samples are in the report\'s '
                 '-rss.csv.' % (MEM_MIN_SAMPLES, MEM_MIN_SAMPLES // 2))


def mem_kind(name):
    """The kind of a sampled process, from its description, or None."""
    for kind in MEM_KINDS:
        if ('hasched %s' % kind) in name or name.startswith(kind):
            return kind
    return None


def mem_verdict(samples):
    """(text, flat: True, False or None) for a process's [(t, RssAnon,
    role)] samples (see MEM_FLAT_RULE)."""
    stretches, cur = [], []
    for smp in samples:
        if cur and cur[-1][2] != smp[2]:
            stretches.append(cur)
            cur = []
        cur.append(smp)
    stretches.append(cur)
    best = max(stretches, key=len)
    if len(best) < MEM_MIN_SAMPLES:
        return ('too short to tell (%.1f min as %s at most)'
                % ((best[-1][0] - best[0][0]) / 60, best[0][2]), None)
    anon = [x[1] for x in best]
    warm = len(anon) // 3
    base = max(anon[:warm])
    growth = anon[-1] - base
    flat = growth <= max(256, base * 0.02)
    return ('%s %+d kB over %.1f min as %s' % ('flat' if flat else 'GROWS', growth,
                                               (best[-1][0] - best[warm][0]) / 60,
                                               best[0][2]), flat)


def cmd_soak(a):
    s = make_suite(a)
    faults = [x for x in SCENARIOS if x != 'region']
    rc = 0
    t0 = now()
    try:
        s.start()
        end = now() + a.minutes * 60
        next_fault = now() + a.fault_every
        next_rss = now()
        rnd = random.Random(a.seed)
        while now() < end:
            if now() >= next_rss:
                s.sample_rss()
                next_rss = now() + 30
            if now() >= next_fault:
                s.inject(rnd.choice(faults))
                next_fault = now() + a.fault_every
            time.sleep(1)
        s.sample_rss()
        s.drain()
        res, rows = check(s)
        # memory: every process over its own life (a fault that restarts
        # PostgreSQL somewhere gives its hasched processes new pids)
        first_t, last_t = s.rss[0][0], s.rss[-1][0]
        seen = {}
        for t, smp in s.rss:
            for k, (v, anon, role) in smp.items():
                e = seen.setdefault(k, {'first': v, 'afirst': anon, 'first_t': t, 'max': v,
                                        'amax': anon, 'n': 0, 'anon': []})
                e['last'], e['alast'], e['last_t'] = v, anon, t
                e['max'] = max(e['max'], v)
                e['amax'] = max(e['amax'], anon)
                e['n'] += 1
                e['anon'].append((t, anon, role))
        if a.report:
            with open(a.report + '.rss.csv', 'w') as f:
                f.write('t,process,role,vmrss_kb,rssanon_kb\n')
                for t, smp in s.rss:
                    for k, (v, anon, role) in sorted(smp.items()):
                        f.write('%.1f,"%s",%s,%d,%d\n' % (t, k, role, v, anon))
        mem = ['| process | minutes sampled | own memory (RssAnon) first / last / max kB | '
               'RSS first / last / max kB | samples | RssAnon after warm-up, in one role |',
               '| --- | --- | --- | --- | --- | --- |']
        kinds = {kind: [] for kind in MEM_KINDS}
        for k, e in sorted(seen.items(), key=lambda kv: (-kv[1]['n'], kv[0])):
            kind = mem_kind(k)
            if e['n'] < 4:
                continue
            verdict, flat = mem_verdict(e['anon'])
            if kind and flat is not None:
                kinds[kind].append(flat)
            mem.append('| %s | %.1f | %d / %d / %d | %d / %d / %d | %d | %s |' % (
                k, (e['last_t'] - e['first_t']) / 60, e['afirst'], e['alast'], e['amax'],
                e['first'], e['last'], e['max'], e['n'], verdict))
        summary = []
        for kind in MEM_KINDS:
            v = kinds[kind]
            if not v:
                summary.append('%s: not shown (no such process lived %d min in one role)'
                               % (kind, MEM_MIN_SAMPLES // 2))
            else:
                summary.append('%s: %s (%d process%s)' % (
                    kind, 'flat' if all(v) else 'GROWS in %d' % v.count(False),
                    len(v), '' if len(v) == 1 else 'es'))
        extra = ('Memory, sampled every 30 s over %.0f min, for every process seen in 4 '
                 'samples or more, over its own life (a fault that restarts PostgreSQL gives '
                 'its hasched processes new pids). RssAnon is the process\'s own memory; '
                 'RSS also counts the shared buffers it touched (shared_buffers is 32 MB '
                 'here), which grows for any PostgreSQL process and is no leak. %s\n\n'
                 'Flat, per kind of process: %s.\n\n%s'
                 % ((last_t - first_t) / 60, MEM_FLAT_RULE, '; '.join(summary),
                    '\n'.join(mem)))
        text = report(s, res, rows, 'Soak (`make soak`, %.0f min, a random fault every %d s)'
                      % ((now() - t0) / 60, a.fault_every), extra)
        text += '\n' + targets(res, rows)
        bad = safety_failures(res, rows)
        if bad:
            text += '\nSAFETY FAILURES: %s\n' % ', '.join(bad)
            rc = 1
        write_report(a, text)
    finally:
        s.stop()
    return rc


def main():
    if len(sys.argv) > 1 and sys.argv[1] == 'loadgen':
        import load
        dsn, tag, out, rate = sys.argv[2:6]
        kinds = sys.argv[6].split(',') if len(sys.argv) > 6 else ['sql', 'pull']
        load.loadgen(dsn, tag, out, float(rate), 10.0, kinds)
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument('cmd', choices=['run', 'soak', 'smoke'])
    ap.add_argument('--dir', required=True)
    ap.add_argument('--port-base', type=int, default=25000)
    ap.add_argument('--scenarios', default=None)
    ap.add_argument('--repeat', type=int, default=3)
    ap.add_argument('--minutes', type=float, default=30)
    ap.add_argument('--fault-every', type=int, default=180)
    ap.add_argument('--seed', type=int, default=None)
    ap.add_argument('--report', default=None)
    a = ap.parse_args()

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    return {'run': cmd_run, 'soak': cmd_soak, 'smoke': cmd_smoke}[a.cmd](a)


if __name__ == '__main__':
    sys.exit(main())
