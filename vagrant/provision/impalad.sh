#!/usr/bin/env bash
# Provision an impalad stand-in: `hapair lab standin impalad` answers on the
# Impala client ports (21000, 21050, 28000) with its name as a banner line, and
# /healthz on the web port 25000.
# Usage: impalad.sh NAME
set -euo pipefail
name=$1
. /hapair/vagrant/provision/common.sh
cat > /etc/systemd/system/impalad-standin.service <<UNIT
[Unit]
Description=impalad stand-in for the hapair Vagrant lab
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=/usr/bin/hapair lab standin impalad --name $name
DynamicUser=yes
Restart=always

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now impalad-standin
