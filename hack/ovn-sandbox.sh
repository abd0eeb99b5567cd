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
# With --nodes N (2..4) there are N chassis: node 1 is the one above; node K>1 lives in netns
# ycs-<id>.nK with its run dirs under DIR/nodeK and chassis name <chassis>-nK. The nodes are joined by
# an underlay: netns ycs-<id>.ul holds a Linux bridge br-ul (192.168.100.0/24, MTU --underlay-mtu)
# and br-ext (the external segment); each node's eth1 is a port of its OVS bridge br-phy whose
# internal port holds 192.168.100.K (ovn-encap-ip: userspace tunnelling, tnl_push/tnl_pop), and
# its eth2 a port of br-ex. Outside hosts then hang on br-ext, reachable from every node's br-ex.
#
# Usage:
#   ovn-sandbox.sh up     [--dir DIR] [--clustered 3] [--name CHASSIS] [--nodes N] [--underlay-mtu M]
#                                                     (DIR default: a new mktemp dir; N 1..4, default 1)
#   ovn-sandbox.sh down   [--dir DIR] [--purge]     (--purge also removes DIR/log and DIR itself)
#   ovn-sandbox.sh env    [--dir DIR]               (prints export lines; `eval "$(... env)"`)
#   ovn-sandbox.sh status [--dir DIR]
#   ovn-sandbox.sh pod-add NAME SWITCH MAC IP/LEN GW [--mtu N] [--node K] [--dir DIR]  (K default 1)
#   ovn-sandbox.sh pod-del NAME [--dir DIR]                              (pods and outside hosts)
#   ovn-sandbox.sh outside-add NAME MAC IP/LEN [GW] [--mtu N] [--dir DIR]  (a host on br-ex = external)
#   ovn-sandbox.sh node-start K [--dir DIR]    (starts node K's daemons that are not running, e.g.
#                                               after a test killed its ovs-vswitchd to fail over)
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
CLUSTERED=""; NAME=""; PURGE=0; MTU=1500; NODES_OPT=""; UL_MTU_OPT=""; NODE=1
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
    --nodes) [ $# -ge 2 ] || { echo "$PROG: --nodes needs a value" >&2; exit 2; }; NODES_OPT=$2; shift 2 ;;
    --nodes=*) NODES_OPT=${1#--nodes=}; shift ;;
    --underlay-mtu) [ $# -ge 2 ] || { echo "$PROG: --underlay-mtu needs a value" >&2; exit 2; }; UL_MTU_OPT=$2; shift 2 ;;
    --underlay-mtu=*) UL_MTU_OPT=${1#--underlay-mtu=}; shift ;;
    --node) [ $# -ge 2 ] || { echo "$PROG: --node needs a value" >&2; exit 2; }; NODE=$2; shift 2 ;;
    --node=*) NODE=${1#--node=}; shift ;;
    --purge) PURGE=1; shift ;;
    -h|--help) usage ;;
    --*) echo "$PROG: unknown option '$1'" >&2; usage ;;
    *) POS+=("$1"); shift ;;
  esac
done
if [ -n "$CLUSTERED" ] && [ "$CLUSTERED" != 3 ]; then
  echo "$PROG: --clustered supports exactly 3 members, got '$CLUSTERED'" >&2; exit 2
fi
if [ -n "$NAME" ] && ! [[ $NAME =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,59}$ ]]; then
  echo "$PROG: --name '$NAME' must be 1-60 characters [A-Za-z0-9_.-]" >&2; exit 2
fi
if [ -n "$NODES_OPT" ] && ! [[ $NODES_OPT =~ ^[1-4]$ ]]; then
  echo "$PROG: --nodes '$NODES_OPT' must be 1, 2, 3 or 4" >&2; exit 2
fi
# 1280: IPv6's minimum, and room for Geneve's 58 bytes plus a useful pod MTU; 9000: jumbo frames
if [ -n "$UL_MTU_OPT" ] && { ! [[ $UL_MTU_OPT =~ ^[0-9]{1,5}$ ]] || [ "$UL_MTU_OPT" -lt 1280 ] || [ "$UL_MTU_OPT" -gt 9000 ]; }; then
  echo "$PROG: --underlay-mtu '$UL_MTU_OPT' must be a number from 1280 to 9000" >&2; exit 2
fi
if ! [[ $NODE =~ ^[1-4]$ ]]; then
  echo "$PROG: --node '$NODE' must be 1, 2, 3 or 4" >&2; exit 2
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
  NNS=${NS:-}   # the selected node's netns (use_node); node 1 until told otherwise
}
# use_node K : N (run dirs), NNS (netns), NCH (chassis) and NIP (underlay address) of node K.
# Node 1 keeps the single-node names, so a one-node sandbox is what it always was.
use_node() {
  local k=$1
  if [ "$k" = 1 ]; then N=$DIR/node NNS=$NS NCH=${CHASSIS:-}
  else N=$DIR/node$k NNS=$NS.n$k NCH=${CHASSIS:-}-n$k; fi
  NIP=192.168.100.$k
  return 0
}
UL_NET=192.168.100.0/24
load_conf() {  # values recorded by up (id, chassis, remotes, nodes)
  [ -f "$ST/conf" ] && . "$ST/conf"
  NODES=${NODES:-1}
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

chassis_registered() {  # [name] : default the selected node's chassis
  local c=${1:-$NCH}
  sb --timeout=5 --bare --columns=name find Chassis name="$c" 2>/dev/null | grep -qx -- "$c"
}
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

start_node() {  # K : node K's netns, conf.db, ovs-vswitchd, bridges, ovn-controller
  local k=$1 encap=127.0.0.1
  use_node "$k"
  mkdir -p $N/run $N/db $N/etc
  ip netns add $NNS || fail "ip netns add $NNS"
  record netns "node $NNS"
  inns $NNS ip link set lo up
  inns $NNS sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 >/dev/null 2>&1
  local nl=node; [ "$k" = 1 ] || nl=node$k   # log file prefix
  ovsdb-tool create $N/db/conf.db /usr/share/openvswitch/vswitch.ovsschema || fail "ovsdb-tool create conf.db (node $k)"
  # the pidfiles are the defaults under OVS_RUNDIR/OVN_RUNDIR (no --unixctl), so that with the
  # sandbox env `ovs-appctl -t ovs-vswitchd` and `ovn-appctl -t ovn-controller` find them
  start_daemon $N/run/ovsdb-server.pid ovsdb-server $NNS "$(node_env)" ovsdb-server \
    --log-file=$LOG/$nl-ovsdb-server.log --remote=punix:$N/run/db.sock \
    --remote=db:Open_vSwitch,Open_vSwitch,manager_options $N/db/conf.db || fail "node $k ovsdb-server did not start"
  vs --no-wait init || fail "ovs-vsctl init (node $k)"
  start_vswitchd
  vs -- --may-exist add-br br-int \
     -- set Bridge br-int datapath_type=netdev fail-mode=secure other-config:disable-in-band=true \
     -- --may-exist add-br br-ex \
     -- set Bridge br-ex datapath_type=netdev other-config:disable-in-band=true \
     || fail "creating br-int/br-ex (node $k)"
  if [ "$NODES" -gt 1 ]; then
    underlay_node "$k"
    encap=$NIP
  fi
  vs set Open_vSwitch . \
    external_ids:system-id="$NCH" external_ids:hostname="$NCH" \
    external_ids:ovn-remote=unix:$SBSOCK \
    external_ids:ovn-encap-type=geneve external_ids:ovn-encap-ip=$encap \
    external_ids:ovn-bridge=br-int external_ids:ovn-bridge-datapath-type=netdev \
    external_ids:ovn-bridge-mappings=external:br-ex || fail "setting Open_vSwitch external_ids (node $k)"
  start_controller
}
# the selected node's ovs-vswitchd and ovn-controller (also what node-start restarts)
start_vswitchd() {
  local nl=node; [ "$N" = "$DIR/node" ] || nl=${N##*/}
  start_daemon $N/run/ovs-vswitchd.pid ovs-vswitchd $NNS "$(node_env)" ovs-vswitchd \
    --log-file=$LOG/$nl-ovs-vswitchd.log unix:$N/run/db.sock || fail "ovs-vswitchd of $NNS did not start"
}
start_controller() {
  local nl=node; [ "$N" = "$DIR/node" ] || nl=${N##*/}
  start_daemon $N/run/ovn-controller.pid ovn-controller $NNS "$(node_env)" ovn-controller \
    --log-file=$LOG/$nl-ovn-controller.log unix:$N/run/db.sock || fail "ovn-controller of $NNS did not start"
}

# underlay_ns : the netns with the underlay bridge br-ul and the external segment br-ext
underlay_ns() {
  ULNS=$NS.ul
  ip netns add $ULNS || fail "ip netns add $ULNS"
  record netns "node $ULNS"
  inns $ULNS ip link set lo up
  inns $ULNS sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 >/dev/null 2>&1
  inns $ULNS ip link add br-ul mtu $UL_MTU type bridge stp_state 0 || fail "br-ul in $ULNS"
  inns $ULNS ip link add br-ext type bridge stp_state 0 || fail "br-ext in $ULNS"
  inns $ULNS ip link set br-ul up; inns $ULNS ip link set br-ext up
}
# veth_pair NAME1 NS1 NAME2 NS2 MTU : up, TX checksum offload off on both ends (the userspace
# datapath reads veths with AF_PACKET and cannot complete CHECKSUM_PARTIAL packets)
veth_pair() {
  ip link add "$1" netns "$2" mtu "$5" type veth peer name "$3" netns "$4" mtu "$5" || return 1
  record links "$2 $1"
  inns "$2" ethtool -K "$1" tx off >/dev/null 2>&1; inns "$4" ethtool -K "$3" tx off >/dev/null 2>&1
  inns "$2" ip link set "$1" up && inns "$4" ip link set "$3" up
}
# underlay_node K : eth1 (underlay, on br-phy whose internal port holds 192.168.100.K) and eth2
# (external segment, on br-ex) of the selected node K, their peers u<K>/x<K> on the underlay bridges
underlay_node() {
  local k=$1 mac
  veth_pair eth1 $NNS u$k $ULNS $UL_MTU || fail "underlay veth of node $k"
  inns $ULNS ip link set u$k master br-ul || fail "u$k on br-ul"
  veth_pair eth2 $NNS x$k $ULNS 1500 || fail "external veth of node $k"
  inns $ULNS ip link set x$k master br-ext || fail "x$k on br-ext"
  mac=$(printf '02:00:c0:a8:64:%02x' "$k")
  # br-phy: the vswitchd sends the Geneve packets it builds (tnl_push) out of its own bridge, so
  # the node's underlay address lives on this bridge's internal port, not on the kernel's eth1
  vs -- --may-exist add-br br-phy \
     -- set Bridge br-phy datapath_type=netdev other-config:hwaddr=$mac other-config:disable-in-band=true \
     -- --may-exist add-port br-phy eth1 -- set Interface eth1 mtu_request=$UL_MTU \
     -- set Interface br-phy mtu_request=$UL_MTU \
     -- --may-exist add-port br-ex eth2 || fail "br-phy/br-ex ports of node $k"
  wait_for 50 inns $NNS ip link show br-phy || fail "the br-phy tap of node $k did not appear"
  inns $NNS ip addr add $NIP/24 dev br-phy || fail "underlay address $NIP on node $k"
  inns $NNS ip link set br-phy up
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
NODES='$NODES'
UL_MTU='$UL_MTU'
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
  NODES=${NODES_OPT:-1} UL_MTU=${UL_MTU_OPT:-1500}
  NB_DB="" NB_TCP="" NB_CTLS="" SB_TCP=""
  trap 'fail "interrupted"' INT TERM
  ts "sandbox $ID in $DIR${CLUSTERED:+ (NB: 3-member RAFT cluster)}$([ "$NODES" -gt 1 ] && echo " with $NODES nodes, underlay MTU $UL_MTU")"
  start_central
  write_conf
  ts "central up: NB $NB_TCP, SB $SB_TCP"
  inject central
  [ "$NODES" -gt 1 ] && underlay_ns
  local k
  for ((k = 1; k <= NODES; k++)); do start_node $k; done
  inject node
  local t1; t1=$(date +%s.%N)
  for ((k = 1; k <= NODES; k++)); do
    use_node $k
    wait_for 300 chassis_registered || fail "chassis $NCH did not register in SB within 30 s"
    ts "chassis $NCH registered in SB (node netns $NNS; waited $(elapsed $t1)s after ovn-controller start)"
  done
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
  rm -rf "$C" "$DIR/node" "$DIR/node2" "$DIR/node3" "$DIR/node4" "$DIR/env"
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
  use_node 1
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
export YCLOUD_NODES='$NODES'
export YCLOUD_UNDERLAY_MTU='$UL_MTU'
EOF
  # per node (node 1 repeats the single-node values above): YCLOUD_NODE<K>_{NETNS,CHASSIS,OVS_DB,RUNDIR,ENCAP_IP}
  local k encap
  for ((k = 1; k <= NODES; k++)); do
    use_node $k
    encap=127.0.0.1; [ "$NODES" -gt 1 ] && encap=$NIP
    cat <<EOF
export YCLOUD_NODE${k}_NETNS='$NNS'
export YCLOUD_NODE${k}_CHASSIS='$NCH'
export YCLOUD_NODE${k}_OVS_DB='unix:$N/run/db.sock'
export YCLOUD_NODE${k}_RUNDIR='$N/run'
export YCLOUD_NODE${k}_ENCAP_IP='$encap'
EOF
  done
  use_node 1
}

do_status() {
  load_conf
  [ -n "${ID:-}" ] || { echo "no sandbox in $DIR"; return 1; }
  echo "sandbox $ID in $DIR (chassis $CHASSIS, node netns $NS${CLUSTERED:+, NB RAFT x3}, $NODES node(s))"
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
  local k
  for ((k = 1; k <= NODES; k++)); do
    use_node $k
    [ "$NODES" = 1 ] || echo "  node $k: netns $NNS, chassis $NCH, underlay $NIP (MTU $UL_MTU), daemons in $N/run"
    if [ -e /var/run/netns/$NNS ]; then echo "  node netns $NNS: present"; else echo "  node netns $NNS: MISSING"; rc=1; fi
    if chassis_registered; then
      echo "  chassis $NCH: registered in SB"
    else echo "  chassis $NCH: NOT registered in SB"; rc=1; fi
  done
  if [ -f "$ST/pods" ]; then
    local p br node; while read -r p br node; do
      if [ "$br" = br-ex ]; then echo "  outside $p: netns $NS-$p on br-ex"
      elif [ "$br" = br-ext ]; then echo "  outside $p: netns $NS-$p on br-ext (underlay netns $NS.ul)"
      else echo "  pod $p: node ${node:-1}, netns $NS-$p, up=$(sb --bare --columns=up find Port_Binding logical_port="$p" 2>/dev/null)"; fi
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
pod_node() { awk -v p="$1" '$1 == p { print ($3 == "" ? 1 : $3); exit }' "$ST/pods" 2>/dev/null; }  # and its node
check_host_args() {  # cmd name mac ip/len gw(optional)
  local c=$1 p=$2 mac=$3 ipl=$4 gw=$5
  [[ $p =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$ ]] || { echo "$PROG $c: name '$p' must be 1-40 characters [A-Za-z0-9_.-]" >&2; exit 2; }
  [[ $mac =~ ^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$ ]] || { echo "$PROG $c $p: MAC '$mac' is not xx:xx:xx:xx:xx:xx" >&2; exit 2; }
  [[ $ipl =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$ ]] || { echo "$PROG $c $p: address '$ipl' is not IPv4/LEN" >&2; exit 2; }
  [ -z "$gw" ] || [[ $gw =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || { echo "$PROG $c $p: gateway '$gw' is not an IPv4 address" >&2; exit 2; }
  [[ $MTU =~ ^[0-9]+$ ]] || { echo "$PROG $c $p: --mtu '$MTU' is not a number" >&2; exit 2; }
  load_conf
  [ -n "${ID:-}" ] || { echo "$PROG $c: no sandbox in $DIR" >&2; exit 1; }
  [ "$NODE" -le "$NODES" ] || { echo "$PROG $c $p: --node $NODE, but the sandbox has $NODES node(s)" >&2; exit 2; }
  [ -e /var/run/netns/$NS-$p ] && { echo "$PROG $c: '$p' exists already (netns $NS-$p)" >&2; exit 1; }
  use_node "$NODE"
  return 0
}
# attach_host cmd name bridge mac ip/len gw : netns <node netns>-<name> with eth0, its veth peer on
# <bridge> in the node netns (recorded as it goes; on failure everything made so far is removed)
attach_host() {
  local c=$1 p=$2 br=$3 mac=$4 ipl=$5 gw=$6 prefix=p
  [ "$br" = br-int ] || prefix=x
  # outside hosts of a multi-node sandbox hang on the external segment in the underlay netns
  [ "$br" = br-ext ] && NNS=$NS.ul
  local pns=$NS-$p host; host=$(veth_host_name $prefix "$p")
  host_fail() { echo "$PROG $c $p: FAILED: $*" >&2; POS=("$p"); do_pod_del >&2; exit 1; }
  [ -n "$(pod_bridge "$p")" ] || record pods "$p $br $NODE"
  if [ "$br" = br-int ]; then
    nb --may-exist lsp-add "$LS" "$p" -- lsp-set-addresses "$p" "$mac ${ipl%/*}" \
       -- lsp-set-port-security "$p" "$mac ${ipl%/*}" || host_fail "creating LSP $p on switch $LS"
  fi
  ip netns add "$pns" || host_fail "ip netns add $pns"
  record netns "pod $pns"
  inns "$pns" ip link set lo up
  inns "$pns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 >/dev/null 2>&1
  ip link add "$host" netns "$NNS" mtu "$MTU" type veth peer name eth0 netns "$pns" mtu "$MTU" \
    || host_fail "creating veth $host ($NNS) <-> eth0 ($pns)"
  record links "$NNS $host"
  # the userspace datapath reads veths with AF_PACKET and cannot complete CHECKSUM_PARTIAL packets
  inns "$pns" ethtool -K eth0 tx off >/dev/null 2>&1 || host_fail "ethtool -K eth0 tx off in $pns"
  inns "$NNS" ethtool -K "$host" tx off >/dev/null 2>&1 || host_fail "ethtool -K $host tx off in $NNS"
  inns "$pns" ip link set eth0 address "$mac" || host_fail "setting MAC $mac"
  inns "$pns" ip addr add "$ipl" dev eth0 || host_fail "adding address $ipl"
  inns "$pns" ip link set eth0 up
  inns "$NNS" ip link set "$host" up
  if [ -n "$gw" ]; then inns "$pns" ip route add default via "$gw" || host_fail "default route via $gw"; fi
  if [ "$br" = br-int ]; then
    vs --may-exist add-port br-int "$host" -- set Interface "$host" external_ids:iface-id="$p" \
      || host_fail "adding $host to br-int"
  elif [ "$br" = br-ext ]; then
    inns "$NNS" ip link set "$host" master br-ext || host_fail "adding $host to br-ext in $NNS"
  else
    vs --may-exist add-port "$br" "$host" || host_fail "adding $host to $br"
  fi
  echo "$c $p: netns $pns, eth0 $mac $ipl${gw:+ gw $gw}, host veth $host on $br (netns $NNS)"
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
  local br=br-ex; [ "$NODES" -gt 1 ] && br=br-ext
  attach_host outside "${POS[0]}" $br "${POS[1]}" "${POS[2]}" "${POS[3]:-}"
}
do_pod_del() {  # pods and outside hosts alike
  [ ${#POS[@]} = 1 ] || { echo "$PROG pod-del: expected NAME" >&2; exit 2; }
  local p=${POS[0]}
  load_conf
  [ -n "${ID:-}" ] || { echo "pod-del $p: no sandbox in $DIR (already down)"; return 0; }
  local br node prefix=p; br=$(pod_bridge "$p"); node=$(pod_node "$p")
  br=${br:-br-int}
  use_node "${node:-1}"
  [ "$br" = br-int ] || prefix=x
  [ "$br" = br-ext ] && NNS=$NS.ul
  local pns=$NS-$p host; host=$(veth_host_name $prefix "$p")
  if [ "$br" = br-int ] && nb_alive; then nb --if-exists lsp-del "$p" >/dev/null 2>&1 || warn "lsp-del $p failed"; fi
  if [ "$br" != br-ext ] && alive $N/run/ovs-vswitchd.pid ovs-vswitchd; then vs --if-exists del-port "$br" "$host" >/dev/null 2>&1; fi
  [ -e /var/run/netns/$NNS ] && ip netns exec "$NNS" ip link del "$host" 2>/dev/null
  del_netns "$pns"
  local f; for f in pods links netns; do
    [ -f "$ST/$f" ] || continue
    case $f in
      pods) awk -v p="$p" '$1 != p' "$ST/$f" >"$ST/$f.new" ;;
      links) grep -vx -- "$NNS $host" "$ST/$f" >"$ST/$f.new" ;;
      netns) grep -vx -- "pod $pns" "$ST/$f" >"$ST/$f.new" ;;
    esac
    mv "$ST/$f.new" "$ST/$f"
  done
  echo "pod $p deleted"
}

# node-start K : start again node K's ovs-vswitchd / ovn-controller that are not running (a failover
# test kills one by pid); their pidfiles are recorded already
do_node_start() {
  [ ${#POS[@]} = 1 ] && [[ ${POS[0]} =~ ^[1-4]$ ]] || { echo "$PROG node-start: expected the node number K (1..4)" >&2; exit 2; }
  load_conf
  [ -n "${ID:-}" ] || { echo "$PROG node-start: no sandbox in $DIR" >&2; exit 1; }
  [ "${POS[0]}" -le "$NODES" ] || { echo "$PROG node-start: node ${POS[0]}, but the sandbox has $NODES node(s)" >&2; exit 2; }
  use_node "${POS[0]}"
  # a daemon that does not come back is this command's failure, not a reason to tear the sandbox down
  fail() { echo "$PROG node-start: FAILED: $*" >&2; exit 1; }
  # start_daemon records the pidfile again: drop the old line first so that down stops it once
  local d; for d in ovs-vswitchd ovn-controller; do
    if alive $N/run/$d.pid $d; then echo "node ${POS[0]}: $d runs (pid $(cat $N/run/$d.pid))"; continue; fi
    grep -vx -- "$N/run/$d.pid $d" "$ST/daemons" >"$ST/daemons.new"; mv "$ST/daemons.new" "$ST/daemons"
    rm -f $N/run/$d.pid
    if [ $d = ovs-vswitchd ]; then start_vswitchd; else start_controller; fi
    echo "node ${POS[0]}: started $d (pid $(cat $N/run/$d.pid))"
  done
}

# ------------------------------------------------------------------ main
case $CMD in
  up) do_up ;;
  node-start) need_dir; layout; do_node_start ;;
  down) need_dir; layout; do_down ;;
  env) need_dir; layout; do_env ;;
  status) need_dir; layout; do_status ;;
  pod-add) need_dir; layout; do_pod_add ;;
  pod-del) need_dir; layout; do_pod_del ;;
  outside-add) need_dir; layout; do_outside_add ;;
  -h|--help|help) usage ;;
  *) echo "$PROG: unknown command '$CMD'" >&2; usage ;;
esac
