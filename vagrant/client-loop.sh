#!/usr/bin/env bash
# Runs on the client VM: connect to VIP:PORT in a tight loop for SECONDS and print
# one line per attempt: `<unix ms> ok <banner>` or `<unix ms> fail`.
# Usage: client-loop.sh VIP PORT SECONDS
set -uo pipefail
vip=$1 port=$2 secs=$3
end=$(($(date +%s%3N) + secs * 1000))
while now=$(date +%s%3N); [ "$now" -lt "$end" ]; do
  banner=$(timeout 0.3 bash -c "exec 3<>/dev/tcp/$vip/$port && IFS= read -r -t 0.25 l <&3 && printf '%s' \"\$l\"" 2>/dev/null)
  if [ -n "$banner" ]; then
    echo "$now ok $banner"
  else
    echo "$now fail"
    sleep 0.01
  fi
done
