#!/usr/bin/env python3
"""Times produce requests to their responses as they cross loopback, per connection (root).

    chrt -i 0 taskset -c 1 python3 bench/tools/produce_wire_latency.py PORT SECONDS

A diagnostic for tail latency: the bench's end-to-end figures include the clients' own
scheduling; this sees only the broker's share. A packet socket on `lo` takes the kernel's
timestamp of each outgoing segment to or from PORT, reads the Kafka request header (API key 0,
correlation id) and pairs it with the response carrying the same correlation id on the same
connection. It assumes each request starts a segment, which holds on loopback (64 KiB MTU) for
produce requests of the bench's size. Run it at SCHED_IDLE so it perturbs little; packets wait
in its receive buffer and keep their kernel timestamps.
"""
import socket
import struct
import sys
import time

SO_TIMESTAMPNS = 35
PACKET_OUTGOING = 4
ETH_P_ALL = 0x0003


def main():
    port, seconds = int(sys.argv[1]), float(sys.argv[2])
    capture = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(ETH_P_ALL))
    capture.bind(("lo", 0))
    capture.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    capture.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
    capture.settimeout(0.5)
    pending, latencies_ms = {}, []
    end = time.time() + seconds
    while time.time() < end:
        try:
            data, ancillary, _, address = capture.recvmsg(200, 256)
        except socket.timeout:
            continue
        if address[2] != PACKET_OUTGOING:  # loopback shows each packet twice
            continue
        stamp = next((sum(x * y for x, y in zip(struct.unpack("qq", d[:16]), (1, 1e-9))) for _, kind, d in ancillary if kind == SO_TIMESTAMPNS), None)
        ip = 14
        if stamp is None or len(data) < ip + 20 or data[ip] >> 4 != 4 or data[ip + 9] != 6:
            continue
        tcp = ip + (data[ip] & 15) * 4
        source, destination = struct.unpack(">HH", data[tcp:tcp + 4])
        payload = data[tcp + (data[tcp + 12] >> 4) * 4:]
        if destination == port and len(payload) >= 12:
            size, api_key, _, correlation = struct.unpack(">ihhi", payload[:12])
            if api_key == 0 and size > 0:
                pending[(source, correlation)] = stamp
        elif source == port and len(payload) >= 8:
            _, correlation = struct.unpack(">ii", payload[:8])
            sent = pending.pop((destination, correlation), None)
            if sent is not None:
                latencies_ms.append((stamp - sent) * 1000)
    latencies_ms.sort()
    n = len(latencies_ms)
    if not n:
        print("no produce request was answered")
        return
    at = lambda q: latencies_ms[min(n - 1, int(q * n))]
    print(f"produce request -> response on the wire: n={n} p50={at(.5):.3f} p99={at(.99):.3f} "
          f"p99.9={at(.999):.3f} max={latencies_ms[-1]:.3f} ms")


if __name__ == "__main__":
    main()
