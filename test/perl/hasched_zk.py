#!/usr/bin/python3
# Copyright: hasched contributors
#
# hasched_zk.py: a small ZooKeeper client for the TAP tests (kazoo, from
# Debian's python3-kazoo), used through HaschedZooKeeper.pm.
#
#   hasched_zk.py HOSTS wait SECONDS          connect within SECONDS
#   hasched_zk.py HOSTS hold PATH TIMEOUT_MS  create the ephemeral PATH (its
#                                             parents too), print "held", and
#                                             keep the session until killed
#                                             (SIGTERM: close it cleanly)
#   hasched_zk.py HOSTS create PATH DATA [readonly]
#                                             a persistent PATH holding DATA;
#                                             readonly: ACL world:anyone:r
#   hasched_zk.py HOSTS get PATH              print PATH's data
#   hasched_zk.py HOSTS ls PATH               print PATH's children, a line each
#   hasched_zk.py HOSTS delete PATH           delete PATH and all under it
#
# IDENTIFICATION
#	test/perl/hasched_zk.py

import signal
import sys
import time

from kazoo.client import KazooClient
from kazoo.security import make_acl


def main():
    hosts, cmd, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    if cmd == "wait":
        zk = KazooClient(hosts=hosts, timeout=2.0)
        zk.start(timeout=float(args[0]))
        zk.stop()
        return 0
    if cmd == "hold":
        path, timeout_ms = args[0], int(args[1])
        zk = KazooClient(hosts=hosts, timeout=timeout_ms / 1000.0)
        zk.start(timeout=30)

        def closing(signum, frame):
            zk.stop()
            zk.close()
            sys.exit(0)

        signal.signal(signal.SIGTERM, closing)
        zk.create(path, b"", ephemeral=True, makepath=True)
        print("held 0x%016x" % zk.client_id[0], flush=True)
        while True:
            time.sleep(3600)
    zk = KazooClient(hosts=hosts, timeout=5.0)
    zk.start(timeout=30)
    try:
        if cmd == "create":
            acl = [make_acl("world", "anyone", read=True)] \
                if len(args) > 2 and args[2] == "readonly" else None
            zk.create(args[0], args[1].encode(), acl=acl, makepath=True)
        elif cmd == "get":
            data, _ = zk.get(args[0])
            print(data.decode())
        elif cmd == "ls":
            for c in sorted(zk.get_children(args[0])):
                print(c)
        elif cmd == "delete":
            zk.delete(args[0], recursive=True)
        else:
            print("unknown command " + cmd, file=sys.stderr)
            return 2
    finally:
        zk.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
