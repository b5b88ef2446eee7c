#!/usr/bin/env bash
# `make demo`: start the local stack, migrate the database, run a streams worker and show events
# becoming jobs. Trainers, the API and the simulator join this demo as their issues land
# (see README, "Status"); the stack stays up for exploration.
set -euo pipefail
cd "$(dirname "$0")/.."
FCL=.venv/bin/fcl

$FCL stack up
$FCL migrate
echo
echo "The local stack is up and the schema is migrated:"
$FCL stack status || true
echo
.venv/bin/python scripts/demo_streams.py
echo
echo "Settings for other fcl commands and clients: .fcl/stack.env"
echo "Stop everything with: make stack-down"
