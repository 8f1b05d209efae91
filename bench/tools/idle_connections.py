#!/usr/bin/env python3
"""Opens N client connections to a Kafka-API broker, sends ApiVersions (v3, as librdkafka and the
Java client do first) on each so they look like real clients, then holds them idle (issue 21).

    idle_connections.py --bootstrap 127.0.0.1:9092 --count 10000 [--sources 4] [--pid BROKER_PID]
                        [--hold-seconds S | --ready-file F]

Prints one JSON line when all are open (opened, answered, seconds, broker RSS if --pid), then
holds them until --hold-seconds pass or SIGTERM/SIGINT, and prints a last JSON line with how
many were still open (closed by the broker: idle expiry, limits) and the broker's RSS.
--sources spreads the connections over 127.0.0.1..127.0.0.N as source addresses (per-IP limits,
and 28k ephemeral ports per source address). The client's own soft RLIMIT_NOFILE is raised to
its hard limit first. --ready-file is created once every connection is open (for scripts).
"""

import argparse
import json
import resource
import select
import signal
import socket
import struct
import sys
import time

API_VERSIONS = 18
IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h; not in Python's socket module
# Connections opened at once before their answers are read: stays under the listen backlog.
BATCH = 200


def api_versions_v3(correlation_id):
    client_id = b"idle-connections"
    header = struct.pack(">hhih", API_VERSIONS, 3, correlation_id, len(client_id)) + client_id + b"\x00"
    name, version = b"idle-connections", b"1.0"
    body = bytes([len(name) + 1]) + name + bytes([len(version) + 1]) + version + b"\x00"
    request = header + body
    return struct.pack(">i", len(request)) + request


def read_response(sock, deadline):
    """Reads one size-prefixed response; False if the broker closed or did not answer in time."""
    data = b""
    need = 4
    size = None
    while len(data) < need:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except OSError:
            return False
        if not chunk:
            return False
        data += chunk
        if size is None and len(data) >= 4:
            size = struct.unpack(">i", data[:4])[0]
            need = 4 + size
    return True


def rss_kib(pid):
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def still_open(sock):
    """An idle connection the broker closed reads as end of stream (or a reset)."""
    try:
        poller = select.poll()  # select() cannot take descriptors over 1023
        poller.register(sock, select.POLLIN)
        if not poller.poll(0):
            return True
        return sock.recv(1, socket.MSG_PEEK) != b""
    except OSError:
        return False


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--sources", type=int, default=1, help="source addresses 127.0.0.1..N")
    parser.add_argument("--pid", type=int, default=0, help="the broker's pid, for its RSS")
    parser.add_argument("--hold-seconds", type=float, default=0, help="0: until SIGTERM/SIGINT")
    parser.add_argument("--ready-file", default="")
    parser.add_argument("--answer-timeout-s", type=float, default=30)
    args = parser.parse_args()
    host, port = args.bootstrap.rsplit(":", 1)
    port = int(port)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.count + 64 > hard:
        sys.exit(f"--count {args.count} needs more descriptors than the hard limit {hard}")

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    rss_before = rss_kib(args.pid)
    started = time.monotonic()
    sockets, answered, failed = [], 0, 0
    while len(sockets) + failed < args.count and not stop:
        batch = []
        for i in range(min(BATCH, args.count - len(sockets) - failed)):
            n = len(sockets) + failed + len(batch)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                if args.sources > 1:
                    # The port is chosen at connect, per destination: 10,000 binds to port 0
                    # would each need a port free for every destination (EADDRINUSE on a busy host).
                    sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                    sock.bind((f"127.0.0.{1 + n % args.sources}", 0))
                sock.connect((host, port))
                sock.sendall(api_versions_v3(n))
                batch.append(sock)
            except OSError:
                sock.close()
                failed += 1
        deadline = time.monotonic() + args.answer_timeout_s
        for sock in batch:
            if read_response(sock, deadline):
                answered += 1
            sock.setblocking(True)
            sockets.append(sock)
    opened_s = time.monotonic() - started
    time.sleep(1)  # let the broker settle before its RSS is read
    report = {
        "event": "open",
        "opened": len(sockets),
        "answered": answered,
        "connect_failed": failed,
        "seconds": round(opened_s, 2),
        "broker_rss_kib_before": rss_before,
        "broker_rss_kib": rss_kib(args.pid),
    }
    print(json.dumps(report), flush=True)
    if args.ready_file:
        open(args.ready_file, "w").write(json.dumps(report))

    hold_until = time.monotonic() + args.hold_seconds if args.hold_seconds > 0 else float("inf")
    while not stop and time.monotonic() < hold_until:
        time.sleep(0.2)
    alive = sum(1 for sock in sockets if still_open(sock))
    print(json.dumps({"event": "end", "still_open": alive, "of": len(sockets), "broker_rss_kib": rss_kib(args.pid)}), flush=True)
    for sock in sockets:
        sock.close()


if __name__ == "__main__":
    main()
