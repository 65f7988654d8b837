#!/usr/bin/env bash
# Run Lift's checks and tests, as CI does (.ci/run calls this):
#   format, clippy (also of lift-core without its optional event sources), cargo doc, the
#   local AWS emulator and a deployment of template.yaml on it, cfn-lint, the doc tests,
#   each bench once, then the test suites (nextest, or cargo test without it).
#
#   scripts/test.sh
#
# Env: LIFT_EMULATOR_PORT (default 4566). Cargo's own variables (CARGO_TARGET_DIR, ...) apply.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PORT="${LIFT_EMULATOR_PORT:-4566}"
ENDPOINT="http://127.0.0.1:$PORT"
STEPS=12
STEP=0
STARTED_AT=$SECONDS

# A whole run gains little from incremental compilation, and its cache takes gigabytes
# of disk.
export CARGO_INCREMENTAL=0

step() {
  STEP=$((STEP + 1))
  printf '\n==> [%d/%d] %s   (t=%ds)\n' "$STEP" "$STEPS" "$*" "$((SECONDS - STARTED_AT))"
}

on_exit() {
  local rc=$?
  printf '\n==> disk: target/ holds %s; %s free\n' \
    "$(du -sh "${CARGO_TARGET_DIR:-target}" 2>/dev/null | cut -f1)" \
    "$(df -h . | awk 'NR == 2 { print $4 }')"
  if [[ -n "${STOP_EMULATOR:-}" ]]; then
    printf '\n==> stopping the emulator\n'
    bash scripts/emulator.sh stop || true
  fi
  if ((rc == 0)); then
    printf '\n==> all steps passed in %ds\n' "$((SECONDS - STARTED_AT))"
  else
    printf '\n==> FAILED at step %d/%d (exit %d) after %ds\n' "$STEP" "$STEPS" "$rc" \
      "$((SECONDS - STARTED_AT))" >&2
  fi
  exit "$rc"
}
trap on_exit EXIT
# A run stopped by a signal reports itself failed: without these, the EXIT trap would see
# the status of the last command that finished, and could print "all steps passed".
trap 'exit 130' INT
trap 'exit 143' TERM

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "lift-core without its optional event sources: clippy and unit tests"
cargo clippy -p lift-core --no-default-features --all-targets -- -D warnings
cargo test -p lift-core --no-default-features --lib

step "lift-middleware without its default features, and with each family alone: clippy"
for features in "" jwt dynamodb idempotency validation compression cloudwatch propagate sources; do
  echo "lift-middleware --no-default-features --features '$features'"
  cargo clippy -p lift-middleware --no-default-features --features "$features" -- -D warnings
done

step "cargo doc --workspace --no-deps --all-features (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features

step "local AWS emulator: install and start on $ENDPOINT"
bash scripts/emulator.sh install
if bash scripts/emulator.sh status >/dev/null 2>&1; then
  echo "an emulator already answers on $ENDPOINT: using it, and leaving it running"
else
  STOP_EMULATOR=1
  bash scripts/emulator.sh start
fi

# Binaries and tests in one build: with tokio's test-util a dev-dependency only, building
# the binaries alone would compile tokio and the AWS SDKs a second time.
step "cargo build --workspace --all-targets (the functions' binaries and the tests)"
cargo build --workspace --all-targets

step "deploy template.yaml to the emulator (scripts/deploy.py)"
.venv/bin/python scripts/deploy.py --profile debug --stack lift-local --endpoint "$ENDPOINT"

step "cfn-lint template.yaml"
if [[ -x .venv-lint/bin/cfn-lint ]]; then
  .venv-lint/bin/cfn-lint template.yaml
else
  .venv/bin/cfn-lint template.yaml
fi
echo "template.yaml: no cfn-lint findings"

export AWS_ENDPOINT_URL="$ENDPOINT"
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1
export LIFT_STACK_FILE="$ROOT/target/lift-local/stack.json"

# Doc tests first, so that the run closes on the main suite's summary.
step "cargo test --workspace --doc"
cargo test --workspace --doc

# Every bench once, in the test profile (Criterion's test mode): a bench that panics under
# `cargo bench` (a warm-up off a runtime, a failed assertion) fails here.
step "cargo test --workspace --bench '*' (each bench runs once)"
cargo test --workspace --bench '*'

if cargo nextest --version >/dev/null 2>&1; then
  step "cargo nextest run --workspace --no-fail-fast"
  cargo nextest run --workspace --no-fail-fast
else
  step "cargo test --workspace --no-fail-fast (cargo-nextest is not installed)"
  cargo test --workspace --no-fail-fast
fi

