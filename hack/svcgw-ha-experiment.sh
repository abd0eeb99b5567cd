#!/bin/bash
# Reproduces the service-gateway HA experiment of docs/compiler.md ("The service gateway:
# still pinned on OVN 23.03") on a 3-node sandbox, by hand with ovn-nbctl (not ycloud's rows):
#
#   svcgw: a distributed router, one distributed gateway port on one shared transit switch;
#   each VPC uplink a distributed gateway port on it with the same priorities (node 1: 20,
#   node 2: 10); the cross-VPC LB on svcgw (DNAT only); SNAT at the client VPC's uplink.
#
# Then: cross-VPC requests from clients on nodes 2 and 3 to backends on nodes 2 and 3; kill -9
# of node 1's ovs-vswitchd with 100 ms x 3 BFD and the outage seen by 10 ms probes; and the
# northd warning when a VPC router with an LB gets a second distributed gateway port (why the
# shape is not built: a VPC with EIPs already has one). Everything is removed on exit.
#
# Usage: hack/svcgw-ha-experiment.sh      (root; OVN 23.03 / OVS 3.1 userspace datapath)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
sandbox="$root/hack/ovn-sandbox.sh"
work="$(mktemp -d /tmp/svcgw-ha.XXXXXX)"
dir="$work/sb"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  "$sandbox" down --dir "$dir" --purge >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

"$sandbox" up --dir "$dir" --nodes 3 >/dev/null
eval "$("$sandbox" env --dir "$dir")"
n1=$YCLOUD_NODE1_CHASSIS n2=$YCLOUD_NODE2_CHASSIS ns=$YCLOUD_POD_NETNS_PREFIX
nb() { ovn-nbctl "$@"; }
link() { # switch router-port
  nb lsp-add "$1" "$1-$2" -- lsp-set-type "$1-$2" router -- lsp-set-addresses "$1-$2" router \
    -- lsp-set-options "$1-$2" router-port="$2"
}
nb ls-add sa -- lr-add lra -- lrp-add lra lra-sa 0a:00:00:00:01:01 10.0.1.1/24
nb ls-add sb -- lr-add lrb -- lrp-add lrb lrb-sb 0a:00:00:00:02:01 10.1.1.1/24
link sa lra-sa; link sb lrb-sb
nb ls-add ts -- lr-add svcgw
nb lrp-add svcgw svcgw-ts 0a:00:00:66:00:02 100.66.0.2/29 100.66.0.10/29
nb lrp-add lra lra-ts 0a:00:00:66:00:01 100.66.0.1/29
nb lrp-add lrb lrb-ts 0a:00:00:66:00:09 100.66.0.9/29
for p in svcgw-ts lra-ts lrb-ts; do
  link ts "$p"
  nb lrp-set-gateway-chassis "$p" "$n1" 20 -- lrp-set-gateway-chassis "$p" "$n2" 10
done
nb lr-route-add svcgw 10.0.1.0/24 100.66.0.1 -- lr-route-add svcgw 10.1.1.0/24 100.66.0.9
nb lr-route-add lrb 10.96.0.100/32 100.66.0.10 -- lr-route-add lra 100.66.0.8/29 100.66.0.2
nb lr-nat-add lrb snat 100.66.0.9 10.1.1.0/24
nb lb-add xvpc 10.96.0.100:80 10.0.1.11:8080,10.0.1.12:8080 tcp -- lr-lb-add svcgw xvpc
"$sandbox" pod-add web-1 sa 0a:00:00:00:01:0b 10.0.1.11/24 10.0.1.1 --node 2 --dir "$dir" >/dev/null
"$sandbox" pod-add web-2 sa 0a:00:00:00:01:0c 10.0.1.12/24 10.0.1.1 --node 3 --dir "$dir" >/dev/null
"$sandbox" pod-add client-3 sb 0a:00:00:00:02:0d 10.1.1.13/24 10.1.1.1 --node 3 --dir "$dir" >/dev/null
"$sandbox" pod-add client-2 sb 0a:00:00:00:02:0e 10.1.1.14/24 10.1.1.1 --node 2 --dir "$dir" >/dev/null

cat >"$work/srv.py" <<'EOF'
import socket, sys, threading
name = sys.argv[1]
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(64)
def h(c, a):
    try:
        c.recv(1000); b = ("%s from=%s\n" % (name, a[0])).encode()
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(b) + b)
    finally:
        c.close()
while True:
    c, a = s.accept(); threading.Thread(target=h, args=(c, a), daemon=True).start()
EOF
cat >"$work/probe.py" <<'EOF'
import socket, sys, time
end = time.time() + float(sys.argv[1])
while time.time() < end:
    t0 = time.time(); ok = 0
    try:
        s = socket.create_connection(("10.96.0.100", 80), timeout=0.2); s.settimeout(0.2)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n"); ok = 1 if s.recv(100) else 0; s.close()
    except Exception:
        pass
    print("%.3f %d" % (t0, ok), flush=True)
    time.sleep(max(0, 0.01 - (time.time() - t0)))
EOF
for n in web-1 web-2; do
  ip netns exec "$ns$n" python3 "$work/srv.py" "$n" >/dev/null 2>&1 &
  pids+=($!)
done
nb set NB_Global . options:bfd-min-rx=100 options:bfd-min-tx=100 options:bfd-mult=3
nb --wait=hv sync
sleep 2

echo "== cross-VPC requests (backends answer with the source they saw)"
for c in client-2 client-3; do
  for _ in 1 2 3; do
    echo "$c: $(ip netns exec "$ns$c" curl -s -m 2 http://10.96.0.100/ || echo FAILED)"
  done
done

echo "== kill -9 of node 1's ovs-vswitchd (the active gateway), 100 ms x 3 BFD"
for c in client-2 client-3; do
  ip netns exec "$ns$c" python3 "$work/probe.py" 6 >"$work/$c.txt" &
  pids+=($!)
done
sleep 2
at=$(date +%s.%N)
kill -9 "$(cat "$YCLOUD_NODE1_RUNDIR/ovs-vswitchd.pid")"
wait "${pids[@]: -2}" || true
for c in client-2 client-3; do
  awk -v at="$at" -v c="$c" '
    { t[NR] = $1; ok[NR] = $2 }
    END { for (i = 1; i <= NR; i++) if (t[i] >= at && !ok[i]) { f++; last = i }
          printf "%s: %d failed requests, outage %.2f s\n", c, f, last ? t[last + 1] - at : 0 }
  ' "$work/$c.txt"
done
cr=$(ovn-sbctl --bare --columns=chassis find Port_Binding logical_port=cr-svcgw-ts)
echo "svcgw now on: $(ovn-sbctl --bare --columns=name list Chassis "$cr")"

echo "== a second distributed gateway port on a router with a load balancer"
nb ls-add ets -- lrp-add lra lra-eip 0a:00:00:65:00:02 100.65.0.2/24
link ets lra-eip
nb lrp-set-gateway-chassis lra-eip "$n2" 20
nb lb-add eiplb 200.0.0.100:80 10.0.1.11:8080 tcp -- lr-lb-add lra eiplb
nb --wait=sb sync
grep "distributed gateway ports" "$YCLOUD_SANDBOX_LOG/northd.log" | tail -n 1 | sed 's/^.*|WARN|/northd: /'
ovn-sbctl lflow-list lra | grep "lr_in_dnat.*200.0.0.100" | sed 's/^ *//'
