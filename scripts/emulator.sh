#!/usr/bin/env bash
# Local AWS emulator (ministack) for Lift's local deployment and tests.
#
#   scripts/emulator.sh install   create .venv with the pinned tools (idempotent)
#   scripts/emulator.sh start     start ministack on 127.0.0.1:${LIFT_EMULATOR_PORT:-4566}
#   scripts/emulator.sh stop      stop the ministack we started, and the functions it spawned
#   scripts/emulator.sh status    say whether it answers
#
# Env: LIFT_EMULATOR_PORT (default 4566), PYTHON (interpreter used to create the venv,
# default python3), LIFT_EMULATOR_START_TIMEOUT (seconds, default 60).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
LINT_VENV="$ROOT/.venv-lint"
STATE_DIR="$ROOT/target/lift-local"
PORT="${LIFT_EMULATOR_PORT:-4566}"
# One log and pid file per port (ministack.log / ministack.pid for the default port).
SUFFIX="$([[ "$PORT" == 4566 ]] || echo "-$PORT")"
LOG_FILE="$STATE_DIR/ministack$SUFFIX.log"
PID_FILE="$STATE_DIR/ministack$SUFFIX.pid"
HOST=127.0.0.1
START_TIMEOUT="${LIFT_EMULATOR_START_TIMEOUT:-60}"

# Pinned versions. ministack 1.5.33 pins botocore 1.43.106: boto3 must match it.
PINS=(
  "ministack[full]==1.5.33"
  "botocore==1.43.106"
  "boto3==1.43.106"
  # The WebSocket client of the demo's chat calls.
  "websockets==15.0.1"
)
LINT_PINS=("cfn-lint==1.58.0")
# Every other package they bring is held at the version CI passed with.
CONSTRAINTS="$ROOT/scripts/emulator-constraints.txt"
MARKER="$VENV/.lift-pins"
MARKER_CONTENT="${PINS[*]} ${LINT_PINS[*]} $(cksum <"$CONSTRAINTS")"

say() { printf '[emulator] %s\n' "$*"; }
die() { printf '[emulator] error: %s\n' "$*" >&2; exit 1; }

# Print the python to use for HTTP probes (the venv's if present).
probe_python() {
  if [[ -x "$VENV/bin/python" ]]; then echo "$VENV/bin/python"; else echo "${PYTHON:-python3}"; fi
}

# True if ministack answers on the port: its health endpoint, with its list of services.
# Another server there (LocalStack also listens on 4566) is not taken for it.
answering() {
  "$(probe_python)" - "$HOST" "$PORT" <<'EOF' >/dev/null 2>&1
import json, sys, urllib.request
try:
    with urllib.request.urlopen(f"http://{sys.argv[1]}:{sys.argv[2]}/_ministack/health", timeout=2) as r:
        body = json.load(r)
    sys.exit(0 if isinstance(body.get("services"), dict) else 1)
except Exception:
    sys.exit(1)
EOF
}

# Pid recorded in the pid file, if that process is still alive.
running_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against a recycled pid: it must still be ministack.
  if [[ -r "/proc/$pid/cmdline" ]] && ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q ministack; then
    return 1
  fi
  echo "$pid"
}

cmd_install() {
  if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$MARKER_CONTENT" && -x "$VENV/bin/ministack" ]]; then
    say "venv up to date ($VENV)"
    return 0
  fi
  local py="${PYTHON:-python3}"
  command -v "$py" >/dev/null || die "$py not found (set PYTHON to a Python 3.11 interpreter)"
  if [[ ! -x "$VENV/bin/python" ]]; then
    say "creating venv $VENV"
    "$py" -m venv "$VENV"
  fi
  say "installing ${PINS[*]} ${LINT_PINS[*]}"
  local pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c "$CONSTRAINTS")
  if "${pip[@]}" "${PINS[@]}" "${LINT_PINS[@]}" && "$VENV/bin/python" -m pip check >/dev/null; then
    rm -rf "$LINT_VENV"
  else
    # cfn-lint conflicts with ministack's pins: keep it in a venv of its own.
    say "cfn-lint does not fit beside ministack's pins; installing it into $LINT_VENV"
    "$VENV/bin/python" -m pip uninstall --quiet --yes cfn-lint >/dev/null 2>&1 || true
    "${pip[@]}" --force-reinstall "${PINS[@]}"
    [[ -x "$LINT_VENV/bin/python" ]] || "$py" -m venv "$LINT_VENV"
    "$LINT_VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c "$CONSTRAINTS" \
      "${LINT_PINS[@]}"
  fi
  "$VENV/bin/python" - <<'EOF' || die "pinned versions did not install as expected"
import importlib.metadata as m
want = {"ministack": "1.5.33", "botocore": "1.43.106", "boto3": "1.43.106"}
bad = {k: m.version(k) for k, v in want.items() if m.version(k) != v}
if bad:
    raise SystemExit(f"unexpected versions: {bad}")
EOF
  printf '%s' "$MARKER_CONTENT" >"$MARKER"
  say "installed ($VENV)"
}

cmd_start() {
  mkdir -p "$STATE_DIR"
  if answering; then
    say "already answering on http://$HOST:$PORT (reusing it)"
    return 0
  fi
  [[ -x "$VENV/bin/ministack" ]] || die "ministack is not installed: run scripts/emulator.sh install"
  local pid
  if pid="$(running_pid)"; then
    say "pid $pid from an earlier start is not answering; stopping it"
    cmd_stop
  fi
  say "starting ministack on http://$HOST:$PORT (log: ${LOG_FILE#"$ROOT"/})"
  # A new session makes ministack the leader of its own process group, so that stop can
  # end it together with the function bootstraps it spawns.
  pid="$(
    # AWS_ENDPOINT_URL is unset so that functions get only what their template passes them;
    # IOT_MTLS_ENABLED=0: no IoT MQTT listener on 0.0.0.0:8883 (clashes between two instances).
    cd "$STATE_DIR" && env -u AWS_ENDPOINT_URL BIND_HOST="$HOST" GATEWAY_PORT="$PORT" IOT_MTLS_ENABLED=0 "$VENV/bin/python" - \
      "$VENV/bin/ministack" "$LOG_FILE" <<'EOF'
import subprocess, sys
with open(sys.argv[2], "wb") as log:
    p = subprocess.Popen([sys.argv[1]], stdin=subprocess.DEVNULL, stdout=log,
                         stderr=subprocess.STDOUT, start_new_session=True)
print(p.pid)
EOF
  )"
  echo "$pid" >"$PID_FILE"
  local waited=0
  until answering; do
    if ! kill -0 "$pid" 2>/dev/null; then
      say "ministack exited during start-up; last log lines:" >&2
      tail -n 30 "$LOG_FILE" >&2 || true
      rm -f "$PID_FILE"
      exit 1
    fi
    if ((waited >= START_TIMEOUT * 2)); then
      say "ministack did not answer within ${START_TIMEOUT}s; last log lines:" >&2
      tail -n 30 "$LOG_FILE" >&2 || true
      cmd_stop >&2
      exit 1
    fi
    sleep 0.5
    waited=$((waited + 1))
  done
  say "ready after ~$((waited / 2))s (pid $pid)"
}

cmd_stop() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$PID_FILE"
    if answering; then
      say "something answers on port $PORT but was not started by this script; leaving it"
    else
      say "not running"
    fi
    return 0
  fi
  say "stopping ministack (process group $pid)"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  local i
  for i in $(seq 1 20); do
    # Done once no process of the group is left.
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 -- "-$pid" 2>/dev/null; then
    say "still running after 10s; sending SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$PID_FILE"
  # ministack unpacks every deployed zip here and never cleans up (a debug build is ~60 MiB).
  rm -rf "${TMPDIR:-/tmp}/ministack-provided-code-$PORT"
  say "stopped"
}

cmd_status() {
  local pid=""
  pid="$(running_pid)" || pid=""
  if answering; then
    say "answering on http://$HOST:$PORT${pid:+ (pid $pid, started by this script)}"
  elif [[ -n "$pid" ]]; then
    say "pid $pid is alive but does not answer on port $PORT"
    return 1
  else
    say "not running"
    return 1
  fi
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 install|start|stop|status" >&2
    exit 2
    ;;
esac
