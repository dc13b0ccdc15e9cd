#!/usr/bin/env bash
# Sourced by the provisioning scripts: install the staged hapair binary.
set -euo pipefail
install -m 0755 /hapair/vagrant/.stage/hapair /usr/bin/hapair
hapair --version
