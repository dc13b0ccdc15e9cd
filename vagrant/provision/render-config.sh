#!/usr/bin/env bash
# Print etc/NAME.toml (written for the seed deployment: VIP 192.0.2.100, peers
# 192.0.2.11/12, impalads 198.51.100.61..65) rewritten for the Vagrant lab.
# Usage: render-config.sh ETC_DIR NAME PEER_IP VIP/PREFIX IMPALAD_IP...
# One server line is kept per impalad given; the rest are removed.
set -euo pipefail
etc=$1 name=$2 peer=$3 vip=$4
shift 4
impalads=("$@")
args=(-e "s|\"192\.0\.2\.100/24\"|\"$vip\"|" -e "s|^peer = \"[0-9.]*\"|peer = \"$peer\"|")
for i in 1 2 3 4 5; do
  if [ "$i" -le "${#impalads[@]}" ]; then
    args+=(-e "s|198\.51\.100\.6$i:|${impalads[$((i - 1))]}:|")
  else
    args+=(-e "/hadoop46$i/d")
  fi
done
sed "${args[@]}" "$etc/$name.toml"
