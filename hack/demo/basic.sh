#!/bin/bash
# ycloud basic demo (issue 2; `hack/demo.sh --basic`): a real OVN sandbox, pods in network
# namespaces, TCP through an OVN load balancer built by hand with ovn-nbctl (no ycloud binary).
# Prints a table (scenario, requests, successes, backends seen, verdict) and exits non-zero if
# any scenario fails. Everything it starts is torn down on exit, on failure and on Ctrl-C.
#
# Usage: hack/demo.sh --basic [--requests N] [--keep-logs]
#   --requests N   requests per VIP scenario (default 20)
#   --keep-logs    keep the sandbox's logs (the path is printed) instead of deleting them
set -u
set -o pipefail
HACK=$(dirname "$(dirname "$(readlink -f "$0")")")   # this file is hack/demo/basic.sh
SANDBOX=$HACK/ovn-sandbox.sh
N=20 KEEP=0
while [ $# -gt 0 ]; do
  case $1 in
    --requests) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || { echo "demo.sh --basic: --requests needs a positive number" >&2; exit 2; }; N=$2; shift 2 ;;
    --keep-logs) KEEP=1; shift ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh --basic: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "demo.sh --basic: must run as root (network namespaces, OVS)" >&2; exit 1; }

T0=$(date +%s.%N)
ts() { printf '[%6.2fs] %s\n' "$(echo "$(date +%s.%N) - $T0" | bc)" "$*"; }

DIR="" SERVER_PIDS=()
cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  # the HTTP servers are this script's children: kill exactly those pids
  for pid in "${SERVER_PIDS[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  if [ -n "$DIR" ]; then
    ts "tearing down the sandbox"
    if [ $KEEP = 1 ]; then "$SANDBOX" down --dir "$DIR" | sed 's/^/    /'
    else "$SANDBOX" down --dir "$DIR" --purge | sed 's/^/    /'; rm -rf "$DIR"; fi   # our own mktemp dir
  fi
  exit $rc
}
trap cleanup EXIT
trap 'echo "demo.sh --basic: interrupted" >&2; exit 130' INT TERM

ts "dependencies"
"$HACK/install-deps.sh" | sed 's/^/    /' || exit 1

ts "sandbox up"
DIR=$(mktemp -d /tmp/ycdemo.XXXXXX)
"$SANDBOX" up --dir "$DIR" | sed 's/^/    /' || { echo "demo.sh --basic: sandbox up failed" >&2; exit 1; }
eval "$("$SANDBOX" env --dir "$DIR")" || exit 1
NS=$YCLOUD_NODE_NETNS
nb() { ovn-nbctl --timeout=30 "$@"; }
pod() { "$SANDBOX" pod-add "$@" --dir "$DIR" | sed 's/^/    /'; }
inpod() { local p=$1; shift; ip netns exec "$NS-$p" "$@"; }

ts "topology: router vpc1 (10.0.1.1, 10.0.2.1), switches subnet1/subnet2; web1, web2 on subnet1, client on subnet2"
nb lr-add vpc1 \
  -- lrp-add vpc1 vpc1-subnet1 00:00:00:00:01:01 10.0.1.1/24 \
  -- lrp-add vpc1 vpc1-subnet2 00:00:00:00:02:01 10.0.2.1/24 || exit 1
for s in subnet1 subnet2; do
  nb ls-add $s -- lsp-add $s $s-vpc1 -- lsp-set-type $s-vpc1 router -- lsp-set-addresses $s-vpc1 router \
     -- lsp-set-options $s-vpc1 router-port=vpc1-$s || exit 1
done
pod web1 subnet1 0a:00:00:00:01:0b 10.0.1.11/24 10.0.1.1 || exit 1
pod web2 subnet1 0a:00:00:00:01:0c 10.0.1.12/24 10.0.1.1 || exit 1
pod client subnet2 0a:00:00:00:02:0a 10.0.2.10/24 10.0.2.1 || exit 1
nb --wait=hv sync || exit 1

ts "HTTP servers in web1/web2 on :8080 (reply: '<name> from=<client address seen>')"
for p in web1 web2; do
  # a simple command in the background: $! is the pid of `ip netns exec`, which execs python3 itself
  ip netns exec "$NS-$p" python3 -c '
import http.server, sys
name = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(s):
        b = ("%s from=%s\n" % (name, s.client_address[0])).encode()
        s.send_response(200); s.send_header("Content-Length", str(len(b))); s.end_headers(); s.wfile.write(b)
    def log_message(s, *a): pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()' $p >/dev/null 2>&1 &
  SERVER_PIDS+=($!)
done
for p in web1 web2; do
  for _ in $(seq 1 100); do inpod $p ss -Hltn 'sport = :8080' | grep -q . && break; sleep 0.05; done
done

ts "load balancer web: VIP 10.96.0.100:80 -> web1:8080, web2:8080 on subnet1 and subnet2"
nb lb-add web 10.96.0.100:80 10.0.1.11:8080,10.0.1.12:8080 tcp -- ls-lb-add subnet1 web -- ls-lb-add subnet2 web || exit 1
nb --wait=hv sync || exit 1

ROWS=() FAILED=0
# scenario NAME N URL EXPECTED-BACKENDS(space-separated)
scenario() {
  local name=$1 n=$2 url=$3 want=$4 i out ok=0 seen verdict
  local -A hit=()
  for ((i = 0; i < n; i++)); do
    if out=$(inpod client curl -sS --fail --noproxy '*' --max-time 2 "$url" 2>&1); then
      ok=$((ok + 1)); hit[${out%% *}]=1
    else
      echo "    $name: request $i failed: $out" >&2
    fi
  done
  seen=$(printf '%s\n' "${!hit[@]}" | sort | tr '\n' ' ' | sed 's/ $//')
  if [ $ok = "$n" ] && [ "$seen" = "$want" ]; then verdict=PASS; else verdict=FAIL; FAILED=1; fi
  ROWS+=("$(printf '%-44s %8s %9s  %-14s %s' "$name" "$n" "$ok" "${seen:--}" "$verdict")")
  ts "$name: $ok/$n ok, backends seen: ${seen:-none} -> $verdict"
}

ts "traffic"
scenario "pod -> pod direct (client -> web1:8080)" 5 http://10.0.1.11:8080/ "web1"
scenario "ClusterIP VIP, default dp_hash selection" "$N" http://10.96.0.100/ "web1 web2"
nb --wait=hv set Load_Balancer web selection_fields="ip_src,ip_dst,tp_src,tp_dst" || exit 1
scenario "ClusterIP VIP, selection_fields=5-tuple" "$N" http://10.96.0.100/ "web1 web2"
nb --wait=hv set Load_Balancer web vips:'"10.96.0.100:80"'='"10.0.1.12:8080"' || exit 1
scenario "ClusterIP VIP after removing web1" "$N" http://10.96.0.100/ "web2"

echo
printf '%-44s %8s %9s  %-14s %s\n' SCENARIO REQUESTS SUCCESSES "BACKENDS SEEN" VERDICT
printf '%s\n' "${ROWS[@]}"
echo
if [ $FAILED = 0 ]; then ts "demo PASSED"; else
  ts "demo FAILED: ovn-trace of a SYN client -> VIP:"
  ovn-trace --ct=new subnet2 'inport == "client" && eth.src == 0a:00:00:00:02:0a && eth.dst == 00:00:00:00:02:01 && ip4.src == 10.0.2.10 && ip4.dst == 10.96.0.100 && ip.ttl == 64 && tcp && tcp.src == 33333 && tcp.dst == 80 && tcp.flags == 2' | tail -n 30
  exit 1
fi
