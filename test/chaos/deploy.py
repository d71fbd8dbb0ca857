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
#   RabbitMQ node i (1..3)   AMQP B+500+i, Erlang distribution B+510+i;
#                            their own epmd B+520 (no system epmd shared)
#
# The RabbitMQ cluster (Deployment(rabbit=True); `make chaos` and `make
# soak`, not the CI smoke): three rabbitmq-server nodes rabbit1..3@localhost
# joined into one cluster, each with its own mnesia, log and configuration
# directories, one .erlang.cookie in the deployment's HOME for RabbitMQ,
# started in parallel; the dispatcher's quorum queues get a member on every
# node (they are declared once the cluster is formed).
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
RABBIT_SBIN = '/usr/lib/rabbitmq/bin'
EPMD = '/usr/bin/epmd'
SCOPE = 'chaos'
NAMESPACE = '/service'

# Patroni and hasched timings (the issue's: ttl 10, loop_wait 1)
TTL = 10
LOOP_WAIT = 1
RETRY_TIMEOUT = 4
HS_ZK_SESSION_MS = 6000
HS_ZK_MARGIN_MS = 2000
# a broker's circuit, once open, lets a probe through after this (the
# default 60 s is the wait after all brokers are back, at worst)
RABBIT_CIRCUIT_OPEN = os.environ.get('CHAOS_CIRCUIT_OPEN', '10s')


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
        if dep.rabbit:
            # the dispatcher: every broker, tried in order; a job whose
            # message no worker started within the dispatch lease is
            # published again (a message lost with the brokers)
            conf['postgresql']['parameters'].update({
                'hasched.amqp_url': ','.join(r.url() for r in dep.rabbits),
                'hasched.dispatch_lease': '60s',
                'hasched.circuit_open_duration': RABBIT_CIRCUIT_OPEN,
            })
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


class Rabbit:
    """One RabbitMQ node of the cluster (Debian's rabbitmq-server 3.10)."""

    def __init__(self, dep, i):
        b = dep.base
        self.dep = dep
        self.i = i
        self.name = 'rabbit%d' % i
        self.node = 'rabbit%d@localhost' % i
        self.dir = os.path.join(dep.dir, 'rmq%d' % i)
        self.port = b + 500 + i
        self.dist_port = b + 510 + i
        self.proc = None

    def url(self):
        return 'amqp://guest:guest@127.0.0.1:%d' % self.port

    def configure(self):
        d = self.dir
        for sub in ('etc', 'mnesia', 'log'):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        with open(os.path.join(d, 'etc', 'rabbitmq.conf'), 'w') as f:
            f.write('listeners.tcp.1 = 127.0.0.1:%d\n'
                    'loopback_users = none\n'
                    'log.console = false\n'
                    'log.file.level = info\n'
                    'disk_free_limit.absolute = 1MB\n'
                    'vm_memory_high_watermark.relative = 0.3\n'
                    # a node that comes back waits for its peers this long
                    # (10 x 30 s by default) before it gives up
                    'mnesia_table_loading_retry_timeout = 10000\n'
                    'mnesia_table_loading_retry_limit = 30\n' % self.port)
        with open(os.path.join(d, 'etc', 'rabbitmq-env.conf'), 'w') as f:
            f.write('# hasched chaos broker %s\n' % self.name)
        with open(os.path.join(d, 'etc', 'enabled_plugins'), 'w') as f:
            f.write('[].\n')
        with open(os.path.join(d, 'etc', 'advanced.config'), 'w') as f:
            f.write('[].\n')

    def env(self):
        d = self.dir
        e = dict(self.dep.env)
        e.update({
            'HOME': self.dep.rabbit_home,
            'RABBITMQ_CONF_ENV_FILE': os.path.join(d, 'etc', 'rabbitmq-env.conf'),
            'RABBITMQ_CONFIG_FILE': os.path.join(d, 'etc', 'rabbitmq.conf'),
            'RABBITMQ_ADVANCED_CONFIG_FILE': os.path.join(d, 'etc', 'advanced.config'),
            'RABBITMQ_ENABLED_PLUGINS_FILE': os.path.join(d, 'etc', 'enabled_plugins'),
            'RABBITMQ_MNESIA_BASE': os.path.join(d, 'mnesia'),
            'RABBITMQ_LOG_BASE': os.path.join(d, 'log'),
            'RABBITMQ_PID_FILE': os.path.join(d, 'mnesia', 'beam.pid'),
            'RABBITMQ_NODENAME': self.node,
            'RABBITMQ_NODE_IP_ADDRESS': '127.0.0.1',
            'RABBITMQ_NODE_PORT': str(self.port),
            'RABBITMQ_DIST_PORT': str(self.dist_port),
            # no busy-waiting schedulers: 3 nodes share 2 cores with the rest
            'RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS':
                '-kernel inet_dist_use_interface {127,0,0,1} '
                '+sbwt none +sbwtdcpu none +sbwtdio none',
            'ERL_EPMD_PORT': str(self.dep.epmd_port),
            'ERL_EPMD_ADDRESS': '127.0.0.1',
        })
        return e

    def start(self):
        """Starts the node (returns at once; wait_ready() waits)."""
        self.proc = Proc(self.name, [os.path.join(RABBIT_SBIN, 'rabbitmq-server')],
                         os.path.join(self.dir, 'server.out'), env=self.env()).start()
        return self.proc

    def beam_pid(self):
        """The beam.smp process in the node's process group (0: none)."""
        if not self.proc:
            return 0
        for pid in [self.proc.pid] + children_of(self.proc.pid):
            try:
                with open('/proc/%d/comm' % pid) as f:
                    if f.read().strip() == 'beam.smp':
                        return pid
            except OSError:
                pass
        return 0

    def write_pidfile(self):
        # scripts/lib.sh stops leftovers by this file
        pid = self.beam_pid()
        if pid:
            with open(os.path.join(self.dir, 'rabbitmq.pid'), 'w') as f:
                f.write('%d\n' % pid)

    def accepts_amqp(self):
        """True when the port answers the AMQP 0-9-1 header with a method
        frame (connection.start)."""
        try:
            with socket.create_connection(('127.0.0.1', self.port), timeout=2) as s:
                s.settimeout(3)
                s.sendall(b'AMQP\x00\x00\x09\x01')
                buf = s.recv(7)
                return len(buf) == 7 and buf[0] == 1
        except OSError:
            return False

    def wait_ready(self, secs):
        end = time.time() + secs
        while time.time() < end:
            if self.accepts_amqp():
                self.write_pidfile()
                return True
            if self.proc and not self.proc.alive():
                return False
            time.sleep(0.3)
        return False

    def alive(self):
        return self.proc is not None and self.proc.alive()

    def kill(self):
        """SIGKILL to the node's process group (the script, beam.smp and
        its helpers); the shared epmd stays, as on a real host."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        self.proc.p.wait()
        self.proc = None
        try:
            os.unlink(os.path.join(self.dir, 'rabbitmq.pid'))
        except OSError:
            pass

    def stop(self):
        if self.proc is None:
            return
        self.proc.stop(timeout=20)
        self.kill()

    def ctl(self, *args, timeout=120):
        return subprocess.run([os.path.join(RABBIT_SBIN, 'rabbitmqctl'), '-n', self.node, '-q']
                              + list(args), env=self.env(), capture_output=True, text=True,
                              timeout=timeout)


class Deployment:
    def __init__(self, workdir, base, bindir, user, log_prefix='', rabbit=False):
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
        self.rabbit = rabbit
        self.rabbits = [Rabbit(self, i) for i in (1, 2, 3)] if rabbit else []
        self.rabbit_home = os.path.join(workdir, 'rabbit-home')
        self.epmd_port = base + 520
        self.epmd = None

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

    # ---- RabbitMQ ----
    def rabbit_urls(self, first=1):
        """The brokers' URLs, comma-separated, from node first on."""
        rs = self.rabbits[first - 1:] + self.rabbits[:first - 1]
        return ','.join(r.url() for r in rs)

    def start_rabbitmq(self):
        """Starts the private epmd and the three nodes in parallel (returns
        at once; rabbit_cluster() waits and joins them)."""
        os.makedirs(self.rabbit_home, exist_ok=True)
        cookie = os.path.join(self.rabbit_home, '.erlang.cookie')
        if not os.path.exists(cookie):
            fd = os.open(cookie, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            os.write(fd, ('HASCHEDCHAOS%d%d' % (self.base, os.getpid())).encode())
            os.close(fd)
        env = dict(self.env)
        env['HOME'] = self.rabbit_home
        self.epmd = Proc('epmd', [EPMD, '-port', str(self.epmd_port), '-address', '127.0.0.1'],
                         os.path.join(self.dir, 'epmd.out'), env=env).start()
        with open(os.path.join(self.dir, 'epmd.pid'), 'w') as f:
            f.write('%d\n' % self.epmd.pid)
        end = time.time() + 10
        while time.time() < end and not port_open(self.epmd_port):
            time.sleep(0.05)
        for r in self.rabbits:
            r.configure()
            r.start()

    def rabbit_cluster(self, secs=180):
        """Waits for the three nodes, joins rabbit2 and rabbit3 to rabbit1,
        checks the cluster has three running nodes."""
        t0 = time.time()
        for r in self.rabbits:
            if not r.wait_ready(max(5, secs - (time.time() - t0))):
                raise RuntimeError('RabbitMQ %s did not start (see %s/server.out, log/)'
                                   % (r.node, r.dir))
        log('RabbitMQ nodes up in %.0f s' % (time.time() - t0))
        for r in self.rabbits[1:]:
            for args in (('stop_app',), ('join_cluster', self.rabbits[0].node), ('start_app',)):
                c = r.ctl(*args)
                if c.returncode != 0:
                    raise RuntimeError('rabbitmqctl -n %s %s: %s %s'
                                       % (r.node, ' '.join(args), c.stdout, c.stderr))
        for r in self.rabbits:
            if not r.wait_ready(60):
                raise RuntimeError('RabbitMQ %s did not come back after join_cluster' % r.node)
        running = self.rabbit_running()
        if len(running) != 3:
            raise RuntimeError('RabbitMQ cluster has %s running' % running)
        log('RabbitMQ cluster of %s formed in %.0f s' % (', '.join(running), time.time() - t0))

    def rabbit_running(self):
        """The running nodes of the cluster, as a node that answers sees it."""
        for r in self.rabbits:
            if not r.alive():
                continue
            c = r.ctl('cluster_status', '--formatter', 'json', timeout=60)
            if c.returncode == 0:
                try:
                    return sorted(json.loads(c.stdout).get('running_nodes', []))
                except ValueError:
                    pass
        return []

    def rabbit_wait(self, secs=120):
        """Every node accepts AMQP and the cluster has 3 running nodes."""
        end = time.time() + secs
        for r in self.rabbits:
            if not r.wait_ready(max(1, end - time.time())):
                return False
        while time.time() < end:
            if len(self.rabbit_running()) == 3:
                return True
            time.sleep(1)
        return False

    def stop_rabbitmq(self):
        for r in self.rabbits:
            r.stop()
        if self.epmd:
            self.epmd.kill()
            self.epmd = None
            try:
                os.unlink(os.path.join(self.dir, 'epmd.pid'))
            except OSError:
                pass

    # ---- the whole ----
    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        if self.rabbit:
            # slow to start on 2 cores: meanwhile ZooKeeper and Patroni
            self.start_rabbitmq()
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
        if self.rabbit:
            self.rabbit_cluster()

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
        self.stop_rabbitmq()

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
