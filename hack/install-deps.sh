#!/bin/bash
# Installs what ycloud's sandbox, tests and demo need, and only what is missing (idempotent).
# Debian packages come from apt (DEBIAN_FRONTEND=noninteractive; `apt-get update` only when something
# is missing); cargo-nextest from crates.io if it is not on PATH.
# The Debian OVS/OVN packages ship system services (ovsdb-server, ovs-vswitchd, ovn-northd,
# ovn-controller). ycloud never uses them: the sandbox runs its own daemons with their own dirs, and a
# package-started ovs-vswitchd with a netdev datapath would collide with ours. So packages are
# installed with a policy-rc.d that forbids starting services, and afterwards any daemon running from
# the system dirs (/var/run/openvswitch, /var/run/ovn) is reported and, with --stop-system-daemons,
# stopped through the packages' own ctl scripts.
set -u
set -o pipefail
PKGS="ovn-central ovn-host openvswitch-switch python3-openvswitch iproute2 ethtool curl tcpdump python3 bc procps coreutils util-linux shellcheck"
STOP=0
for a in "$@"; do
  case $a in
    --stop-system-daemons) STOP=1 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; echo "usage: $0 [--stop-system-daemons]"; exit 0 ;;
    *) echo "install-deps.sh: unknown argument '$a'" >&2; exit 2 ;;
  esac
done

# system daemons from the packages (not ours: ours run under a sandbox dir with their own pidfiles)
system_daemons() {
  local f pid out=""
  for f in /var/run/openvswitch/ovsdb-server.pid /var/run/openvswitch/ovs-vswitchd.pid \
           /var/run/ovn/ovnnb_db.pid /var/run/ovn/ovnsb_db.pid /var/run/ovn/ovn-northd.pid /var/run/ovn/ovn-controller.pid; do
    pid=$(cat "$f" 2>/dev/null) || continue
    [ -n "$pid" ] && [ -r /proc/$pid/cmdline ] && out+=" $(basename "$f" .pid)(pid $pid)"
  done
  echo "$out"
}
sys_before=$(system_daemons)

present=() missing=()
for p in $PKGS; do
  if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ]; then present+=("$p"); else missing+=("$p"); fi
done
echo "already present: ${present[*]:-(none)}"

if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "install-deps.sh: missing ${missing[*]} and not root: cannot apt-get install" >&2; exit 1; }
  # forbid service start-up during the install (exit 101 = "action forbidden" for invoke-rc.d);
  # keep an existing policy-rc.d as it was
  policy=/usr/sbin/policy-rc.d own_policy=0
  if [ ! -e $policy ]; then
    printf '#!/bin/sh\n# written by ycloud hack/install-deps.sh for the duration of an apt-get install\nexit 101\n' >$policy
    chmod +x $policy; own_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"
  rc=$?
  [ $own_policy = 1 ] && rm -f $policy
  [ $rc = 0 ] || { echo "install-deps.sh: apt-get install ${missing[*]} failed (rc=$rc)" >&2; exit $rc; }
  echo "installed: ${missing[*]}"
else
  echo "installed: (nothing: every package was present)"
fi

if command -v cargo-nextest >/dev/null 2>&1 || cargo nextest --version >/dev/null 2>&1; then
  echo "already present: cargo-nextest ($(cargo nextest --version 2>/dev/null | head -n 1))"
elif command -v cargo >/dev/null 2>&1; then
  cargo install cargo-nextest --locked && echo "installed: cargo-nextest"
else
  echo "install-deps.sh: cargo not found: install Rust (rustup) first, then re-run for cargo-nextest" >&2; exit 1
fi

sys_after=$(system_daemons)

if [ -z "$sys_after" ]; then
  echo "system OVS/OVN daemons: none running"
elif [ $STOP = 1 ] || [ "$sys_after" != "$sys_before" ]; then
  # --stop-system-daemons, or the install started some despite policy-rc.d: they must not stay
  echo "system OVS/OVN daemons running:$sys_after: stopping them"
  /usr/share/ovn/scripts/ovn-ctl stop_controller >/dev/null 2>&1
  /usr/share/ovn/scripts/ovn-ctl stop_northd >/dev/null 2>&1
  /usr/share/openvswitch/scripts/ovs-ctl stop >/dev/null 2>&1
  sys_after=$(system_daemons)
  [ -z "$sys_after" ] && echo "stopped system OVS/OVN daemons" || { echo "install-deps.sh: still running:$sys_after" >&2; exit 1; }
else
  echo "WARNING: system OVS/OVN daemons were already running:$sys_after (a system ovs-vswitchd with a netdev" \
       "datapath collides with the sandbox's: re-run with --stop-system-daemons to stop them)" >&2
fi
