#!/usr/bin/env bash
# Run the Lift demo: build the example functions, deploy them to a local AWS emulator
# (ministack) and drive them end to end: first the shop (an order saga across five
# functions that find each other in the service registry), then the other examples.
#
#   scripts/demo.sh
#
# Env: LIFT_PROFILE=debug|release (default debug), LIFT_EMULATOR_PORT (default 4566),
#      LIFT_SKIP_BUILD=1 (deploy binaries already built), CARGO_TARGET_DIR (where they are),
#      LIFT_DEMO_KEEP=1 (leave the emulator running afterwards, to try the URLs by hand).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PORT="${LIFT_EMULATOR_PORT:-4566}"
ENDPOINT="http://127.0.0.1:$PORT"
PROFILE="${LIFT_PROFILE:-debug}"

step() { printf '\n==> %s\n' "$*"; }

step "Installing the local AWS emulator (ministack) into .venv"
bash scripts/emulator.sh install

step "Starting the emulator on $ENDPOINT"
if bash scripts/emulator.sh status >/dev/null 2>&1; then
  echo "an emulator already answers on $ENDPOINT: using it, and leaving it running"
elif [[ "${LIFT_DEMO_KEEP:-}" == 1 ]]; then
  bash scripts/emulator.sh start
else
  trap 'step "Stopping the emulator"; bash scripts/emulator.sh stop' EXIT
  bash scripts/emulator.sh start
fi

if [[ "${LIFT_SKIP_BUILD:-}" == 1 ]]; then
  step "Skipping the build (LIFT_SKIP_BUILD=1)"
else
  step "Building the example functions (cargo build --bins --workspace, $PROFILE)"
  if [[ "$PROFILE" == release ]]; then
    cargo build --bins --workspace --release
  else
    cargo build --bins --workspace
  fi
fi

step "Deploying template.yaml to the emulator (stack lift-local)"
.venv/bin/python scripts/deploy.py --profile "$PROFILE" --stack lift-local --endpoint "$ENDPOINT"

TARGET="${CARGO_TARGET_DIR:-target}"
step "The shop: orders placed, sagas driven over the bus and queues, timelines and the service map"
.venv/bin/python scripts/demo_shop.py --stack-file target/lift-local/stack.json --lift "$TARGET/$PROFILE/lift"

step "The other examples: hello, echo, orders, chat, mesh and trip"
.venv/bin/python scripts/demo_calls.py --stack-file target/lift-local/stack.json

if [[ "${LIFT_DEMO_KEEP:-}" == 1 ]]; then
  hello_url="$(.venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["functions"]["hello"]["local_url"])' target/lift-local/stack.json)"
  step "Done. The emulator keeps running; try: curl ${hello_url}hello/you"
  echo "stop it with: scripts/emulator.sh stop"
else
  step "Done in ${SECONDS}s: the examples answered as expected"
fi
