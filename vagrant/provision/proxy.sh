#!/usr/bin/env bash
# Provision a proxy: hapair with the example config adapted to the VM addresses,
# the shared pair key, an admin token, and the systemd unit.
# Usage: proxy.sh NAME OWN_IP PEER_IP VIP/PREFIX IMPALAD_IP...
set -euo pipefail
name=$1 own=$2 peer=$3 vip=$4
shift 4
impalads=("$@")
. /hapair/vagrant/provision/common.sh

install -d -m 0755 /etc/hapair
install -m 0600 /hapair/vagrant/.stage/pair.key /etc/hapair/pair.key
if [ ! -s /etc/hapair/admin.token ]; then
  (umask 077; head -c 32 /dev/urandom | base64 > /etc/hapair/admin.token)
fi

# The example config, with the lab's addresses.
cfg=$(mktemp)
bash /hapair/vagrant/provision/render-config.sh /hapair/etc "$name" "$peer" "$vip" "${impalads[@]}" > "$cfg"
install -m 0644 "$cfg" /etc/hapair/hapair.toml
rm -f "$cfg"
grep -q "$own" <(ip -o addr show dev eth1) || {
  echo "eth1 does not carry $own: check the private network" >&2
  exit 1
}
hapair check -c /etc/hapair/hapair.toml

install -m 0644 /hapair/etc/systemd/hapair.service /etc/systemd/system/hapair.service
systemctl daemon-reload
systemctl enable hapair
systemctl restart hapair
systemctl --no-pager --lines=5 status hapair
