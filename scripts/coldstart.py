#!/usr/bin/env python3
"""Measure Lambda cold starts of custom-runtime binaries against a local Runtime API stand-in.

For every run a fresh Runtime API server is started on 127.0.0.1 (an ephemeral port), the
binary is spawned as a `provided.al2023` bootstrap would be, and the time from just before the
spawn to the arrival of its first response POST is taken; then its resident memory is read by
kind (the binary's code, the binary's data, shared libraries, heap and stacks: Linux
/proc/<pid>/smaps), the process is killed and its peak RSS read (Linux: VmHWM from /proc,
because os.wait4's ru_maxrss also counts the address space of the forking Python parent;
elsewhere ru_maxrss). Runs of several binaries are interleaved, so drift on the machine hits all alike.

    python3 scripts/coldstart.py [--runs 20] [--event FILE] [--json] NAME=PATH [NAME=PATH ...]

    python3 scripts/coldstart.py hello=target/release/hello echo=target/release/echo

    python3 scripts/coldstart.py --set off:MESH_REGISTER=off on=target/release/mesh off=target/release/mesh

The default event is ../shared/fixtures/events/example-apigw-v2-request-no-authorizer.json
(relative to the repository root) turned into `GET /hello/world`. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_EVENT = ROOT.parent / "shared" / "fixtures" / "events" / "example-apigw-v2-request-no-authorizer.json"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:{name}"
# ru_maxrss is in KiB on Linux and in bytes on macOS.
RSS_TO_KIB = 1 / 1024 if sys.platform == "darwin" else 1


def default_event(path: str = "/hello/world") -> dict:
    """The HTTP API v2 fixture, as `GET path` (a minimal v2 event if it is absent)."""
    try:
        event = json.loads(DEFAULT_EVENT.read_text(encoding="utf-8"))
    except OSError:
        event = {
            "version": "2.0", "routeKey": "$default", "rawQueryString": "", "headers": {},
            "requestContext": {"accountId": "123456789012", "apiId": "api-id", "stage": "$default",
                               "requestId": "id", "timeEpoch": 1583348638390,
                               "http": {"sourceIp": "127.0.0.1", "userAgent": "coldstart"}},
            "isBase64Encoded": False,
        }
    event["rawPath"] = path
    event["rawQueryString"] = ""
    event.pop("queryStringParameters", None)
    http = event.setdefault("requestContext", {}).setdefault("http", {})
    http["method"] = "GET"
    http["path"] = path
    return event


# --------------------------------------------------------------------------- Runtime API


class Invocation:
    """State shared between one run and its Runtime API server."""

    def __init__(self, event_body: bytes, function_name: str) -> None:
        self.event_body = event_body
        self.function_name = function_name
        self.request_id = str(uuid.uuid4())
        self.served = False
        self.done = threading.Event()  # a response or an error arrived
        self.stop = threading.Event()  # release a bootstrap parked on a second /next
        self.arrived_at: float | None = None
        self.kind: str | None = None  # "response", "error" or "init/error"
        self.body = b""
        self.lock = threading.Lock()


class RuntimeApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "RuntimeApiServer"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        pass

    def _reply(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        inv = self.server.invocation
        if self.path == "/2020-01-01/extension/event/next":
            # An extension subscribed to no event waits here for the life of the sandbox.
            inv.stop.wait()
            self.close_connection = True
            return
        if self.path != "/2018-06-01/runtime/invocation/next":
            self._reply(404, b'{"errorMessage":"not found"}')
            return
        with inv.lock:
            first = not inv.served
            inv.served = True
        if not first:
            # One invocation per cold start: park the bootstrap like a frozen sandbox.
            inv.stop.wait()
            self.close_connection = True
            return
        self._reply(200, inv.event_body, {
            "Content-Type": "application/json",
            "Lambda-Runtime-Aws-Request-Id": inv.request_id,
            "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 30_000),
            "Lambda-Runtime-Invoked-Function-Arn": FUNCTION_ARN.format(name=inv.function_name),
            "Lambda-Runtime-Trace-Id": f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};"
                                       f"Parent={uuid.uuid4().hex[:16]};Sampled=0",
        })

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        now = time.perf_counter()
        inv = self.server.invocation
        prefix = f"/2018-06-01/runtime/invocation/{inv.request_id}/"
        if self.path == "/2020-01-01/extension/register":
            # The Extensions API, as Lambda serves it during init.
            self._read_body()
            self._reply(200, json.dumps({"functionName": inv.function_name, "functionVersion": "$LATEST",
                                         "handler": "bootstrap"}).encode(),
                        {"Content-Type": "application/json",
                         "Lambda-Extension-Identifier": str(uuid.uuid4())})
            return
        if self.path in (prefix + "response", prefix + "error"):
            kind = self.path[len(prefix):]
        elif self.path == "/2018-06-01/runtime/init/error":
            kind = "init/error"
        else:
            self._read_body()
            self._reply(404, b'{"errorMessage":"unknown request id or path"}')
            return
        body = self._read_body()
        self._reply(202, b'{"status":"OK"}', {"Content-Type": "application/json"})
        if not inv.done.is_set():
            inv.arrived_at, inv.kind, inv.body = now, kind, body
            inv.done.set()


class RuntimeApiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, invocation: Invocation) -> None:
        super().__init__(("127.0.0.1", 0), RuntimeApiHandler)
        self.invocation = invocation

    def handle_error(self, request, client_address) -> None:
        pass  # a killed bootstrap resets its connections: expected, not worth a traceback


# --------------------------------------------------------------------------- one run


@dataclass
class Run:
    ms: float | None = None
    rss_kib: int | None = None  # peak RSS of the binary (VmHWM, else ru_maxrss)
    wait4_maxrss_kib: int | None = None  # ru_maxrss as os.wait4 reports it
    status: str = ""  # HTTP statusCode of the response, or what went wrong
    rss_parts_kib: dict | None = None  # resident memory by kind at the first response (Linux)


def vm_hwm_kib(pid: int) -> int | None:
    """Peak RSS of the program now running as pid (Linux /proc), or None."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


# Kinds of resident memory, as `rss_parts` sorts the mappings of /proc/<pid>/smaps.
RSS_PARTS = ["binary text", "binary data", "shared libraries", "heap and stacks"]


def rss_parts(pid: int, binary: Path) -> dict | None:
    """Resident memory of pid now, in KiB, by kind: the binary's executable mapping (its
    code), the binary's other mappings (read-only data, unwind tables, relocated and written
    data), shared libraries and the loader, and anonymous memory (heap, thread stacks).
    None where /proc/<pid>/smaps cannot be read."""
    parts = dict.fromkeys(RSS_PARTS, 0)
    try:
        with open(f"/proc/{pid}/smaps", encoding="utf-8", errors="replace") as f:
            kind = None
            for line in f:
                fields = line.split()
                if not fields:
                    continue
                if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
                    perms, path = fields[1], fields[5] if len(fields) > 5 else ""
                    if path == str(binary):
                        kind = "binary text" if "x" in perms else "binary data"
                    elif path.startswith("/"):
                        kind = "shared libraries"
                    else:
                        kind = "heap and stacks"
                elif fields[0] == "Rss:" and kind is not None:
                    parts[kind] += int(fields[1])
    except (OSError, ValueError, IndexError):
        return None
    return parts


def spawn_env(binary: Path, name: str, port: int, extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update(extra or {})
    env.update({
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}",
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_STREAM_NAME": f"2026/01/01/[$LATEST]{uuid.uuid4().hex}",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "_HANDLER": "bootstrap",
        "LAMBDA_TASK_ROOT": str(binary.parent),
    })
    # What Lambda always provides; harmless defaults for SDK clients built at init.
    for key, value in (("AWS_REGION", "us-east-1"), ("AWS_DEFAULT_REGION", "us-east-1"),
                       ("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test")):
        env.setdefault(key, value)
    return env


def one_run(name: str, binary: Path, event_body: bytes, timeout: float,
            extra_env: dict | None = None) -> Run:
    inv = Invocation(event_body, name)
    server = RuntimeApiServer(inv)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    env = spawn_env(binary, name, port, extra_env)
    run = Run()
    exited_early = None
    try:
        started = time.perf_counter()
        proc = subprocess.Popen([str(binary)], env=env, cwd=str(binary.parent),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = started + timeout
        while not inv.done.wait(0.01):
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:  # the bootstrap exited before answering
                exited_early = (status, rusage)
                break
            if time.perf_counter() > deadline:
                break
        hwm = None
        if exited_early is None:
            run.rss_parts_kib = rss_parts(proc.pid, binary)
            hwm = vm_hwm_kib(proc.pid)
            proc.send_signal(signal.SIGKILL)
            _, status, rusage = os.wait4(proc.pid, 0)
        else:
            status, rusage = exited_early
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        # On Linux ru_maxrss never drops below the RSS of the (Python) parent that forked the
        # child: exec keeps the high-water mark of the pre-exec address space. VmHWM belongs
        # to the exec'd program alone, so it is the figure reported where /proc has it.
        run.wait4_maxrss_kib = int(rusage.ru_maxrss * RSS_TO_KIB)
        run.rss_kib = hwm if hwm is not None else run.wait4_maxrss_kib
    finally:
        inv.stop.set()
        server.shutdown()
        server.server_close()

    if not inv.done.is_set():
        run.status = (f"exited with code {proc.returncode} before answering" if exited_early
                      else f"no response within {timeout:.0f}s")
    elif inv.kind != "response":
        run.status = f"{inv.kind}: {inv.body[:120].decode('utf-8', 'replace')}"
    else:
        try:
            run.status = str(json.loads(inv.body).get("statusCode", "ok"))
        except (ValueError, AttributeError):
            run.status = "ok"
        # Only an answer that worked is timed: a 404 of a mistyped --path or a 500 is a
        # failed run, not a figure.
        if run.status == "ok" or run.status.startswith("2"):
            run.ms = (inv.arrived_at - started) * 1000
    return run


# --------------------------------------------------------------------------- report


@dataclass
class Binary:
    name: str
    path: Path
    env: dict = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)

    @property
    def times(self) -> list[float]:
        return sorted(r.ms for r in self.runs if r.ms is not None)

    @property
    def rss(self) -> list[int]:
        return sorted(r.rss_kib for r in self.runs if r.ms is not None and r.rss_kib is not None)

    @property
    def failures(self) -> list[str]:
        return [r.status for r in self.runs if r.ms is None]


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


def summarize(binaries: list[Binary], runs: int, event_desc: str) -> dict:
    out = {"runs": runs, "event": event_desc, "binaries": [],
           "rss_source": "VmHWM" if Path("/proc/self/status").exists() else "ru_maxrss"}
    for b in binaries:
        t, rss = b.times, b.rss
        entry = {
            "name": b.name, "path": str(b.path), "size_bytes": b.path.stat().st_size,
            "ok_runs": len(t), "failed_runs": len(b.failures),
            "failures": sorted(set(b.failures)),
            "response_status": sorted({r.status for r in b.runs if r.ms is not None}),
            "median_ms": None, "p90_ms": None, "min_ms": None, "max_ms": None,
            "rss_median_mib": None, "rss_max_mib": None, "ratio_vs_first": None,
            "samples_ms": [round(r.ms, 3) if r.ms is not None else None for r in b.runs],
            "samples_rss_kib": [r.rss_kib for r in b.runs],
            "samples_wait4_maxrss_kib": [r.wait4_maxrss_kib for r in b.runs],
        }
        if t:
            entry.update({
                "median_ms": statistics.median(t), "p90_ms": percentile(t, 90),
                "min_ms": t[0], "max_ms": t[-1],
            })
        if rss:
            entry.update({"rss_median_mib": statistics.median(rss) / 1024, "rss_max_mib": rss[-1] / 1024})
        parts = [r.rss_parts_kib for r in b.runs if r.ms is not None and r.rss_parts_kib]
        entry["rss_parts_median_kib"] = (
            {kind: statistics.median(p[kind] for p in parts) for kind in RSS_PARTS} if parts else None)
        out["binaries"].append(entry)
    first_median = out["binaries"][0]["median_ms"]
    for entry in out["binaries"]:
        if first_median and entry["median_ms"] is not None:
            entry["ratio_vs_first"] = entry["median_ms"] / first_median
    return out


def print_table(result: dict) -> None:
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    def size(n: int) -> str:
        return f"{n / 1048576:.2f} MiB" if n >= 1048576 else f"{n / 1024:.1f} KiB"

    head = ["binary", "size", "ok/runs", "median ms", "p90 ms", "min ms", "max ms",
            "RSS med MiB", "RSS max MiB", "median vs first", "response"]
    rows = []
    for b in result["binaries"]:
        rows.append([
            b["name"], size(b["size_bytes"]),
            f"{b['ok_runs']}/{b['ok_runs'] + b['failed_runs']}",
            f(b["median_ms"], ".2f"), f(b["p90_ms"], ".2f"), f(b["min_ms"], ".2f"), f(b["max_ms"], ".2f"),
            f(b["rss_median_mib"], ".2f"), f(b["rss_max_mib"], ".2f"),
            "-" if b["ratio_vs_first"] is None else f"{b['ratio_vs_first']:.2f}x",
            ",".join(b["response_status"]) or "-",
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    print(f"cold start: time from spawn to first response POST, {result['runs']} runs per binary")
    print(f"event: {result['event']}")
    print(f"peak RSS: {result['rss_source']} of the bootstrap process\n")
    for i, row in enumerate([head, *rows]):
        print("  ".join(str(c).ljust(w) if j == 0 else str(c).rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    parts = [b for b in result["binaries"] if b.get("rss_parts_median_kib")]
    if parts:
        print("\nresident at the first response, KiB (median; /proc/<pid>/smaps):")
        width = max(len(kind) for kind in RSS_PARTS)
        print(" " * width + "  " + "  ".join(b["name"].rjust(12) for b in parts))
        for kind in RSS_PARTS:
            print(kind.ljust(width) + "  " + "  ".join(
                f"{b['rss_parts_median_kib'][kind]:12.0f}" for b in parts))
    for b in result["binaries"]:
        for reason in b["failures"]:
            print(f"\n{b['name']}: failed run(s): {reason}")


def parse_binary(spec: str) -> Binary:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {spec!r}")
    p = Path(path).expanduser().resolve()
    if not p.is_file() or not os.access(p, os.X_OK):
        raise argparse.ArgumentTypeError(f"{path}: not an executable file")
    return Binary(name, p)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("binaries", nargs="+", type=parse_binary, metavar="NAME=PATH")
    ap.add_argument("--runs", type=int, default=20, help="measured runs per binary (default 20)")
    ap.add_argument("--warmup", type=int, default=1,
                    help="unmeasured runs per binary first, to warm the page cache (default 1)")
    ap.add_argument("--event", type=Path, help="event JSON file (default: HTTP API v2 GET /hello/world)")
    ap.add_argument("--path", default="/hello/world",
                    help="the path of the default event's GET (default /hello/world)")
    ap.add_argument("--timeout", type=float, default=30, help="seconds to wait for a response per run")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--set", action="append", default=[], metavar="NAME:KEY=VALUE",
                    help="an environment variable for one binary's runs (repeatable); the same "
                         "path under two names with different settings compares configurations")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be at least 1")

    if args.event:
        event_body = args.event.read_bytes()
        json.loads(event_body)  # fail early on a malformed file
        event_desc = str(args.event)
    else:
        event_body = json.dumps(default_event(args.path)).encode()
        event_desc = (f"{DEFAULT_EVENT.name} as GET {args.path}" if DEFAULT_EVENT.exists()
                      else f"built-in HTTP API v2 GET {args.path}")

    names = [b.name for b in args.binaries]
    if len(set(names)) != len(names):
        ap.error("binary names must be unique")
    by_name = {b.name: b for b in args.binaries}
    for setting in args.set:
        target, sep, assignment = setting.partition(":")
        key, eq, value = assignment.partition("=")
        if not sep or not eq or not key or target not in by_name:
            ap.error(f"--set {setting!r}: expected NAME:KEY=VALUE with NAME one of {names}")
        by_name[target].env[key] = value
    progress = not args.json and sys.stderr.isatty()
    for _ in range(args.warmup):
        for b in args.binaries:
            one_run(b.name, b.path, event_body, args.timeout, b.env)
    for i in range(args.runs):
        for b in args.binaries:
            b.runs.append(one_run(b.name, b.path, event_body, args.timeout, b.env))
        if progress:
            print(f"\rrun {i + 1}/{args.runs}", end="", file=sys.stderr, flush=True)
    if progress:
        print("\r" + " " * 20 + "\r", end="", file=sys.stderr, flush=True)

    result = summarize(args.binaries, args.runs, event_desc)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 1 if any(b["failed_runs"] for b in result["binaries"]) else 0


if __name__ == "__main__":
    sys.exit(main())
