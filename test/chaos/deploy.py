# Copyright: hasched contributors
#
# deploy.py: the chaos suite's deployment, all on loopback and started and
# stopped by pid: a 3-node ZooKeeper ensemble (configured as
# test/perl/HaschedZooKeeper.pm does), three PostgreSQL 15 nodes under
# Debian's Patroni 3.0.2 (ZooKeeper as its DCS), HAProxy routing on
# hasched's GET /primary, and netgate.py in front of every node's ports so
# that a node can be cut off from the others without root.
#
# Port layout from a base B (CHAOS_PORT_BASE, default 25000; the CI smoke
# uses another base):
#   ZooKeeper i (1..3)       client B+i, peer B+10+i, election B+20+i
#   node n (1..3)            PostgreSQL B+100+n (netgate: B+110+n),
#                            Patroni REST B+120+n (netgate: B+130+n),
#                            hasched health B+140+n (netgate: B+150+n),
#                            its way to ZooKeeper i: netgate B+200+10n+i
#   HAProxy                  writes B+300, stats B+301
#   hasched-worker health    B+400+k
#
# The RabbitMQ cluster of issue 9 (3 nodes, quorum queues) goes in
# Deployment.start_rabbitmq() once the dispatcher has landed: ports
# B+500.. are kept for it.
#
# IDENTIFICATION
#	test/chaos/deploy.py

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import psycopg2

HERE = os.path.dirname(os.path.abspath(__file__))
ZK_JARS = ['/usr/share/java/zookeeper.jar', '/usr/share/java/slf4j-log4j12.jar',
           '/usr/share/java/log4j-1.2.jar']
PATRONI = '/usr/bin/patroni'
PATRONICTL = '/usr/bin/patronictl'
PYTHON = '/usr/bin/python3'
HAPROXY = '/usr/sbin/haproxy'
SCOPE = 'chaos'
NAMESPACE = '/service'

# Patroni and hasched timings (the issue's: ttl 10, loop_wait 1)
TTL = 10
LOOP_WAIT = 1
RETRY_TIMEOUT = 4
HS_ZK_SESSION_MS = 6000
HS_ZK_MARGIN_MS = 2000


def log(msg):
    sys.stdout.write('%s %s\n' % (time.strftime('%H:%M:%S'), msg))
    sys.stdout.flush()


def port_open(port, host='127.0.0.1', timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_get(port, path, timeout=2.0):
    """(status, body) of GET http://127.0.0.1:port/path; (None, error) when
    no answer came."""
    try:
        with urllib.request.urlopen('http://127.0.0.1:%d%s' % (port, path),
                                    timeout=timeout) as r:
            return r.status, r.read().decode('utf-8', 'replace')
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode('utf-8', 'replace')
    except Exception as e:  # noqa: BLE001 - any failure is "no answer"
        return None, str(e)


def pid_alive(pid):
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie of ours counts as dead
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().split(') ', 1)[1][0] != 'Z'
    except OSError:
        return False


def children_of(pid):
    """Every descendant pid of pid (from /proc)."""
    kids = {}
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % d) as f:
                ppid = int(f.read().rsplit(') ', 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


class Proc:
    """A process we started: its own session, output to a log file."""

    def __init__(self, name, argv, logfile, env=None, cwd=None):
        self.name = name
        self.argv = argv
        self.logfile = logfile
        self.env = env
        self.cwd = cwd
        self.p = None

    def start(self):
        out = open(self.logfile, 'ab')
        self.p = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd,
                                  start_new_session=True)
        out.close()
        return self

    @property
    def pid(self):
        return self.p.pid if self.p else 0

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def send(self, sig):
        if self.alive():
            os.kill(self.p.pid, sig)

    def stop(self, timeout=10, sig=signal.SIGTERM):
        if not self.alive():
            return
        try:
            os.kill(self.p.pid, signal.SIGCONT)
            os.kill(self.p.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.p.pid, signal.SIGKILL)
            self.p.wait()

    def kill(self):
        if self.alive():
            os.kill(self.p.pid, signal.SIGKILL)
            self.p.wait()


class Node:
    def __init__(self, dep, n):
        b = dep.base
        self.dep = dep
        self.n = n
        self.name = 'pg%d' % n
        self.dir = os.path.join(dep.dir, self.name)
        self.data = os.path.join(self.dir, 'data')
        self.pg_port = b + 100 + n
        self.pg_pub = b + 110 + n
        self.rest_port = b + 120 + n
        self.rest_pub = b + 130 + n
        self.health_port = b + 140 + n
        self.health_pub = b + 150 + n
        self.zk_gates = [b + 200 + 10 * n + i for i in (1, 2, 3)]
        self.dr = (n == 3)
        self.patroni = None

    # ---- configuration ----
    def zk_hosts(self):
        return ['127.0.0.1:%d' % p for p in self.zk_gates]

    def write_config(self):
        os.makedirs(self.dir, exist_ok=True)
        dep = self.dep
        user = dep.user
        conf = {
            'scope': SCOPE,
            'namespace': NAMESPACE,
            'name': self.name,
            'log': {'level': 'INFO', 'dir': self.dir, 'file_num': 2,
                    'file_size': 50000000},
            'restapi': {'listen': '127.0.0.1:%d' % self.rest_port,
                        'connect_address': '127.0.0.1:%d' % self.rest_pub},
            'zookeeper': {'hosts': self.zk_hosts()},
            'bootstrap': {
                'dcs': {
                    'ttl': TTL, 'loop_wait': LOOP_WAIT, 'retry_timeout': RETRY_TIMEOUT,
                    'maximum_lag_on_failover': 1048576,
                    'synchronous_mode': True,
                    'synchronous_mode_strict': True,
                    'postgresql': {
                        'use_pg_rewind': True,
                        'use_slots': True,
                        'parameters': {
                            'wal_level': 'replica',
                            'hot_standby': 'on',
                            'wal_log_hints': 'on',
                            'max_connections': 100,
                            'max_worker_processes': 16,
                            'max_wal_senders': 10,
                            'max_replication_slots': 10,
                            'wal_keep_size': '256MB',
                            # a standby waiting for WAL retries (and sees a
                            # promote request) after this long: PostgreSQL's
                            # 5 s default added up to 5 s to a failover here
                            'wal_retrieve_retry_interval': os.environ.get(
                                'CHAOS_WAL_RETRY', '1s'),
                            'shared_buffers': '32MB',
                            'fsync': 'on',
                        },
                    },
                },
                'initdb': [{'encoding': 'UTF8'}, {'locale': 'C'}],
                'pg_hba': ['local all all trust',
                           'host all all 127.0.0.1/32 trust',
                           'host replication all 127.0.0.1/32 trust'],
            },
            'postgresql': {
                'listen': '127.0.0.1:%d' % self.pg_port,
                'connect_address': '127.0.0.1:%d' % self.pg_pub,
                'data_dir': self.data,
                'bin_dir': dep.bindir,
                'pgpass': os.path.join(self.dir, 'pgpass'),
                'authentication': {
                    'superuser': {'username': user},
                    'replication': {'username': 'replicator'},
                    'rewind': {'username': user},
                },
                'pg_hba': ['local all all trust',
                           'host all all 127.0.0.1/32 trust',
                           'host replication all 127.0.0.1/32 trust'],
                # per node: hasched through Patroni's parameters
                'parameters': {
                    'unix_socket_directories': self.dir,
                    'shared_preload_libraries': 'hasched',
                    'hasched.database': 'postgres',
                    'hasched.health_port': self.health_port,
                    'hasched.zookeeper': ','.join(self.zk_hosts()),
                    'hasched.zookeeper_path': '/hasched/chaos',
                    'hasched.zookeeper_session_timeout': HS_ZK_SESSION_MS,
                    'hasched.zookeeper_fence_margin': HS_ZK_MARGIN_MS,
                    'hasched.max_executors': 2,
                    'logging_collector': 'off',
                    'log_line_prefix': '%m [%p] ',
                    'log_min_messages': 'warning',
                },
            },
            'tags': {'nofailover': self.dr, 'nosync': self.dr,
                     'noloadbalance': False, 'clonefrom': False},
        }
        # JSON is YAML
        with open(self.config_path(), 'w') as f:
            json.dump(conf, f, indent=1)

    def config_path(self):
        return os.path.join(self.dir, 'patroni.yml')

    # ---- processes ----
    def start_patroni(self):
        self.patroni = Proc('patroni-' + self.name, [PYTHON, PATRONI, self.config_path()],
                            os.path.join(self.dir, 'patroni.out'),
                            env=self.dep.env).start()
        return self.patroni

    def postmaster_pid(self):
        try:
            with open(os.path.join(self.data, 'postmaster.pid')) as f:
                pid = int(f.readline().strip())
        except (OSError, ValueError):
            return 0
        return pid if pid_alive(pid) else 0

    def dsn(self, public=False):
        return 'host=127.0.0.1 port=%d dbname=postgres user=%s connect_timeout=3' % (
            self.pg_pub if public else self.pg_port, self.dep.user)

    def sql(self, q, args=None, timeout_ms=5000):
        """Runs q on this node directly (not through its gate); returns the
        rows, or raises."""
        c = psycopg2.connect(self.dsn(), options='-c statement_timeout=%d' % timeout_ms)
        try:
            c.autocommit = True
            with c.cursor() as cur:
                cur.execute(q, args)
                return cur.fetchall() if cur.description else []
        finally:
            c.close()

    def try_sql(self, q, args=None, timeout_ms=3000):
        try:
            return self.sql(q, args, timeout_ms)
        except Exception:  # noqa: BLE001
            return None

    def rest(self, path='/patroni'):
        st, body = http_get(self.rest_port, path, timeout=2)
        if st is None:
            return None
        try:
            return json.loads(body)
        except ValueError:
            return None


class Deployment:
    def __init__(self, workdir, base, bindir, user, log_prefix=''):
        self.dir = workdir
        self.base = base
        self.bindir = bindir
        self.user = user
        self.env = dict(os.environ)
        self.env['PATH'] = bindir + ':' + self.env.get('PATH', '/usr/bin:/bin')
        for v in ('PGHOST', 'PGPORT', 'PGUSER', 'PGDATABASE', 'PGDATA'):
            self.env.pop(v, None)
        self.zk = []          # Proc per ZooKeeper node (None when down)
        self.zk_client = [base + i for i in (1, 2, 3)]
        self.nodes = [Node(self, n) for n in (1, 2, 3)]
        self.haproxy = None
        self.gate = None
        self.haproxy_port = base + 300

    # ---- ZooKeeper ----
    def zk_connect(self):
        return ','.join('127.0.0.1:%d' % p for p in self.zk_client)

    def zk_configure(self):
        b = self.base
        servers = ''.join('server.%d=127.0.0.1:%d:%d\n' % (i, b + 10 + i, b + 20 + i)
                          for i in (1, 2, 3))
        for i in (1, 2, 3):
            d = os.path.join(self.dir, 'zk%d' % i)
            os.makedirs(os.path.join(d, 'data'), exist_ok=True)
            with open(os.path.join(d, 'data', 'myid'), 'w') as f:
                f.write('%d\n' % i)
            with open(os.path.join(d, 'zoo.cfg'), 'w') as f:
                f.write('tickTime=500\ninitLimit=10\nsyncLimit=5\n'
                        'dataDir=%s/data\nclientPort=%d\nclientPortAddress=127.0.0.1\n'
                        '4lw.commands.whitelist=\nadmin.enableServer=false\n%s'
                        % (d, b + i, servers))
            with open(os.path.join(d, 'log4j.properties'), 'w') as f:
                f.write('log4j.rootLogger=INFO, CONSOLE\n'
                        'log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender\n'
                        'log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout\n'
                        'log4j.appender.CONSOLE.layout.ConversionPattern='
                        '%d{ISO8601} - %-5p [%t:%C{1}@%L] - %m%n\n')
        self.zk = [None, None, None]

    def zk_start(self, i):
        d = os.path.join(self.dir, 'zk%d' % i)
        p = Proc('zk%d' % i, ['java', '-Xmx128m', '-XX:+UseSerialGC',
                              '-XX:TieredStopAtLevel=1', '-Djava.net.preferIPv4Stack=true',
                              '-Dzookeeper.jmx.log4j.disable=true',
                              '-cp', ':'.join([d] + ZK_JARS),
                              'org.apache.zookeeper.server.quorum.QuorumPeerMain',
                              os.path.join(d, 'zoo.cfg')],
                 os.path.join(d, 'zookeeper.log'), env=self.env).start()
        # scripts/lib.sh stops leftovers by this file
        with open(os.path.join(d, 'zookeeper.pid'), 'w') as f:
            f.write('%d\n' % p.pid)
        self.zk[i - 1] = p
        return p

    def zk_kill(self, i, sig=signal.SIGKILL):
        p = self.zk[i - 1]
        if p is None:
            return
        if sig == signal.SIGKILL:
            p.kill()
            self.zk[i - 1] = None
            try:
                os.unlink(os.path.join(self.dir, 'zk%d' % i, 'zookeeper.pid'))
            except OSError:
                pass
        else:
            p.send(sig)

    def zk_wait(self, secs=60):
        import logging
        from kazoo.client import KazooClient
        logging.getLogger('kazoo').setLevel(logging.CRITICAL)
        end = time.time() + secs
        while time.time() < end:
            zk = KazooClient(hosts=self.zk_connect(), timeout=5)
            try:
                zk.start(timeout=5)
                zk.get_children('/')
                zk.stop()
                zk.close()
                return True
            except Exception:  # noqa: BLE001
                try:
                    zk.stop()
                    zk.close()
                except Exception:  # noqa: BLE001
                    pass
                time.sleep(0.5)
        return False

    # ---- netgate ----
    def gate_routes(self):
        r = []
        for nd in self.nodes:
            g = nd.name
            r.append((nd.pg_pub, nd.pg_port, g))
            r.append((nd.rest_pub, nd.rest_port, g))
            r.append((nd.health_pub, nd.health_port, g))
            for i, gp in enumerate(nd.zk_gates):
                r.append((gp, self.zk_client[i], g))
        return r

    def gate_start(self):
        routes = os.path.join(self.dir, 'netgate.routes')
        with open(routes, 'w') as f:
            for lp, tp, g in self.gate_routes():
                f.write('%d %d %s\n' % (lp, tp, g))
        self.gate_ctl = os.path.join(self.dir, 'netgate.cut')
        open(self.gate_ctl, 'w').close()
        self.gate = Proc('netgate', [PYTHON, os.path.join(HERE, 'netgate.py'), routes,
                                     self.gate_ctl],
                         os.path.join(self.dir, 'netgate.log'), env=self.env).start()
        end = time.time() + 20
        while time.time() < end and not port_open(self.nodes[0].zk_gates[0]):
            time.sleep(0.1)

    def cut(self, groups):
        """Drops every packet of these nodes' gates (an empty list heals)."""
        tmp = self.gate_ctl + '.new'
        with open(tmp, 'w') as f:
            f.write(''.join(g + '\n' for g in groups))
        os.rename(tmp, self.gate_ctl)
        time.sleep(0.3)     # netgate reads it every 100 ms

    # ---- HAProxy ----
    def haproxy_start(self):
        cfg = os.path.join(self.dir, 'haproxy.cfg')
        servers = ''.join(
            '    server %s 127.0.0.1:%d check port %d inter 500 fall 2 rise 1 '
            'on-marked-down shutdown-sessions\n' % (nd.name, nd.pg_pub, nd.health_pub)
            for nd in self.nodes)
        with open(cfg, 'w') as f:
            f.write("""global
    maxconn 200
    pidfile %s/haproxy.pid
defaults
    mode tcp
    timeout connect 3s
    timeout client 30m
    timeout server 30m
    timeout check 1s
listen stats
    mode http
    bind 127.0.0.1:%d
    stats enable
    stats uri /
listen primary
    bind 127.0.0.1:%d
    option httpchk GET /primary
    http-check expect status 200
    default-server on-marked-up shutdown-backup-sessions
%s""" % (self.dir, self.base + 301, self.haproxy_port, servers))
        self.haproxy = Proc('haproxy', [HAPROXY, '-f', cfg, '-db'],
                            os.path.join(self.dir, 'haproxy.log'), env=self.env).start()

    def haproxy_dsn(self):
        return ('host=127.0.0.1 port=%d dbname=postgres user=%s connect_timeout=3'
                % (self.haproxy_port, self.user))

    def multihost_dsn(self):
        return ('host=127.0.0.1,127.0.0.1,127.0.0.1 port=%s dbname=postgres user=%s '
                'connect_timeout=3 target_session_attrs=read-write'
                % (','.join(str(nd.pg_pub) for nd in self.nodes), self.user))

    # ---- the whole ----
    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        self.zk_configure()
        for i in (1, 2, 3):
            self.zk_start(i)
        if not self.zk_wait(90):
            raise RuntimeError('ZooKeeper did not start')
        log('ZooKeeper ensemble up at %s' % self.zk_connect())
        self.gate_start()
        for nd in self.nodes:
            nd.write_config()
        self.nodes[0].start_patroni()
        if not self.wait_leader(120):
            raise RuntimeError('no Patroni leader after 120 s (see %s/pg1/patroni.out)' % self.dir)
        for nd in self.nodes[1:]:
            nd.start_patroni()
        self.haproxy_start()
        # hasched acts only once the extension exists: the suite creates it
        if not self.wait_healthy(180, need_primary=False):
            raise RuntimeError('cluster not healthy after 180 s: %s' % self.describe())
        log('Patroni cluster up: %s' % self.describe())

    def stop(self):
        for nd in self.nodes:
            if nd.patroni:
                for pid in [nd.patroni.pid] + children_of(nd.patroni.pid):
                    try:
                        os.kill(pid, signal.SIGCONT)
                    except OSError:
                        pass
                nd.patroni.stop(timeout=30)
            pm = nd.postmaster_pid()
            if pm:
                subprocess.call([os.path.join(self.bindir, 'pg_ctl'), 'stop', '-D', nd.data,
                                 '-m', 'immediate', '-w', '-t', '20'],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if self.haproxy:
            self.haproxy.stop()
        for i in (1, 2, 3):
            if self.zk[i - 1]:
                self.zk[i - 1].stop(timeout=5)
                self.zk[i - 1] = None
                try:
                    os.unlink(os.path.join(self.dir, 'zk%d' % i, 'zookeeper.pid'))
                except OSError:
                    pass
        if self.gate:
            self.gate.stop(timeout=5)

    # ---- state ----
    def cluster(self):
        """Patroni's /cluster from any member that answers."""
        for nd in self.nodes:
            st, body = http_get(nd.rest_port, '/cluster', timeout=2)
            if st == 200:
                try:
                    return json.loads(body)
                except ValueError:
                    pass
        return None

    def leader(self):
        c = self.cluster()
        if not c:
            return None
        for m in c.get('members', []):
            if m.get('role') == 'leader' and m.get('state') == 'running':
                return self.node(m['name'])
        return None

    def node(self, name):
        for nd in self.nodes:
            if nd.name == name:
                return nd
        return None

    def describe(self):
        c = self.cluster()
        if not c:
            return 'no member answers'
        return ', '.join('%s %s %s tl%s lag%s' % (m['name'], m.get('role'), m.get('state'),
                                                   m.get('timeline'), m.get('lag', '-'))
                         for m in c.get('members', []))

    def wait_leader(self, secs):
        end = time.time() + secs
        while time.time() < end:
            nd = self.leader()
            if nd and nd.try_sql('SELECT 1') is not None:
                return nd
            time.sleep(0.5)
        return None

    def streaming(self, nd):
        r = nd.try_sql("SELECT status FROM pg_stat_wal_receiver")
        return bool(r) and r[0][0] == 'streaming'

    def healthy(self, need_primary=True):
        """Leader writable, a sync standby, every member running and
        streaming, hasched acting on the leader (/primary 200)."""
        c = self.cluster()
        if not c:
            return False
        ms = {m['name']: m for m in c.get('members', [])}
        if len(ms) != 3:
            return False
        roles = sorted(m.get('role') for m in ms.values())
        if roles != ['leader', 'replica', 'sync_standby']:
            return False
        if any(m.get('state') != 'running' for m in ms.values()):
            return False
        for nd in self.nodes:
            if ms[nd.name]['role'] == 'leader':
                if not need_primary:
                    continue
                st, _ = http_get(nd.health_port, '/primary', timeout=1)
                if st != 200:
                    return False
            elif not self.streaming(nd):
                return False
        return True

    def wait_healthy(self, secs, need_primary=True):
        end = time.time() + secs
        while time.time() < end:
            if self.healthy(need_primary):
                return True
            time.sleep(0.5)
        return False

    def stuck_replicas(self):
        """The same-timeline split brain of Patroni 3.0.2: a member Patroni
        calls a running replica whose WAL receiver does not stream."""
        out = []
        c = self.cluster()
        if not c:
            return out
        for m in c.get('members', []):
            if m.get('role') in ('replica', 'sync_standby') and m.get('state') == 'running':
                nd = self.node(m['name'])
                if nd and not self.streaming(nd):
                    out.append(nd)
        return out

    def patronictl(self, *args):
        return subprocess.run([PYTHON, PATRONICTL, '-c', self.nodes[0].config_path()]
                              + list(args), env=self.env, capture_output=True, text=True,
                              timeout=120)

    def hasched_pids(self):
        """{description: pid} of every hasched background process on the
        running nodes (scheduler, executors, coordinator, listener)."""
        out = {}
        for nd in self.nodes:
            pm = nd.postmaster_pid()
            if not pm:
                continue
            for pid in children_of(pm):
                try:
                    with open('/proc/%d/cmdline' % pid, 'rb') as f:
                        cmd = f.read().replace(b'\0', b' ').decode('utf-8', 'replace').strip()
                except OSError:
                    continue
                if ': hasched ' in cmd:      # not the backends of user hasched_test
                    out['%s %s' % (nd.name, cmd.replace('postgres: ', ''))] = pid
        return out


def rss_kb(pid):
    """(VmRSS, RssAnon) of pid in kB, or None. RssAnon is the process's
    own memory: VmRSS also counts the shared buffers it has touched, which
    grows towards shared_buffers for any backend and is no leak."""
    v = {}
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith(('VmRSS:', 'RssAnon:')):
                    v[line.split(':')[0]] = int(line.split()[1])
    except OSError:
        return None
    if 'VmRSS' not in v:
        return None
    return (v['VmRSS'], v.get('RssAnon', 0))


def rmtree(d):
    shutil.rmtree(d, ignore_errors=True)
