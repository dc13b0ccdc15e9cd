#!/usr/bin/env bash
# Provision the client: it only needs bash and coreutils (timeout) for
# vagrant/client-loop.sh, plus the hapair binary for completeness.
set -euo pipefail
. /hapair/vagrant/provision/common.sh
command -v timeout >/dev/null
