#!/usr/bin/python3
# Copyright: hasched contributors
#
# netgate.py: loopback TCP forwarders that can drop a node off the network
# without root (the chaos suite's "primary cut off").
#
#   netgate.py ROUTES CUTFILE
#
# ROUTES has a line "LISTEN_PORT TARGET_PORT GROUP" per forwarder. Every
# 100 ms CUTFILE is read: the groups named there (one a line) are cut. A cut
# group's connections, existing and new, stop moving bytes in both
# directions (nothing is closed: as with packets dropped, the ends see only
# silence, and TCP timeouts decide); new connections are accepted and left
# waiting. When the group is healed, bytes move again and the waiting
# connections are forwarded.
#
# IDENTIFICATION
#	test/chaos/netgate.py

import os
import socket
import sys
import threading
import time

cut = set()
lock = threading.Lock()


def is_cut(group):
    with lock:
        return group in cut


def pump(src, dst, group):
    try:
        while True:
            while is_cut(group):
                time.sleep(0.05)
            src.settimeout(0.2)
            try:
                data = src.recv(65536)
            except socket.timeout:
                continue
            if not data:
                break
            while is_cut(group):
                time.sleep(0.05)
            dst.sendall(data)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            s.close()
        except OSError:
            pass


def handle(c, target, group):
    while is_cut(group):
        time.sleep(0.05)
    try:
        u = socket.create_connection(('127.0.0.1', target), timeout=5)
    except OSError:
        c.close()
        return
    u.settimeout(None)
    for s in (c, u):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threading.Thread(target=pump, args=(c, u, group), daemon=True).start()
    threading.Thread(target=pump, args=(u, c, group), daemon=True).start()


def listener(port, target, group):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(('127.0.0.1', port))
    ls.listen(128)
    while True:
        c, _ = ls.accept()
        threading.Thread(target=handle, args=(c, target, group), daemon=True).start()


def main():
    routes, cutfile = sys.argv[1], sys.argv[2]
    with open(routes) as f:
        for line in f:
            if not line.strip():
                continue
            lp, tp, g = line.split()
            threading.Thread(target=listener, args=(int(lp), int(tp), g), daemon=True).start()
    last = None
    while True:
        try:
            with open(cutfile) as f:
                groups = set(x.strip() for x in f if x.strip())
        except OSError:
            groups = set()
        if groups != last:
            with lock:
                cut.clear()
                cut.update(groups)
            sys.stdout.write('%s cut: %s\n' % (time.strftime('%H:%M:%S'),
                                               ' '.join(sorted(groups)) or '(none)'))
            sys.stdout.flush()
            last = groups
        time.sleep(0.1)


if __name__ == '__main__':
    try:
        main()
    except KeyboardInterrupt:
        os._exit(0)
