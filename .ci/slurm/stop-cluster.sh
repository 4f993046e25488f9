#!/usr/bin/env bash
# Stop the single-node cluster that start-cluster.sh started (as root). Jobs still
# queued or running are lost with it.
set -euo pipefail
for daemon in slurmd slurmctld; do
    if [[ -f /run/$daemon.pid ]] && kill -0 "$(cat /run/$daemon.pid)" 2>/dev/null; then
        kill "$(cat /run/$daemon.pid)"
    fi
done
