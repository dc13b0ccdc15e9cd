#!/usr/bin/env bash
# Failover drills against the Vagrant lab, measured as a client sees them.
# Runs on the host in vagrant/ after `vagrant up`. For each drill the client
# connects to the VIP in a tight loop while the master is hit:
#   kill9     kill -9 of the master's hapair (systemd restarts it after 1 s)
#   link      the master's eth1 pulled (`ip link set eth1 down`), restored after
#   stepdown  `hapair ctl step-down` on the master (graceful, make-before-break)
# and the script reports failed connects and the longest outage.
# Usage: ./drill.sh [kill9] [link] [stepdown]     (default: all three)
set -euo pipefail
cd "$(dirname "$0")"

VIP=${VIP:-192.168.56.100}
PORT=${PORT:-21050}
WINDOW=${WINDOW:-10}   # seconds of client traffic per drill
FAULT_AT=${FAULT_AT:-3} # seconds into the window when the fault is injected
SETTLE=${SETTLE:-8}    # seconds for the pair to settle between drills

drills=("$@")
[ ${#drills[@]} -gt 0 ] || drills=(kill9 link stepdown)

on() { vagrant ssh "$1" -c "$2" -- -q 2>/dev/null; }

master() {
  local p
  for p in proxy1 proxy2; do
    if on "$p" "ip -o addr show dev eth1" | grep -q " $VIP/"; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

# Summarise one client log: attempts, failed connects, the longest run from the
# first failed connect to the next successful one, and the impalads that served.
report() {
  awk -v name="$1" -v m="$2" '
    $2 == "ok"   { n++; if (fail_start) { run = $1 - fail_start; if (run > worst) worst = run; fail_start = 0 }
                   served[$3]++ }
    $2 == "fail" { n++; failed++; if (!fail_start) fail_start = $1 }
    END {
      if (fail_start) worst = -1
      s = ""; for (k in served) s = s (s ? "," : "") k
      if (worst < 0)      out = "no successful connect after the fault"
      else if (failed)    out = sprintf("outage %d ms", worst)
      else                out = "no outage"
      printf "drill %-9s master %s: %s, %d failed connects of %d, served by %s\n", name, m, out, failed, n, s
    }' "$3"
}

for d in "${drills[@]}"; do
  m=$(master) || { echo "no proxy holds $VIP: is the lab up?" >&2; exit 1; }
  log=$(mktemp)
  on client "bash /hapair/vagrant/client-loop.sh $VIP $PORT $WINDOW" > "$log" &
  loop=$!
  sleep "$FAULT_AT"
  case $d in
    kill9)    on "$m" "sudo systemctl kill --signal=KILL hapair" ;;
    link)     on "$m" "sudo sh -c 'ip link set eth1 down; sleep $((WINDOW - FAULT_AT + 1)); ip link set eth1 up' </dev/null >/dev/null 2>&1 &" ;;
    stepdown) on "$m" "sudo hapair ctl -c /etc/hapair/hapair.toml step-down" ;;
    *) echo "unknown drill $d (kill9 | link | stepdown)" >&2; exit 64 ;;
  esac
  wait "$loop" || true
  report "$d" "$m" "$log"
  rm -f "$log"
  sleep "$SETTLE"
done
