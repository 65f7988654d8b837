#!/usr/bin/env python3
"""Regenerate BENCHMARKS.md: every figure the project claims, beside its baseline measured in
the same run, with the machine it ran on.

    python3 scripts/benchmarks.py --cold-build   # everything (about 50 minutes on two cores)
    python3 scripts/benchmarks.py                # all but the cold builds (about 35 minutes)
    python3 scripts/benchmarks.py --rounds 1 --skip-coldstart --skip-cost --skip-sizes   # benches only

What it runs:
  1. the Criterion benches of lift-core (dispatch), lift-middleware (layers, request_path,
     auth), lift-services (discovery) and lift-events (saga), `--rounds` times each; a ratio
     is taken inside each round (Lift and its baseline ran minutes apart at most, in one
     process) and reported as the median with its spread across rounds;
  2. cold starts of release builds, interleaved (`scripts/coldstart.py`): `hello` (Lift)
     against `bare-runtime` (a typed `lambda_runtime` handler, the floor), `bare-hello`
     (`lambda_http`) and `lift-min` (the smallest Lift App: one route), all answering the
     same `GET /hello/{name}`, with where the resident
     memory is at the first response (`/proc/<pid>/smaps`) and `hello`'s code against the
     floor's by crate (`scripts/text_by_crate.py`, on builds that keep their symbols);
  3. cold starts of `mesh` (release) with service registration off, on (the default), and on
     with the shutdown extension, interleaved;
  4. release sizes of `hello`, `orders` and `quotes` (resilience layers only) as declared and
     with every feature of lift-core and lift-middleware on (`--cold-build` adds cold build
     times of `quotes`, both ways);
  5. the AWS calls of a 5-step saga counted on the local emulator (lift-events'
     `tests/emulator.rs`), priced, beside Step Functions' and Lambda durable functions'
     price models for the same saga.
Standard library only; it starts the emulator itself (for step 5 and the idempotency bench's
warm-up) on port LIFT_BENCH_EMULATOR_PORT (default 4580) and stops it before the cold starts.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
if not TARGET.is_absolute():
    TARGET = ROOT / TARGET

# (package, bench target)
BENCHES = [
    ("lift-core", "dispatch"),
    ("lift-middleware", "layers"),
    ("lift-middleware", "request_path"),
    ("lift-middleware", "auth"),
    ("lift-services", "discovery"),
    ("lift-events", "saga"),
]

# (figure, Lift's bench id, baseline's bench id, what the baseline is, target)
PAIRS = [
    ("HTTP API v2 request, Lift App", "dispatch/lift/apigw_v2", "dispatch/typed/apigw_v2",
     "typed `lambda_runtime` handler", "≤ 1.10×"),
    ("HTTP API v2 request, Lift App", "dispatch/lift/apigw_v2", "dispatch/lambda_http/apigw_v2",
     "`lambda_http` handler", ""),
    ("HTTP API v2 request, Lift App with a layer", "dispatch/lift_layered/apigw_v2",
     "dispatch/typed/apigw_v2", "typed `lambda_runtime` handler", ""),
    ("SQS batch of 10, Lift App", "dispatch/lift/sqs_batch_10", "dispatch/typed/sqs_batch_10",
     "typed `lambda_runtime` handler", ""),
    ("HTTP request through the production stack (JWT verifying every token, tenant, resilience)",
     "layers/lift_stack/apigw_v2", "layers/typed/apigw_v2", "typed `lambda_runtime` handler",
     "≤ typed + 3 µs"),
    ("HTTP request through the production stack (JWT verifying every token, tenant, resilience)",
     "layers/lift_stack/apigw_v2", "layers/typed_jwt/apigw_v2",
     "typed `lambda_runtime` handler verifying the same JWT with `jsonwebtoken`", ""),
    ("The same stack as one `App::layer` call (a `ServiceBuilder`)",
     "layers/lift_stack_one_layer/apigw_v2", "layers/typed/apigw_v2",
     "typed `lambda_runtime` handler", ""),
    ("The same stack as configured by default (verified-token cache on), the token seen before",
     "layers/lift_stack_token_cache/apigw_v2", "layers/typed/apigw_v2",
     "typed `lambda_runtime` handler", "≤ typed + 3 µs"),
    ("EMF metrics of an HTTP request (per-route `Requests`, `Errors`, `Latency`)",
     "layers/app/metrics", "layers/app/bare", "the same App without metrics", ""),
    ("Service client call (discovery, breaker, timeout) over a direct call",
     "client_overhead/client", "client_overhead/direct", "the same transport called directly",
     "≤ direct + 2 µs"),
    ("Tenant resolution from a verified JWT", "auth/app_with_tenant_resolution",
     "auth/app_without_tenancy", "the same App without tenancy", ""),
    ("Cache hit (memory)", "request_path/cache_memory_hit", "request_path/app_without_cache",
     "the same App without the cache", ""),
    ("Idempotency hit (local cache)", "request_path/idempotency_local_hit",
     "request_path/app_without_cache", "the same App without idempotency or cache", ""),
]


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print(f"[benchmarks] $ {' '.join(cmd)}", file=sys.stderr, flush=True)
    return subprocess.run(cmd, cwd=ROOT, check=True, text=True, **kw)


def machine() -> dict:
    def first(pattern: str, text: str) -> str:
        m = re.search(pattern, text, re.M)
        return m.group(1).strip() if m else "?"
    cpu = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    mem = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    rustc = subprocess.run(["rustc", "-V"], capture_output=True, text=True).stdout.strip()
    mem_kib = first(r"^MemTotal:\s+(\d+)", mem)
    return {
        "cpu": first(r"^model name\s*:\s*(.+)$", cpu),
        "cores": os.cpu_count(),
        "memory": f"{int(mem_kib) / 1048576:.1f} GiB" if mem_kib.isdigit() else "?",
        "os": f"{platform.system()} {platform.release()}",
        "rustc": rustc,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def read_criterion(since: float) -> dict[str, float]:
    """Mean time in ns of every bench Criterion ran since `since` (a Unix time)."""
    found = {}
    for bench in (TARGET / "criterion").rglob("new/benchmark.json"):
        estimates = bench.parent / "estimates.json"
        if not estimates.exists() or estimates.stat().st_mtime < since:
            continue
        meta = json.loads(bench.read_text())
        found[meta["full_id"]] = json.loads(estimates.read_text())["mean"]["point_estimate"]
    return found


def run_benches(rounds: int, quick: bool) -> list[dict[str, float]]:
    results = []
    timing = ["--warm-up-time", "1", "--measurement-time", "2"] if quick else []
    for r in range(rounds):
        started = time.time()
        for package, bench in BENCHES:
            # With the emulator: the idempotency bench's warm-up call needs DynamoDB.
            sh(["cargo", "bench", "-p", package, "--bench", bench, "--", *timing],
               env=emulator_env(), stdout=subprocess.DEVNULL)
        found = read_criterion(started)
        print(f"[benchmarks] round {r + 1}/{rounds}: {len(found)} benches", file=sys.stderr)
        results.append(found)
    return results


def fmt_time(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.1f} ns"


def spread(values: list[float], fmt) -> str:
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med)
    return f"{fmt(med)} ({fmt(min(values))}–{fmt(max(values))})"


def bench_section(rounds: list[dict[str, float]]) -> list[str]:
    out = ["## Request path and services (Criterion)", "",
           f"{len(rounds)} round(s); each cell is the median across rounds of Criterion's mean, "
           "with the range across rounds in brackets. Ratios are taken inside each round.", "",
           "| figure | Lift | baseline | baseline is | Lift ÷ baseline | Lift − baseline | target |",
           "|---|---|---|---|---|---|---|"]
    for figure, lift, base, what, target in PAIRS:
        if not all(lift in r and base in r for r in rounds):
            out.append(f"| {figure} | not measured (`{lift}` or `{base}` missing) | | | | | {target} |")
            continue
        lv = [r[lift] for r in rounds]
        bv = [r[base] for r in rounds]
        ratios = [r[lift] / r[base] for r in rounds]
        diffs = [r[lift] - r[base] for r in rounds]
        out.append(f"| {figure} (`{lift}`) | {fmt_time(statistics.median(lv))} | "
                   f"{fmt_time(statistics.median(bv))} | {what} | "
                   f"{spread(ratios, lambda v: f'{v:.2f}×')} | "
                   f"{spread(diffs, fmt_time)} | {target} |")
    paired = {p[1] for p in PAIRS} | {p[2] for p in PAIRS}
    rest = sorted(set().union(*rounds) - paired)
    out += ["", "Every other bench of the same run:", "", "| bench | mean |", "|---|---|"]
    for bench in rest:
        values = [r[bench] for r in rounds if bench in r]
        out.append(f"| `{bench}` | {spread(values, fmt_time)} |")
    return out + [""]


# The cold-start binaries, the floor first and `hello` last.
COLDSTART_NAMES = ["bare-runtime", "bare-hello", "lift-min", "hello"]


def coldstart(runs: int) -> list[str]:
    sh(["cargo", "build", "--release", "-p", "hello", "-p", "bare-hello", "--bins"])
    release = TARGET / "release"
    done = sh([sys.executable, "scripts/coldstart.py", "--json", "--runs", str(runs),
               f"bare-runtime={release / 'bare-runtime'}", f"bare-hello={release / 'bare-hello'}",
               f"lift-min={release / 'lift-min'}", f"hello={release / 'hello'}"],
              capture_output=True)
    result = json.loads(done.stdout)
    by = {b["name"]: b for b in result["binaries"]}
    floor = by["bare-runtime"]
    out = ["## Cold start (release builds, `scripts/coldstart.py`)", "",
           f"{runs} interleaved runs of each binary against a local Runtime API stand-in, "
           "`GET /hello/{name}`; time from spawn to the first response, peak RSS.", "",
           "| binary | what | size | median | p90 | peak RSS | time ÷ floor | RSS ÷ floor |",
           "|---|---|---|---|---|---|---|---|"]
    what = {"bare-runtime": "typed `lambda_runtime` (the floor)",
            "bare-hello": "`lambda_http`",
            "lift-min": "Lift, one route and nothing else (what any Lift function pays)",
            "hello": "Lift (target ≤ 1.05× the floor)"}
    for name in COLDSTART_NAMES:
        b = by[name]
        out.append(f"| `{name}` | {what[name]} | {b['size_bytes'] / 1048576:.2f} MiB | "
                   f"{b['median_ms']:.2f} ms | {b['p90_ms']:.2f} ms | {b['rss_median_mib']:.2f} MiB | "
                   f"{b['median_ms'] / floor['median_ms']:.2f}× | "
                   f"{b['rss_median_mib'] / floor['rss_median_mib']:.2f}× |")
    return out + [""] + rss_breakdown(by) + text_breakdown()


def rss_breakdown(by: dict) -> list[str]:
    """Resident memory at the first response by kind, from the cold-start runs."""
    names = COLDSTART_NAMES
    if not all(by[n].get("rss_parts_median_kib") for n in names):
        return []
    out = ["Where the resident memory is at the first response (median KiB of the same runs, "
           "`/proc/<pid>/smaps`; the binary's pages are mapped from the page cache, 64 KiB "
           "around each fault):", "",
           "| kind | " + " | ".join(f"`{n}`" for n in names) + " | `hello` − floor |",
           "|---|" + "---|" * (len(names) + 1)]
    for kind in ["binary text", "binary data", "shared libraries", "heap and stacks"]:
        row = [by[n]["rss_parts_median_kib"][kind] for n in names]
        out.append(f"| {kind} | " + " | ".join(f"{v:.0f}" for v in row) +
                   f" | {row[-1] - row[0]:+.0f} |")
    return out + [""]


def text_breakdown(top: int = 12) -> list[str]:
    """`hello`'s code against the floor's by crate (`scripts/text_by_crate.py`), from builds
    that keep their symbols (a target directory of their own, so the measured binaries stay
    the stripped ones)."""
    symbols = TARGET / "symbols"
    sh(["cargo", "build", "--release", "-p", "hello", "-p", "bare-hello", "--bins",
        "--target-dir", str(symbols)], env={**os.environ, "CARGO_PROFILE_RELEASE_STRIP": "none"})
    done = sh([sys.executable, "scripts/text_by_crate.py", "--json",
               f"bare-runtime={symbols / 'release' / 'bare-runtime'}",
               f"lift-min={symbols / 'release' / 'lift-min'}",
               f"hello={symbols / 'release' / 'hello'}"], capture_output=True)
    result = json.loads(done.stdout)
    crates = result["crates"]
    floor, lift_min, hello = result["totals"]
    out = [f"`hello`'s code by crate against the floor's (`scripts/text_by_crate.py`: a function "
           "counts for the first crate its name mentions besides the standard library's, so "
           "drop glue and serde code written for a Lift type count for Lift): "
           f"{hello / 1024:.0f} KiB against {floor / 1024:.0f} KiB ({lift_min / 1024:.0f} KiB for "
           f"`lift-min`), the {top} largest differences:",
           "", "| crate | `bare-runtime` | `lift-min` | `hello` | `hello` − floor |",
           "|---|---|---|---|---|"]
    for crate in list(crates)[:top]:
        a, m, b = crates[crate]
        out.append(f"| `{crate}` | {a / 1024:.1f} KiB | {m / 1024:.1f} KiB | {b / 1024:.1f} KiB | "
                   f"{(b - a) / 1024:+.1f} KiB |")
    return out + [""]


def registration_coldstart(runs: int) -> list[str]:
    """`mesh` with registration off, on, and on with the shutdown extension."""
    sh(["cargo", "build", "--release", "-p", "mesh", "--bins"])
    mesh = TARGET / "release" / "mesh"
    configs = [("off", "MESH_REGISTER=off"), ("on", None),
               ("on-extension", "MESH_SHUTDOWN_EXTENSION=on")]
    cmd = [sys.executable, "scripts/coldstart.py", "--json", "--runs", str(runs), "--path", "/whoami"]
    for name, setting in configs:
        cmd += ["--set", f"{name}:LIFT_SERVICE_NAME=bench", "--set", f"{name}:LIFT_REGISTRY_TABLE=registry"]
        if setting:
            cmd += ["--set", f"{name}:{setting}"]
    cmd += [f"{name}={mesh}" for name, _ in configs]
    result = json.loads(sh(cmd, capture_output=True).stdout)
    by = {b["name"]: b for b in result["binaries"]}
    off = by["off"]
    what = {"off": "registration off (`MESH_REGISTER=off`)",
            "on": "registration on, the default (target ≤ 1.02× off)",
            "on-extension": "registration on, with the shutdown extension (`.shutdown_extension(true)`)"}
    out = ["## Cold start with service registration (release `mesh`, `scripts/coldstart.py`)", "",
           f"{runs} interleaved runs of each configuration of the same binary "
           f"({off['size_bytes'] / 1048576:.2f} MiB: the DynamoDB and Lambda SDKs), `GET /whoami`. "
           "Registration starts after the first answer, so its registry writes fall outside "
           "the measured window by design; what is measured is what it adds before the "
           "answer. The shutdown extension's registration is one Runtime API round trip "
           "before the runtime's first `next`, against this Python stand-in.", "",
           "| configuration | median | p90 | peak RSS | time ÷ off | RSS ÷ off |",
           "|---|---|---|---|---|---|"]
    for name, _ in configs:
        b = by[name]
        out.append(f"| {what[name]} | {b['median_ms']:.2f} ms | {b['p90_ms']:.2f} ms | "
                   f"{b['rss_median_mib']:.2f} MiB | {b['median_ms'] / off['median_ms']:.2f}× | "
                   f"{b['rss_median_mib'] / off['rss_median_mib']:.2f}× |")
    return out + ["", registry_writes(), ""]


def registry_writes() -> str:
    """The registry writes of one busy environment in an hour, counted in paused time."""
    test = "a_busy_environment_writes_at_most_sixteen_times_an_hour_at_the_defaults"
    done = sh(["cargo", "test", "-p", "lift-services", "--test", "it", test, "--", "--nocapture"],
              capture_output=True)
    m = re.search(r"registry writes in an hour of a busy environment at the defaults: (\d+)",
                  done.stdout + done.stderr)
    count = m.group(1) if m else "not measured"
    return (f"Registry writes per environment per hour at the default renewal interval (5 minutes, "
            f"jittered): **{count}** (one registration, then renewals), counted by `cargo test -p "
            f"lift-services --test it {test}` over an hour of invocations every 10 s in paused "
            "time; an idle environment writes nothing.")


# (binary = package, what it uses, the features that give what a user got before lift-core
# and lift-middleware had feature families: every event source, every middleware family
# with its AWS SDKs, JWT, JSON Schema and compression crates).
SIZES = [
    ("hello", "HTTP only (lift-core without event-source features)", ["lift-core/default"]),
    ("orders", "JWT, DynamoDB, idempotency, authorizer", ["lift-core/default", "lift-middleware/default"]),
    ("quotes", "the resilience layers only (lift-middleware without features)",
     ["lift-core/default", "lift-middleware/default"]),
]


def release_sizes(cold_build: bool) -> list[str]:
    """Release sizes of three functions as declared and with every feature, and optionally
    cold `cargo build --release` times of the resilience-only one."""
    rows = []
    for binary, what, everything in SIZES:
        sizes = []
        for features in ([], ["--features", ",".join(everything)]):
            sh(["cargo", "build", "--release", "-p", binary, "--bin", binary, *features])
            sizes.append((TARGET / "release" / binary).stat().st_size)
        rows.append((binary, what, sizes[0], sizes[1]))
    out = ["## Release sizes by feature set", "",
           "Release profile (fat LTO, one codegen unit, stripped). \"every feature\" builds the "
           "same function with lift-core's and lift-middleware's default features on, which is "
           "what any function got before those crates had feature families.", "",
           "| function | uses | as declared | every feature | saved |", "|---|---|---|---|---|"]
    for binary, what, after, before in rows:
        out.append(f"| `{binary}` | {what} | {after / 1048576:.2f} MiB | {before / 1048576:.2f} MiB | "
                   f"{(before - after) / 1048576:.2f} MiB ({1 - after / before:.0%}) |")
    if cold_build:
        binary, _, everything = SIZES[2]
        timings = []
        for label, features in [("as declared", []), ("every feature", ["--features", ",".join(everything)])]:
            with tempfile.TemporaryDirectory() as tmp:
                started = time.time()
                sh(["cargo", "build", "--release", "-p", binary, "--bin", binary, *features],
                   env=dict(os.environ, CARGO_TARGET_DIR=tmp), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
                timings.append((label, time.time() - started))
        out += ["", f"Cold `cargo build --release -p {binary}` (an empty target directory, the "
                "crates already downloaded): " + ", ".join(f"{label} {secs:.0f} s" for label, secs in timings) + "."]
    return out + [""]


# Prices (US East, on-demand): Step Functions Standard $25 per million state transitions;
# Lambda durable functions $8 per million durable operations; Lambda $0.20 per million
# requests. Steps per saga: 5; a compensated saga fails at its last step and undoes 4.
SFN_TRANSITION = 25.0
DURABLE_OPERATION = 8.0
LAMBDA_REQUEST = 0.20


def models() -> dict[str, tuple[float, float]]:
    """$ per million 5-step sagas (completed, compensated) of the other systems."""
    steps_done, steps_comp = 5, 9  # tasks run: 5; or 5 then 4 compensations
    return {
        "Step Functions Standard (a Task state per step)":
            (steps_done * SFN_TRANSITION, steps_comp * SFN_TRANSITION),
        "Lambda durable functions, inline steps (one invocation)":
            (steps_done * DURABLE_OPERATION + LAMBDA_REQUEST,
             steps_comp * DURABLE_OPERATION + LAMBDA_REQUEST),
        "Lambda durable functions, remote steps (command + callback, invoked per reply)":
            (2 * steps_done * DURABLE_OPERATION + (1 + steps_done) * LAMBDA_REQUEST,
             2 * steps_comp * DURABLE_OPERATION + (1 + steps_comp) * LAMBDA_REQUEST),
    }


def emulator_env() -> dict[str, str]:
    """The environment of a run against the local emulator (on its own port)."""
    port = os.environ.get("LIFT_BENCH_EMULATOR_PORT", "4580")
    return dict(os.environ, LIFT_EMULATOR_PORT=port, AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
                AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1")


def saga_cost() -> list[str]:
    done = sh(["cargo", "test", "-p", "lift-events", "--test", "emulator",
               "aws_calls_per_transition", "--", "--nocapture", "--test-threads", "1"],
              env=emulator_env(), capture_output=True)
    lift: dict[str, float] = {}
    label = None
    for line in done.stderr.splitlines():
        m = re.match(r"^(5 (?:remote|local) steps(?: by \w+)?, \w+): \d+ transitions", line)
        if m:
            label = m.group(1)
        m = re.match(r"^\s+\$\s*([\d.]+)\s+per million sagas", line)
        if m and label:
            lift[label] = float(m.group(1))
    out = ["## Cost per million 5-step sagas", "",
           "Lift's figures come from the AWS calls counted on the local emulator by "
           "`cargo test -p lift-events --test emulator aws_calls_per_transition` (an interceptor "
           "on the real SDK clients of the orchestrator, relay and participant code), priced at US "
           "East on-demand prices (see lift-events' crate docs: SQS at batches of one, 20 ms "
           "invocations at 128 MB). The others are price models of the same saga: Step Functions "
           f"Standard at ${SFN_TRANSITION:g} per million state transitions, durable functions at "
           f"${DURABLE_OPERATION:g} per million durable operations plus ${LAMBDA_REQUEST:.2f} per "
           "million requests (their checkpoint storage and the participants' own work left out, as "
           "for Lift).", "",
           "| system | completed | compensated |", "|---|---|---|"]
    for name, (a, b) in models().items():
        out.append(f"| {name} | ${a:.2f} | ${b:.2f} |")
    base = models()
    remote = "Lambda durable functions, remote steps (command + callback, invoked per reply)"
    for kind, other in [("remote steps by queue", remote), ("remote steps by invocation", remote),
                        ("local", "Lambda durable functions, inline steps (one invocation)")]:
        label = kind if " by " in kind else f"{kind} steps"
        done_cost = lift.get(f"5 {label}, completed")
        comp_cost = lift.get(f"5 {label}, compensated")
        if done_cost is None or comp_cost is None:
            out.append(f"| Lift, {label} | not measured | not measured |")
            continue
        sfn = base["Step Functions Standard (a Task state per step)"]
        dur = base[other]
        out.append(f"| **Lift, {label}** | **${done_cost:.2f}** ({done_cost / sfn[0]:.2f} of Step "
                   f"Functions, {done_cost / dur[0]:.2f} of durable) | **${comp_cost:.2f}** "
                   f"({comp_cost / sfn[1]:.2f}, {comp_cost / dur[1]:.2f}) |")
    return out + [""]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="bench rounds (default 3)")
    ap.add_argument("--full-time", action="store_true",
                    help="Criterion's default warm-up and measurement times (default: 1 s and 2 s)")
    ap.add_argument("--coldstart-runs", type=int, default=40)
    ap.add_argument("--skip-benches", action="store_true")
    ap.add_argument("--skip-coldstart", action="store_true")
    ap.add_argument("--skip-cost", action="store_true")
    ap.add_argument("--skip-sizes", action="store_true")
    ap.add_argument("--cold-build", action="store_true",
                    help="also time cold release builds of the resilience-only function (about 15 minutes)")
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args()

    m = machine()
    load_before = load()
    sections: list[str] = []
    env = emulator_env()
    sh(["bash", "scripts/emulator.sh", "install"], env=env, stdout=subprocess.DEVNULL)
    sh(["bash", "scripts/emulator.sh", "start"], env=env, stdout=subprocess.DEVNULL)
    try:
        if not args.skip_benches:
            sections += bench_section(run_benches(args.rounds, quick=not args.full_time))
        if not args.skip_cost:
            cost = saga_cost()
    finally:
        sh(["bash", "scripts/emulator.sh", "stop"], env=env, stdout=subprocess.DEVNULL)
    # Cold starts with the emulator stopped: nothing else on the cores.
    if not args.skip_coldstart:
        sections += coldstart(args.coldstart_runs)
        sections += registration_coldstart(args.coldstart_runs)
    if not args.skip_cost:
        sections += cost
    if not args.skip_sizes:
        sections += release_sizes(args.cold_build)
    head = [
        "# Benchmarks", "",
        ("Generated by `python3 scripts/benchmarks.py --cold-build` (the whole file; options in its "
         "`--help`). " if args.cold_build else
         "Generated by `python3 scripts/benchmarks.py` (the whole file; `--cold-build` adds cold "
         "build times; options in its `--help`). ")
        + "Every figure sits beside its baseline measured in the same run on the same machine. "
        "This machine is shared and noisy: compare ratios, not absolute times across runs.", "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory']}; {m['os']}; {m['rustc']}",
        f"- Run: {m['date']}; load average {load_before} before, {load()} after", "",
    ]
    args.out.write_text("\n".join(head + sections), encoding="utf-8")
    print(f"[benchmarks] wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
