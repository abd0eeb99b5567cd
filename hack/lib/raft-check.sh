#!/usr/bin/env bash
# Runs the chart's OVN central start-up script (templates/ovn.yaml, ConfigMap key ovsdb.sh,
# taken from a rendering) for the NB database as three RAFT members on this machine, the way
# the StatefulSet pods run it, and checks that:
#   - the member on the first address creates the cluster and the others join it;
#   - a write through the cluster is readable on every member;
#   - the bootstrap member, stopped and started again on its kept database, comes back as a
#     member of the same 3-server cluster with the data (no second bootstrap).
#
#   hack/lib/raft-check.sh RENDERED.yaml     (a rendering with ovn.deploy: true)
#
# Members listen on three random 127.x.y.z addresses (the script uses OVN's fixed ports
# 6641/6643, so distinct addresses keep parallel runs apart); every directory is a temp
# dir; every process is stopped by its process group id on exit, also on failure.
set -euo pipefail
rendered="$1"
py="${PYTHON:-python3}"
if ! command -v ovsdb-server >/dev/null || [ ! -x /usr/share/ovn/scripts/ovn-ctl ]; then
  echo "raft-check: needs ovn-central (ovsdb-server, /usr/share/ovn/scripts/ovn-ctl); run hack/install-deps.sh" >&2; exit 1
fi

work="$(mktemp -d)"
pgids=()
cleanup() {
  local p
  for p in "${pgids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=0
    for p in "${pgids[@]}"; do if pgrep -g "$p" >/dev/null; then alive=1; fi; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${pgids[@]}"; do kill -KILL -- "-$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

net="127.$((RANDOM % 200 + 20)).$((RANDOM % 250 + 1))"
ips=("$net.11" "$net.12" "$net.13")
# The script as rendered, with the rendering's first member address replaced by ours.
"$py" - "$rendered" "${ips[0]}" >"$work/ovsdb.sh" <<'PYEOF'
import sys, yaml
rendered, first = sys.argv[1], sys.argv[2]
for d in yaml.safe_load_all(open(rendered)):
    if d and d["kind"] == "ConfigMap" and "ovsdb.sh" in (d.get("data") or {}):
        sts = [x for x in yaml.safe_load_all(open(rendered)) if x and x["kind"] == "StatefulSet"][0]
        env = {e["name"]: e.get("value") for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
        ips = env["OVN_CENTRAL_IPS"].split()
        print(d["data"]["ovsdb.sh"].replace(f'"{ips[0]}"', f'"{first}"').replace(f"={ips[0]}", f"={first}"))
        break
else:
    sys.exit(f"{rendered}: no ConfigMap with ovsdb.sh (render with ovn.deploy: true)")
PYEOF
grep -q "${ips[0]}" "$work/ovsdb.sh" || { echo "raft-check: could not point the script at ${ips[0]}" >&2; exit 1; }

start() { # $1 = member index, $2 = log name
  local d="$work/m$1"
  mkdir -p "$d/run" "$d/log" "$d/db" "$d/etc"
  ( export HOST_IP="${ips[$1]}" OVN_CENTRAL_IPS="${ips[*]}" OVN_RUNDIR="$d/run" \
           OVN_LOGDIR="$d/log" OVN_DBDIR="$d/db" OVN_SYSCONFDIR="$d/etc"
    exec setsid sh "$work/ovsdb.sh" nb >"$d/$2" 2>&1 ) &
  pgids+=("$!")
  echo "$!" >"$d/pgid"
}
status() { ovn-appctl -t "$work/m$1/run/ovnnb_db.ctl" cluster/status OVN_Northbound 2>/dev/null; }
wait_member() { # $1 = index: a cluster member that sees 3 servers
  for _ in $(seq 100); do
    if status "$1" | grep -q '^Status: cluster member' && [ "$(status "$1" | grep -c ' at tcp:')" = 3 ]; then return 0; fi
    sleep 0.2
  done
  echo "raft-check: member ${ips[$1]} did not join a 3-server cluster:"; status "$1" || true
  tail -n 20 "$work/m$1"/out* "$work/m$1"/log/*.log 2>/dev/null || true
  return 1
}

for i in 0 1 2; do start "$i" out; done
for i in 0 1 2; do wait_member "$i"; done
echo "ok   3 RAFT members formed one cluster (bootstrap ${ips[0]}, joined ${ips[1]}, ${ips[2]})"

remotes="tcp:${ips[0]}:6641,tcp:${ips[1]}:6641,tcp:${ips[2]}:6641"
ovn-nbctl --db="$remotes" --timeout=10 ls-add raft-check-switch
for i in 0 1 2; do
  for _ in $(seq 50); do
    ovn-nbctl --db="tcp:${ips[$i]}:6641" --no-leader-only --timeout=5 ls-list | grep -q raft-check-switch && break
    sleep 0.1
  done
  ovn-nbctl --db="tcp:${ips[$i]}:6641" --no-leader-only --timeout=5 ls-list | grep -q raft-check-switch \
    || { echo "raft-check: ${ips[$i]} does not have the switch written through the cluster"; exit 1; }
done
echo "ok   a write through the cluster is on every member"

# Restart the bootstrap member on its kept database.
p="$(cat "$work/m0/pgid")"
kill -TERM -- "-$p"
for _ in $(seq 50); do pgrep -g "$p" >/dev/null || break; sleep 0.1; done
kill -KILL -- "-$p" 2>/dev/null || true
start 0 out-restart
wait_member 0
for _ in $(seq 50); do
  ovn-nbctl --db="tcp:${ips[0]}:6641" --no-leader-only --timeout=5 ls-list 2>/dev/null | grep -q raft-check-switch && break
  sleep 0.2
done
ovn-nbctl --db="tcp:${ips[0]}:6641" --no-leader-only --timeout=5 ls-list | grep -q raft-check-switch \
  || { echo "raft-check: the restarted bootstrap member lost the data"; exit 1; }
if grep -q 'Creating cluster\|create-cluster' "$work/m0/out-restart"; then
  echo "raft-check: the restarted bootstrap member created a new cluster"; exit 1
fi
echo "ok   the bootstrap member restarted on its database and is back in the same cluster with the data"
