#!/usr/bin/env bash
# `make demo`: start the local stack, migrate the database and show what runs.
# The streams worker, trainers, API and simulator join this demo as their issues land
# (see README, "Status"); until then it stops here, leaving the stack up for exploration.
set -euo pipefail
cd "$(dirname "$0")/.."
FCL=.venv/bin/fcl

$FCL stack up
$FCL migrate
echo
echo "The local stack is up and the schema is migrated:"
$FCL stack status || true
echo
echo "Settings for other fcl commands and clients: .fcl/stack.env"
echo "Stop everything with: make stack-down"
