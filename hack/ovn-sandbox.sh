#!/bin/bash
# One self-contained OVN "cluster" on this machine, as plain processes, for tests and demos.
#
#   root netns : OVN central = NB (standalone, or a 3-member RAFT cluster) + SB ovsdb-servers on unix
#                sockets under DIR/central/run and on loopback TCP ports picked at start-up, + ovn-northd.
#   netns ycs-<id> (the "node"): its own ovsdb-server (conf.db) + ovs-vswitchd (userspace netdev
#                datapath: its taps ovs-netdev/br-int/br-ex live in this netns, so several sandboxes
#                never collide) + ovn-controller, which reaches SB through the unix socket (a file:
#                works across netns). Bridges: br-int (fail-mode=secure), br-ex (bridge mapping
#                external:br-ex, for "outside" networks).
#   netns ycs-<id>-<pod>: pods made by pod-add; veth eth0 <-> p-<pod> on br-int in the node netns.
#                Hosts on the "external" network (outside-add): eth0 <-> x-<name> on br-ex.
#
# Usage:
#   ovn-sandbox.sh up     [--dir DIR] [--clustered 3] [--name CHASSIS]   (DIR default: a new mktemp dir)
#   ovn-sandbox.sh down   [--dir DIR] [--purge]     (--purge also removes DIR/log and DIR itself)
#   ovn-sandbox.sh env    [--dir DIR]               (prints export lines; `eval "$(... env)"`)
#   ovn-sandbox.sh status [--dir DIR]
#   ovn-sandbox.sh pod-add NAME SWITCH MAC IP/LEN GW [--mtu N] [--dir DIR]
#   ovn-sandbox.sh pod-del NAME [--dir DIR]                              (pods and outside hosts)
#   ovn-sandbox.sh outside-add NAME MAC IP/LEN [GW] [--mtu N] [--dir DIR]  (a host on br-ex = external)
# DIR may also come from $YCLOUD_SANDBOX_DIR. Every daemon and ctl command gets its run/db/log dirs
# explicitly: nothing reads or writes /var/run/openvswitch, /var/run/ovn or another lab's dirs.
# Record-as-you-go: DIR/state/{daemons,netns,links,pods} list what up/pod-add created; down acts only
# on those records (pids checked against /proc/PID/cmdline first), so it is safe after a half-failed up.
set -u
set -o pipefail
unset OVS_RUNDIR OVS_LOGDIR OVS_DBDIR OVS_SYSCONFDIR OVN_RUNDIR OVN_LOGDIR OVN_DBDIR OVN_SYSCONFDIR
unset OVN_NB_DB OVN_SB_DB

PROG=$(basename "$0")
T0=$(date +%s.%N)
elapsed() { printf '%.2f' "$(echo "$(date +%s.%N) - ${1:-$T0}" | bc)"; }
ts() { printf '[%6.2fs] %s\n' "$(echo "$(date +%s.%N) - $T0" | bc)" "$*"; }
warn() { echo "$PROG: warning: $*" >&2; }
usage() { sed -n '/^# Usage:/,/^# DIR may/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# ------------------------------------------------------------------ arguments
CMD=${1:-}; [ -n "$CMD" ] || usage; shift
DIR=${YCLOUD_SANDBOX_DIR:-}
CLUSTERED=""; NAME=""; PURGE=0; MTU=1500
POS=()
while [ $# -gt 0 ]; do
  case $1 in
    --dir) [ $# -ge 2 ] || { echo "$PROG: --dir needs a value" >&2; exit 2; }; DIR=$2; shift 2 ;;
    --dir=*) DIR=${1#--dir=}; shift ;;
    --clustered) [ $# -ge 2 ] || { echo "$PROG: --clustered needs a value" >&2; exit 2; }; CLUSTERED=$2; shift 2 ;;
    --clustered=*) CLUSTERED=${1#--clustered=}; shift ;;
    --name) [ $# -ge 2 ] || { echo "$PROG: --name needs a value" >&2; exit 2; }; NAME=$2; shift 2 ;;
    --name=*) NAME=${1#--name=}; shift ;;
    --mtu) [ $# -ge 2 ] || { echo "$PROG: --mtu needs a value" >&2; exit 2; }; MTU=$2; shift 2 ;;
    --purge) PURGE=1; shift ;;
    -h|--help) usage ;;
    --*) echo "$PROG: unknown option '$1'" >&2; usage ;;
    *) POS+=("$1"); shift ;;
  esac
done
if [ -n "$CLUSTERED" ] && [ "$CLUSTERED" != 3 ]; then
  echo "$PROG: --clustered supports exactly 3 members, got '$CLUSTERED'" >&2; exit 2
fi
if [ -n "$NAME" ] && ! [[ $NAME =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$ ]]; then
  echo "$PROG: --name '$NAME' must be 1-63 characters [A-Za-z0-9_.-]" >&2; exit 2
fi

need_dir() {  # the commands other than up need an existing sandbox dir
  [ -n "$DIR" ] || { echo "$PROG $CMD: no sandbox: pass --dir DIR or set YCLOUD_SANDBOX_DIR" >&2; exit 2; }
  DIR=$(readlink -f "$DIR")
  check_dir
}
check_dir() {  # paths are passed unquoted in env specs and daemon command lines: keep them plain
  [[ $DIR =~ ^[A-Za-z0-9_./-]+$ ]] || { echo "$PROG $CMD: --dir '$DIR' may only hold [A-Za-z0-9_./-]" >&2; exit 2; }
}

# ------------------------------------------------------------------ layout (set once DIR is known)
layout() {
  C=$DIR/central; N=$DIR/node; LOG=$DIR/log; ST=$DIR/state
  NBSOCK=$C/run/ovnnb_db.sock SBSOCK=$C/run/ovnsb_db.sock
  if [ -f "$ST/id" ]; then ID=$(cat "$ST/id"); NS=ycs-$ID; fi
}
load_conf() {  # values recorded by up (id, chassis, remotes)
  [ -f "$ST/conf" ] && . "$ST/conf"
  return 0
}
record() { echo "$2" >>"$ST/$1"; }   # record FILE LINE

# OVS/OVN env for the node's daemons and ctl commands (node run dir: ovs-vsctl/ovs-appctl defaults work)
node_env() {
  echo OVS_RUNDIR=$N/run OVS_LOGDIR=$LOG OVS_DBDIR=$N/db OVS_SYSCONFDIR=$N/etc \
       OVN_RUNDIR=$N/run OVN_LOGDIR=$LOG OVN_DBDIR=$N/db OVN_SYSCONFDIR=$N/etc
}
central_env() {
  echo OVS_RUNDIR=$C/run OVS_LOGDIR=$LOG OVS_DBDIR=$C/db OVS_SYSCONFDIR=$C/etc \
       OVN_RUNDIR=$C/run OVN_LOGDIR=$LOG OVN_DBDIR=$C/db OVN_SYSCONFDIR=$C/etc
}
# the env specs split into VAR=value words on purpose: DIR is checked to hold no spaces or glob characters
# shellcheck disable=SC2046
nb()  { env $(central_env) ovn-nbctl --timeout=20 --db="$NB_DB" "$@"; }
# shellcheck disable=SC2046
sb()  { env $(central_env) ovn-sbctl --timeout=20 --db="unix:$SBSOCK" "$@"; }
# shellcheck disable=SC2046
vs()  { env $(node_env) ovs-vsctl --timeout=10 --db="unix:$N/run/db.sock" "$@"; }
inns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

chassis_registered() { sb --timeout=5 --bare --columns=name find Chassis name="$CHASSIS" 2>/dev/null | grep -qx -- "$CHASSIS"; }
nb_alive() {  # any NB member still runs (pod-del after down must not wait for a dead NB)
  local f; for f in $C/run/ovnnb_db.pid $C/run/nb-1.pid $C/run/nb-2.pid $C/run/nb-3.pid; do
    alive "$f" ovsdb-server && return 0
  done
  return 1
}
alive() {  # pidfile program : the recorded pid runs and is that program of THIS sandbox (its command
           # line names the pidfile: a recycled pid now used by another sandbox's daemon does not match)
  local pid cmd; pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -r /proc/$pid/cmdline ] || return 1
  cmd=$(tr '\0' ' ' </proc/$pid/cmdline 2>/dev/null)
  [[ $cmd == *"$2"* && $cmd == *"--pidfile=$1"* ]]
}
wait_for() {  # tries(x0.1s) cmd...
  local n=$1 i; shift
  for ((i = 0; i < n; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}

# ------------------------------------------------------------------ up
FAILED=0
fail() {  # undo everything recorded so far, then exit non-zero
  echo "$PROG up: FAILED: $*" >&2
  local f; for f in "$LOG"/*.log; do
    [ -s "$f" ] && { echo "--- last lines of $f:" >&2; tail -n 5 "$f" >&2; }
  done
  FAILED=1
  do_down >&2
  exit 1
}

# start_daemon PIDFILE EXPECTED NETNS|"" ENVSPEC CMD... : record the pidfile first, then start detached
start_daemon() {
  local pidfile=$1 want=$2 ns=$3 envspec=$4; shift 4
  record daemons "$pidfile $want"
  # console output before daemonizing (the "opened log file" line, start-up errors) goes to a log
  if [ -n "$ns" ]; then
    ip netns exec "$ns" env $envspec "$@" --detach --no-chdir -vconsole:warn --pidfile="$pidfile" 2>>$LOG/start.log
  else
    env $envspec "$@" --detach --no-chdir -vconsole:warn --pidfile="$pidfile" 2>>$LOG/start.log
  fi
}

# bound_port LOGFILE : the port an ovsdb-server with --remote=ptcp:0:127.0.0.1 reports in its log
bound_port() {
  local i p
  for ((i = 0; i < 100; i++)); do
    p=$(sed -n 's/.*0:127\.0\.0\.1: listening on port \([0-9]\+\).*/\1/p' "$1" 2>/dev/null | tail -n 1)
    [ -n "$p" ] && { echo "$p"; return 0; }
    sleep 0.05
  done
  return 1
}

# free_ports N : N distinct loopback TCP ports that are free right now (for RAFT: the address is
# stored in the database, so it cannot be ptcp:0). The kernel picks them; a race with another process
# grabbing one before ovsdb-server binds it is possible but then up fails loudly (and is retried).
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

start_nb_standalone() {
  ovsdb-tool create $C/db/ovnnb_db.db /usr/share/ovn/ovn-nb.ovsschema || fail "ovsdb-tool create NB"
  start_daemon $C/run/ovnnb_db.pid ovsdb-server "" "$(central_env)" ovsdb-server \
    --unixctl=$C/run/ovnnb_db.ctl --log-file=$LOG/nb.log \
    --remote=punix:$NBSOCK --remote=ptcp:0:127.0.0.1 \
    --remote=db:OVN_Northbound,NB_Global,connections $C/db/ovnnb_db.db || fail "NB ovsdb-server did not start"
  local p; p=$(bound_port $LOG/nb.log) || fail "NB ovsdb-server did not report its TCP port in $LOG/nb.log"
  NB_DB=unix:$NBSOCK NB_TCP=tcp:127.0.0.1:$p NB_CTLS=$C/run/ovnnb_db.ctl
}

start_nb_cluster() {  # 3 RAFT members on loopback raft ports, each with its own unix socket + tcp port
  local attempt ports i raft0 unix tcp ctls p
  for attempt in 1 2 3; do
    read -r -a ports <<<"$(free_ports 3)" || fail "could not pick free loopback ports"
    raft0=tcp:127.0.0.1:${ports[0]}
    rm -f $C/db/nb-*.db
    ovsdb-tool create-cluster $C/db/nb-1.db /usr/share/ovn/ovn-nb.ovsschema $raft0 2>>$LOG/start.log || fail "create-cluster"
    for i in 2 3; do
      ovsdb-tool join-cluster $C/db/nb-$i.db OVN_Northbound tcp:127.0.0.1:${ports[$((i - 1))]} $raft0 \
        || fail "join-cluster member $i"
    done
    unix=""; tcp=""; ctls=""
    local ok=1
    for i in 1 2 3; do
      start_daemon $C/run/nb-$i.pid ovsdb-server "" "$(central_env)" ovsdb-server \
        --unixctl=$C/run/nb-$i.ctl --log-file=$LOG/nb-$i.log \
        --remote=punix:$C/run/nb-$i.sock --remote=ptcp:0:127.0.0.1 \
        --remote=db:OVN_Northbound,NB_Global,connections $C/db/nb-$i.db || { ok=0; break; }
      p=$(bound_port $LOG/nb-$i.log) || { ok=0; break; }
      unix+=${unix:+,}unix:$C/run/nb-$i.sock; tcp+=${tcp:+,}tcp:127.0.0.1:$p; ctls+=${ctls:+,}$C/run/nb-$i.ctl
    done
    # a member whose raft port was taken in the meantime dies at start-up: stop the others, retry
    if [ $ok = 1 ] && sleep 0.3 && alive $C/run/nb-1.pid ovsdb-server && alive $C/run/nb-2.pid ovsdb-server \
       && alive $C/run/nb-3.pid ovsdb-server; then
      break
    fi
    warn "RAFT member failed to start (attempt $attempt), retrying with other ports"
    stop_recorded_daemons
    [ $attempt = 3 ] && fail "NB RAFT cluster did not start (see $LOG/nb-*.log)"
  done
  NB_DB=$unix NB_TCP=$tcp NB_CTLS=$ctls
  # all three members joined and one of them leads
  local st
  for ((i = 0; i < 200; i++)); do
    st=$(for c in ${ctls//,/ }; do ovs-appctl -t $c cluster/status OVN_Northbound 2>/dev/null; done)
    [ "$(grep -c 'Status: cluster member' <<<"$st")" = 3 ] && grep -q 'Role: leader' <<<"$st" && break
    sleep 0.1
  done
  [ $i -lt 200 ] || fail "NB RAFT cluster did not form within 20 s (see $LOG/nb-*.log)"
}

start_central() {
  mkdir -p $C/run $C/db $C/etc
  if [ -n "$CLUSTERED" ]; then start_nb_cluster; else start_nb_standalone; fi
  ovsdb-tool create $C/db/ovnsb_db.db /usr/share/ovn/ovn-sb.ovsschema || fail "ovsdb-tool create SB"
  start_daemon $C/run/ovnsb_db.pid ovsdb-server "" "$(central_env)" ovsdb-server \
    --unixctl=$C/run/ovnsb_db.ctl --log-file=$LOG/sb.log \
    --remote=punix:$SBSOCK --remote=ptcp:0:127.0.0.1 \
    --remote=db:OVN_Southbound,SB_Global,connections $C/db/ovnsb_db.db || fail "SB ovsdb-server did not start"
  local p; p=$(bound_port $LOG/sb.log) || fail "SB ovsdb-server did not report its TCP port in $LOG/sb.log"
  SB_TCP=tcp:127.0.0.1:$p
  nb --no-wait init || fail "ovn-nbctl init"
  sb init || fail "ovn-sbctl init"   # (--no-wait is refused by ovn-sbctl init)
  start_daemon $C/run/ovn-northd.pid ovn-northd "" "$(central_env)" ovn-northd \
    --unixctl=$C/run/ovn-northd.ctl --log-file=$LOG/northd.log \
    --ovnnb-db="$NB_DB" --ovnsb-db=unix:$SBSOCK || fail "ovn-northd did not start"
}

start_node() {
  mkdir -p $N/run $N/db $N/etc
  ip netns add $NS || fail "ip netns add $NS"
  record netns "node $NS"
  inns $NS ip link set lo up
  inns $NS sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 >/dev/null 2>&1
  ovsdb-tool create $N/db/conf.db /usr/share/openvswitch/vswitch.ovsschema || fail "ovsdb-tool create conf.db"
  # the pidfiles are the defaults under OVS_RUNDIR/OVN_RUNDIR (no --unixctl), so that with the
  # sandbox env `ovs-appctl -t ovs-vswitchd` and `ovn-appctl -t ovn-controller` find them
  start_daemon $N/run/ovsdb-server.pid ovsdb-server $NS "$(node_env)" ovsdb-server \
    --log-file=$LOG/node-ovsdb-server.log --remote=punix:$N/run/db.sock \
    --remote=db:Open_vSwitch,Open_vSwitch,manager_options $N/db/conf.db || fail "node ovsdb-server did not start"
  vs --no-wait init || fail "ovs-vsctl init"
  start_daemon $N/run/ovs-vswitchd.pid ovs-vswitchd $NS "$(node_env)" ovs-vswitchd \
    --log-file=$LOG/node-ovs-vswitchd.log unix:$N/run/db.sock || fail "ovs-vswitchd did not start"
  vs -- --may-exist add-br br-int \
     -- set Bridge br-int datapath_type=netdev fail-mode=secure other-config:disable-in-band=true \
     -- --may-exist add-br br-ex \
     -- set Bridge br-ex datapath_type=netdev other-config:disable-in-band=true \
     || fail "creating br-int/br-ex"
  vs set Open_vSwitch . \
    external_ids:system-id="$CHASSIS" external_ids:hostname="$CHASSIS" \
    external_ids:ovn-remote=unix:$SBSOCK \
    external_ids:ovn-encap-type=geneve external_ids:ovn-encap-ip=127.0.0.1 \
    external_ids:ovn-bridge=br-int external_ids:ovn-bridge-datapath-type=netdev \
    external_ids:ovn-bridge-mappings=external:br-ex || fail "setting Open_vSwitch external_ids"
  start_daemon $N/run/ovn-controller.pid ovn-controller $NS "$(node_env)" ovn-controller \
    --log-file=$LOG/node-ovn-controller.log unix:$N/run/db.sock || fail "ovn-controller did not start"
}

write_conf() {
  cat >$ST/conf <<EOF
ID='$ID'
CHASSIS='$CHASSIS'
NB_DB='$NB_DB'
NB_TCP='$NB_TCP'
NB_CTLS='$NB_CTLS'
SB_TCP='$SB_TCP'
CLUSTERED='$CLUSTERED'
EOF
}

# YCLOUD_SANDBOX_FAIL_AFTER=central|node makes up fail at that point: how the tests prove that a
# half-finished up cleans up after itself
inject() { [ "${YCLOUD_SANDBOX_FAIL_AFTER:-}" = "$1" ] && fail "injected failure after $1 (YCLOUD_SANDBOX_FAIL_AFTER)"; return 0; }

do_up() {
  command -v ovn-nbctl >/dev/null && command -v ovs-vswitchd >/dev/null \
    || { echo "$PROG up: OVN/OVS not installed: run hack/install-deps.sh" >&2; exit 1; }
  [ "$(id -u)" = 0 ] || { echo "$PROG up: must run as root (network namespaces, OVS)" >&2; exit 1; }
  local created=0
  if [ -z "$DIR" ]; then DIR=$(mktemp -d /tmp/ycs.XXXXXX) || exit 1; created=1; fi
  check_dir; mkdir -p "$DIR" || exit 1
  DIR=$(readlink -f "$DIR")
  check_dir
  # unix socket paths are limited to 107 bytes; the longest one is DIR/node/run/ovs-vswitchd.NNNNNNN.ctl
  [ ${#DIR} -le 60 ] || { echo "$PROG up: --dir '$DIR' is too long (${#DIR} > 60 chars) for unix socket paths" >&2; exit 2; }
  layout
  [ -e "$ST/conf" ] || [ -e "$ST/daemons" ] && { echo "$PROG up: $DIR already holds a sandbox: run '$PROG down --dir $DIR' first" >&2; exit 1; }
  mkdir -p $ST $LOG
  [ $created = 1 ] && touch $ST/created-dir
  # a short unique id: netns names are global
  local i
  for i in 1 2 3 4 5 6 7 8 9 10; do
    ID=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
    [ -e /var/run/netns/ycs-$ID ] || break
  done
  echo "$ID" >$ST/id
  NS=ycs-$ID
  CHASSIS=${NAME:-ycs-$ID}
  CLUSTERED=${CLUSTERED:-}
  NB_DB="" NB_TCP="" NB_CTLS="" SB_TCP=""
  trap 'fail "interrupted"' INT TERM
  ts "sandbox $ID in $DIR${CLUSTERED:+ (NB: 3-member RAFT cluster)}"
  start_central
  write_conf
  ts "central up: NB $NB_TCP, SB $SB_TCP"
  inject central
  start_node
  inject node
  local t1; t1=$(date +%s.%N)
  wait_for 300 chassis_registered || fail "chassis $CHASSIS did not register in SB within 30 s"
  ts "chassis $CHASSIS registered in SB (node netns $NS; waited $(elapsed $t1)s after ovn-controller start)"
  do_env >$DIR/env
  trap - INT TERM
  echo "sandbox up in $(elapsed)s: dir=$DIR id=$ID netns=$NS chassis=$CHASSIS"
  echo "use it:  eval \"\$($0 env --dir $DIR)\"; tear down: $0 down --dir $DIR"
}

# ------------------------------------------------------------------ down
running() {  # pid : exists and is not a zombie (our detached daemons are reaped by init, whenever it gets to it)
  local st; st=$(sed -E 's/^.*\) (.).*$/\1/' /proc/$1/stat 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ]
}
stop_pid() {  # pidfile expected : TERM, wait up to 5 s, KILL; only if /proc/PID/cmdline matches
  local f=$1 want=$2 pid i
  [ -f "$f" ] || return 0
  pid=$(cat "$f" 2>/dev/null)
  if [ -n "$pid" ] && alive "$f" "$want"; then
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do running "$pid" || break; sleep 0.05; done
    if running "$pid"; then kill -KILL "$pid" 2>/dev/null; echo "killed (KILL) $want pid=$pid"
    else echo "stopped $want pid=$pid"; fi
  elif [ -n "$pid" ] && running "$pid"; then
    warn "pid $pid from $f is not '$want' any more: left alone"
  fi
  rm -f "$f"
}
stop_recorded_daemons() {  # reverse order of start: ovn-controller, vswitchd, ovsdb-server, northd, SB, NB
  [ -f "$ST/daemons" ] || return 0
  local pidfile want
  while read -r pidfile want; do
    [ -n "$pidfile" ] && stop_pid "$pidfile" "$want"
  done < <(tac "$ST/daemons")
  rm -f "$ST/daemons"
}
del_netns() {  # name
  local ns=$1 pids
  [ -e /var/run/netns/$ns ] || return 0
  pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
  [ -n "$pids" ] && warn "processes not started by $PROG still run in netns $ns (pids $pids): the namespace lives on until they exit"
  ip netns del "$ns" && echo "deleted netns $ns"
}
do_down() {
  local t0; t0=$(date +%s.%N)
  [ -d "$DIR" ] || { echo "nothing to do: $DIR does not exist"; return 0; }
  layout
  if [ ! -d "$ST" ]; then
    [ $PURGE = 1 ] && [ -d "$LOG" ] && rm -rf "$LOG" && echo "removed $LOG"
    echo "nothing to do: no sandbox state in $DIR"; return 0
  fi
  local ns kind n
  # pods first (their veths go with their netns), while ovn-controller still runs
  if [ -f "$ST/links" ]; then
    while read -r ns n; do
      [ -e /var/run/netns/$ns ] && ip netns exec "$ns" ip link del "$n" 2>/dev/null && echo "deleted link $n in $ns"
    done < <(tac "$ST/links")
    rm -f "$ST/links"
  fi
  if [ -f "$ST/netns" ]; then
    while read -r kind ns; do [ "$kind" = pod ] && del_netns "$ns"; done < <(tac "$ST/netns")
  fi
  rm -f "$ST/pods"
  stop_recorded_daemons
  if [ -f "$ST/netns" ]; then
    while read -r kind ns; do [ "$kind" != pod ] && del_netns "$ns"; done < <(tac "$ST/netns")
    rm -f "$ST/netns"
  fi
  rm -rf "$C" "$N" "$DIR/env"
  if [ $PURGE = 1 ]; then
    if [ -f "$ST/created-dir" ]; then rm -rf "$DIR"; echo "removed $DIR"
    else rm -rf "$ST" "$LOG"; echo "removed $ST and $LOG"; fi
  else
    rm -rf "$ST"
    [ $FAILED = 1 ] || echo "logs kept in $LOG"
  fi
  echo "sandbox down in $(elapsed $t0)s"
}

# ------------------------------------------------------------------ env / status
do_env() {
  load_conf
  [ -n "${ID:-}" ] || { echo "$PROG env: no sandbox in $DIR (run up first)" >&2; return 1; }
  cat <<EOF
export YCLOUD_SANDBOX_DIR='$DIR'
export YCLOUD_SANDBOX_ID='$ID'
export YCLOUD_CHASSIS='$CHASSIS'
export YCLOUD_NODE_NETNS='$NS'
export YCLOUD_POD_NETNS_PREFIX='$NS-'
export OVN_NB_DB='$NB_DB'
export OVN_SB_DB='unix:$SBSOCK'
export YCLOUD_NB_TCP='$NB_TCP'
export YCLOUD_SB_TCP='$SB_TCP'
export YCLOUD_NB_CTL='$NB_CTLS'
export YCLOUD_SB_CTL='$C/run/ovnsb_db.ctl'
export YCLOUD_NORTHD_CTL='$C/run/ovn-northd.ctl'
export YCLOUD_OVS_DB='unix:$N/run/db.sock'
export OVS_RUNDIR='$N/run'
export OVS_DBDIR='$N/db'
export OVS_LOGDIR='$LOG'
export OVS_SYSCONFDIR='$N/etc'
export OVN_RUNDIR='$N/run'
export OVN_DBDIR='$N/db'
export OVN_LOGDIR='$LOG'
export OVN_SYSCONFDIR='$N/etc'
export YCLOUD_SANDBOX_LOG='$LOG'
EOF
}

do_status() {
  load_conf
  [ -n "${ID:-}" ] || { echo "no sandbox in $DIR"; return 1; }
  echo "sandbox $ID in $DIR (chassis $CHASSIS, node netns $NS${CLUSTERED:+, NB RAFT x3})"
  local pidfile want pid rc=0
  if [ -f "$ST/daemons" ]; then
    while read -r pidfile want; do
      pid=$(cat "$pidfile" 2>/dev/null || echo -)
      if alive "$pidfile" "$want"; then printf '  %-14s pid=%-8s alive  (%s)\n' "$want" "$pid" "$(basename "$pidfile")"
      else printf '  %-14s pid=%-8s DEAD   (%s)\n' "$want" "$pid" "$(basename "$pidfile")"; rc=1; fi
    done <"$ST/daemons"
  fi
  echo "  NB: $NB_DB  tcp: $NB_TCP"
  echo "  SB: unix:$SBSOCK  tcp: $SB_TCP"
  if [ -e /var/run/netns/$NS ]; then echo "  node netns $NS: present"; else echo "  node netns $NS: MISSING"; rc=1; fi
  if chassis_registered; then
    echo "  chassis $CHASSIS: registered in SB"
  else echo "  chassis $CHASSIS: NOT registered in SB"; rc=1; fi
  if [ -f "$ST/pods" ]; then
    local p br; while read -r p br; do
      if [ "$br" = br-ex ]; then echo "  outside $p: netns $NS-$p on br-ex"
      else echo "  pod $p: netns $NS-$p, up=$(sb --bare --columns=up find Port_Binding logical_port="$p" 2>/dev/null)"; fi
    done <"$ST/pods"
  fi
  return $rc
}

# ------------------------------------------------------------------ pods and outside hosts
veth_host_name() {  # prefix name : host-side veth in the node netns: <prefix>-<name> if it fits IFNAMSIZ
  local x=$1 p=$2
  if [ ${#p} -le 13 ]; then echo "$x-$p"; else echo "$x-$(printf %s "$p" | md5sum | cut -c1-13)"; fi
}
pod_bridge() { awk -v p="$1" '$1 == p { print $2; exit }' "$ST/pods" 2>/dev/null; }   # recorded bridge of a pod
check_host_args() {  # cmd name mac ip/len gw(optional)
  local c=$1 p=$2 mac=$3 ipl=$4 gw=$5
  [[ $p =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$ ]] || { echo "$PROG $c: name '$p' must be 1-40 characters [A-Za-z0-9_.-]" >&2; exit 2; }
  [[ $mac =~ ^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$ ]] || { echo "$PROG $c $p: MAC '$mac' is not xx:xx:xx:xx:xx:xx" >&2; exit 2; }
  [[ $ipl =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$ ]] || { echo "$PROG $c $p: address '$ipl' is not IPv4/LEN" >&2; exit 2; }
  [ -z "$gw" ] || [[ $gw =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || { echo "$PROG $c $p: gateway '$gw' is not an IPv4 address" >&2; exit 2; }
  [[ $MTU =~ ^[0-9]+$ ]] || { echo "$PROG $c $p: --mtu '$MTU' is not a number" >&2; exit 2; }
  load_conf
  [ -n "${ID:-}" ] || { echo "$PROG $c: no sandbox in $DIR" >&2; exit 1; }
  [ -e /var/run/netns/$NS-$p ] && { echo "$PROG $c: '$p' exists already (netns $NS-$p)" >&2; exit 1; }
  return 0
}
# attach_host cmd name bridge mac ip/len gw : netns <node netns>-<name> with eth0, its veth peer on
# <bridge> in the node netns (recorded as it goes; on failure everything made so far is removed)
attach_host() {
  local c=$1 p=$2 br=$3 mac=$4 ipl=$5 gw=$6 prefix=p
  [ "$br" = br-ex ] && prefix=x
  local pns=$NS-$p host; host=$(veth_host_name $prefix "$p")
  host_fail() { echo "$PROG $c $p: FAILED: $*" >&2; POS=("$p"); do_pod_del >&2; exit 1; }
  [ -n "$(pod_bridge "$p")" ] || record pods "$p $br"
  if [ "$br" = br-int ]; then
    nb --may-exist lsp-add "$LS" "$p" -- lsp-set-addresses "$p" "$mac ${ipl%/*}" \
       -- lsp-set-port-security "$p" "$mac ${ipl%/*}" || host_fail "creating LSP $p on switch $LS"
  fi
  ip netns add "$pns" || host_fail "ip netns add $pns"
  record netns "pod $pns"
  inns "$pns" ip link set lo up
  inns "$pns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 >/dev/null 2>&1
  ip link add "$host" netns "$NS" mtu "$MTU" type veth peer name eth0 netns "$pns" mtu "$MTU" \
    || host_fail "creating veth $host ($NS) <-> eth0 ($pns)"
  record links "$NS $host"
  # the userspace datapath reads veths with AF_PACKET and cannot complete CHECKSUM_PARTIAL packets
  inns "$pns" ethtool -K eth0 tx off >/dev/null 2>&1 || host_fail "ethtool -K eth0 tx off in $pns"
  inns "$NS" ethtool -K "$host" tx off >/dev/null 2>&1 || host_fail "ethtool -K $host tx off in $NS"
  inns "$pns" ip link set eth0 address "$mac" || host_fail "setting MAC $mac"
  inns "$pns" ip addr add "$ipl" dev eth0 || host_fail "adding address $ipl"
  inns "$pns" ip link set eth0 up
  inns "$NS" ip link set "$host" up
  if [ -n "$gw" ]; then inns "$pns" ip route add default via "$gw" || host_fail "default route via $gw"; fi
  if [ "$br" = br-int ]; then
    vs --may-exist add-port br-int "$host" -- set Interface "$host" external_ids:iface-id="$p" \
      || host_fail "adding $host to br-int"
  else
    vs --may-exist add-port "$br" "$host" || host_fail "adding $host to $br"
  fi
  echo "$c $p: netns $pns, eth0 $mac $ipl${gw:+ gw $gw}, host veth $host on $br (node netns $NS)"
}
do_pod_add() {
  [ ${#POS[@]} = 5 ] || { echo "$PROG pod-add: expected NAME SWITCH MAC IP/LEN GW, got ${#POS[@]} arguments" >&2; exit 2; }
  check_host_args pod-add "${POS[0]}" "${POS[2]}" "${POS[3]}" "${POS[4]}"
  LS=${POS[1]}
  attach_host pod "${POS[0]}" br-int "${POS[2]}" "${POS[3]}" "${POS[4]}"
}
do_outside_add() {  # a host on the "external" network: its veth is a port of br-ex (bridge mapping external)
  [ ${#POS[@]} = 3 ] || [ ${#POS[@]} = 4 ] \
    || { echo "$PROG outside-add: expected NAME MAC IP/LEN [GW], got ${#POS[@]} arguments" >&2; exit 2; }
  check_host_args outside-add "${POS[0]}" "${POS[1]}" "${POS[2]}" "${POS[3]:-}"
  attach_host outside "${POS[0]}" br-ex "${POS[1]}" "${POS[2]}" "${POS[3]:-}"
}
do_pod_del() {  # pods and outside hosts alike
  [ ${#POS[@]} = 1 ] || { echo "$PROG pod-del: expected NAME" >&2; exit 2; }
  local p=${POS[0]}
  load_conf
  [ -n "${ID:-}" ] || { echo "pod-del $p: no sandbox in $DIR (already down)"; return 0; }
  local br prefix=p; br=$(pod_bridge "$p")
  br=${br:-br-int}
  [ "$br" = br-ex ] && prefix=x
  local pns=$NS-$p host; host=$(veth_host_name $prefix "$p")
  if [ "$br" = br-int ] && nb_alive; then nb --if-exists lsp-del "$p" >/dev/null 2>&1 || warn "lsp-del $p failed"; fi
  if alive $N/run/ovs-vswitchd.pid ovs-vswitchd; then vs --if-exists del-port "$br" "$host" >/dev/null 2>&1; fi
  [ -e /var/run/netns/$NS ] && ip netns exec "$NS" ip link del "$host" 2>/dev/null
  del_netns "$pns"
  local f; for f in pods links netns; do
    [ -f "$ST/$f" ] || continue
    case $f in
      pods) grep -vx -- "$p $br" "$ST/$f" >"$ST/$f.new" ;;
      links) grep -vx -- "$NS $host" "$ST/$f" >"$ST/$f.new" ;;
      netns) grep -vx -- "pod $pns" "$ST/$f" >"$ST/$f.new" ;;
    esac
    mv "$ST/$f.new" "$ST/$f"
  done
  echo "pod $p deleted"
}

# ------------------------------------------------------------------ main
case $CMD in
  up) do_up ;;
  down) need_dir; layout; do_down ;;
  env) need_dir; layout; do_env ;;
  status) need_dir; layout; do_status ;;
  pod-add) need_dir; layout; do_pod_add ;;
  pod-del) need_dir; layout; do_pod_del ;;
  outside-add) need_dir; layout; do_outside_add ;;
  -h|--help|help) usage ;;
  *) echo "$PROG: unknown command '$CMD'" >&2; usage ;;
esac
