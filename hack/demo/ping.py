#!/usr/bin/env python3
"""One ICMP echo (raw socket: `ping` is not installed everywhere). Exit 0 on a reply.

Usage: ping.py DST [TIMEOUT_SECONDS]   (run inside a network namespace)
"""
import os
import socket
import struct
import sys
import time

dst = sys.argv[1]
timeout = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


ident = os.getpid() & 0xFFFF
payload = b"ycloud-demo"
hdr = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
pkt = struct.pack("!BBHHH", 8, 0, csum(hdr + payload), ident, 1) + payload
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(timeout)
t0 = time.time()
s.sendto(pkt, (dst, 0))
while True:
    try:
        data, addr = s.recvfrom(2048)
    except socket.timeout:
        sys.exit("no echo reply from %s within %.1fs" % (dst, timeout))
    ihl = (data[0] & 0xF) * 4
    t, c, _, i, seq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
    if addr[0] == dst and t == 0 and i == ident:
        print("reply from %s in %.1f ms" % (dst, (time.time() - t0) * 1000))
        break
