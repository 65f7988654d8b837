#!/usr/bin/env python3
"""Drive the deployed example functions end to end (called by scripts/demo.sh).

Reads target/lift-local/stack.json (written by scripts/deploy.py), then:
  * calls hello through its local Function URL: GET /hello/world, POST /greetings, and an
    invalid POST /greetings that must come back as a 4xx with an error body;
  * invokes echo through the Lambda Invoke API with every fixture in ../shared/fixtures/events;
  * places orders through the orders Function URL: an idempotent repeat, a reused key, invalid
    lines, a read served from the cache on the second call, and an unknown order;
  * calls the orders HTTP API and REST API, whose Lambda authorizers check bearer JWTs: no
    token, a forged one and a valid one;
  * talks to the chat WebSocket API with two clients;
  * calls the mesh services alpha and beta, which registered themselves in the service
    registry: each finds the other by name, through Lambda Invoke and a signed Function URL;
  * books two trips through the trip saga (an orchestrator and two participants, commands and
    replies as Lambda invocations): one completes, one refused at its last step compensates
    in reverse.
Exits non-zero if any call does not answer as expected.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"

try:
    import boto3
    from botocore.config import Config
except ImportError:  # not the venv: re-run under it if it exists
    if VENV_PYTHON.exists() and Path(sys.executable) != VENV_PYTHON:
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *sys.argv])
    sys.exit("demo_calls.py needs boto3: run scripts/emulator.sh install first")

GREEN, RED, DIM, RESET = (
    ("\033[32m", "\033[31m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "", "")
)


def short(text: str, limit: int = 110) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def compact(body: bytes | str) -> str:
    """Body as one compact line: re-serialised if it is JSON."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    try:
        return json.dumps(json.loads(body), separators=(",", ":"), ensure_ascii=False)
    except ValueError:
        return body


class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def report(self, ok: bool, line: str) -> None:
        mark = f"{GREEN}ok  {RESET}" if ok else f"{RED}FAIL{RESET}"
        print(f"  {mark} {line}", flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed += 1


def http(method: str, url: str, body: dict | None = None,
         headers: dict | None = None) -> tuple[int, str]:
    status, text, _ = http_with_headers(method, url, body, headers)
    return status, text


def http_with_headers(method: str, url: str, body: dict | None = None,
                      headers: dict | None = None) -> tuple[int, str, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, compact(resp.read()), {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, compact(e.read()), {k.lower(): v for k, v in e.headers.items()}


def drive_hello(hello: dict, checks: Checks) -> None:
    base = hello["local_url"].rstrip("/")
    print(f"hello via its Function URL  {DIM}{hello['local_url']}{RESET}")
    print(f"  {DIM}(on AWS: {hello['url']}){RESET}")
    calls = [
        ("GET", "/hello/world", None, lambda s: s == 200, "200"),
        ("POST", "/greetings", {"name": "Lift"}, lambda s: s == 201, "201"),
        ("POST", "/greetings", {"name": ""}, lambda s: 400 <= s < 500, "4xx"),
        # A streamed NDJSON body; behind a BUFFERED Function URL Lift collects it.
        ("GET", "/stream?count=3", None, lambda s: s == 200, "200"),
    ]
    for method, path, body, expect, expected in calls:
        shown = f"{method:4} {path}" + (f" {json.dumps(body)}" if body is not None else "")
        try:
            status, text = http(method, base + path, body)
        except OSError as e:
            checks.report(False, f"{shown:38} -> {e}")
            continue
        ok = expect(status)
        note = "" if ok else f"   (expected {expected})"
        checks.report(ok, f"{shown:38} -> {status} {short(text, 200)}{note}")


def drive_echo(echo: dict, endpoint: str, region: str, fixtures: Path, checks: Checks) -> None:
    print(f"\necho via the Lambda Invoke API  {DIM}{echo['name']}{RESET}")
    if not fixtures.is_dir():
        print(f"  skipped: no fixtures folder at {fixtures}")
        return
    files = sorted(fixtures.glob("*.json"))
    if not files:
        print(f"  skipped: no *.json in {fixtures}")
        return
    client = boto3.client(
        "lambda", endpoint_url=endpoint, region_name=region,
        config=Config(read_timeout=60, retries={"max_attempts": 1}),
    )
    width = max(len(f.stem) for f in files)
    for f in files:
        try:
            resp = client.invoke(FunctionName=echo["name"], Payload=f.read_bytes())
        except Exception as e:  # noqa: BLE001 - report and go on with the next fixture
            checks.report(False, f"{f.stem:{width}} -> {type(e).__name__}: {short(str(e))}")
            continue
        payload = resp["Payload"].read().decode("utf-8", errors="replace")
        error = resp.get("FunctionError")
        try:
            parsed = json.loads(payload)
        except ValueError:
            parsed = None
        if error:
            summary = f"{resp['StatusCode']} {error}: {short(compact(payload))}"
        elif isinstance(parsed, dict) and "statusCode" in parsed:
            summary = f"{resp['StatusCode']} HTTP {parsed['statusCode']} {short(compact(parsed.get('body') or ''), 70)}"
        else:
            summary = f"{resp['StatusCode']} {short(compact(payload), 80)}"
        # An HTTP answer of 5xx is echo failing, not answering.
        http_failed = isinstance(parsed, dict) and isinstance(parsed.get("statusCode"), int) \
            and parsed["statusCode"] >= 500
        checks.report(not error and resp["StatusCode"] == 200 and not http_failed,
                      f"{f.stem:{width}} -> {summary}")


def drive_chat(api: dict, token: str, checks: Checks) -> None:
    """Two clients on the chat WebSocket API: every answer comes back via PostToConnection."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    url = api["local_url"]
    print(f"\nchat over its WebSocket API  {DIM}{url}{RESET}")
    print(f"  {DIM}(on AWS: wss://{api['api_id']}.execute-api.<region>.amazonaws.com/{api['stage']}){RESET}")

    def exchange(ws, message: dict) -> dict:
        ws.send(json.dumps(message))
        return json.loads(ws.recv(timeout=15))

    try:
        with connect(f"{url}?token=wrong", open_timeout=15):
            checks.report(False, "connect with a wrong token         -> accepted (expected a refusal)")
    except InvalidStatus as e:
        # The function answers 401; the emulator refuses the handshake with a 403.
        status = e.response.status_code
        checks.report(400 <= status < 500, f"connect with a wrong token         -> HTTP {status} (refused)")
    except OSError as e:
        checks.report(False, f"connect with a wrong token         -> {e}")
    try:
        with connect(f"{url}?token={token}", open_timeout=15) as alice, \
                connect(f"{url}?token={token}", open_timeout=15) as bob:
            bob_id = exchange(bob, {"action": "whoami"})["connectionId"]
            me = exchange(alice, {"action": "whoami"})
            checks.report(me.get("type") == "whoami" and me.get("routeKey") == "whoami",
                          f"alice: whoami                      -> {short(json.dumps(me), 90)}")
            alice.send(json.dumps({"action": "send", "to": bob_id, "text": "hi Bob"}))
            got = json.loads(bob.recv(timeout=15))
            checks.report(got.get("text") == "hi Bob",
                          f"alice -> bob: send                 -> bob got {short(json.dumps(got), 70)}")
            odd = exchange(alice, {"action": "dance"})
            checks.report(odd.get("code") == "unknown_action",
                          f"alice: unknown action ($default)   -> {short(json.dumps(odd), 80)}")
    except Exception as e:  # noqa: BLE001 - report and go on
        checks.report(False, f"chat exchange                      -> {type(e).__name__}: {short(str(e))}")


def drive_orders(orders: dict, checks: Checks) -> None:
    """Idempotent order placement, validation and a cached read, through the Function URL."""
    base = orders["local_url"].rstrip("/")
    print(f"\norders via its Function URL  {DIM}{orders['local_url']}{RESET}")
    key = {"idempotency-key": f"demo-{uuid.uuid4().hex[:12]}"}
    order = {"customer": "demo", "items": [{"sku": "A-1", "quantity": 2}]}

    def call(method, path, body=None, headers=None):
        try:
            return http_with_headers(method, base + path, body, headers)
        except OSError as e:
            return 0, str(e), {}

    status, text, _ = call("POST", "/orders", order, key)
    placed = json.loads(text).get("id") if status == 201 else None
    checks.report(status == 201 and placed is not None,
                  f"POST /orders  (Idempotency-Key)        -> {status} {short(text, 150)}")
    status, text, _ = call("POST", "/orders", order, key)
    again = json.loads(text).get("id") if status == 201 else None
    checks.report(status == 201 and again == placed,
                  f"POST /orders  same key, same body      -> {status}, same order {again}")
    status, text, _ = call("POST", "/orders", {**order, "items": [{"sku": "A-1", "quantity": 9}]},
                           key)
    checks.report(status == 422 and "idempotency_key_reused" in text,
                  f"POST /orders  same key, other body     -> {status} {short(text, 120)}")
    status, text, _ = call("POST", "/orders", {"customer": "demo",
                                                "items": [{"sku": "", "quantity": 0}]})
    checks.report(status == 422 and "/items/0/quantity" in text,
                  f"POST /orders  invalid lines            -> {status} {short(text, 120)}")
    for expected in ("miss", "hit"):
        status, text, headers = call("GET", f"/orders/{placed}")
        checks.report(status == 200 and headers.get("x-cache") == expected,
                      f"GET  /orders/{placed}      -> {status} x-cache: {headers.get('x-cache')}")
    status, text, _ = call("GET", "/orders/o-0000000000000000")
    checks.report(status == 404, f"GET  /orders/o-0000000000000000      -> {status} {short(text, 100)}")


def hs256_token(secret: bytes, subject: str, issuer: str = "lift-orders") -> str:
    """A bearer JWT signed with HS256, as the orders authorizer expects."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"sub": subject, "iss": issuer, "exp": int(time.time()) + 600}).encode())
    signature = b64(hmac.new(secret, f"{header}.{claims}".encode(), hashlib.sha256).digest())
    return f"{header}.{claims}.{signature}"


def drive_orders_api(api: dict, secret: bytes, checks: Checks, rest: bool = False) -> None:
    """The orders HTTP API (REQUEST authorizer) or REST API (TOKEN authorizer); the same
    Lift authorizer checks bearer JWTs. A refused token is a 403 deny on the HTTP API, and
    the Unauthorized error (401) on the REST API."""
    base = api["local_url"].rstrip("/")
    kind = "REST API and TOKEN" if rest else "HTTP API and REQUEST"
    print(f"\norders via its {kind} authorizer  {DIM}{api['local_url']}{RESET}")
    order = {"customer": "demo-api", "items": [{"sku": "B-2", "quantity": 1}]}
    calls = [
        ("no token", None, 401),
        ("a forged token", f"Bearer {hs256_token(b'not-the-secret-of-32-bytes-long!!!!', 'eve')}",
         401 if rest else 403),
        ("a valid token", f"Bearer {hs256_token(secret, 'demo-api')}", 201),
    ]
    for what, authorization, expected in calls:
        headers = {"authorization": authorization} if authorization else {}
        try:
            status, text, _ = http_with_headers("POST", base + "/orders", order, headers)
        except OSError as e:
            status, text = 0, str(e)
        checks.report(status == expected,
                      f"POST /orders  {what:24} -> {status} {short(text, 110)}")


TRIP_STEPS = ("reserve", "charge", "confirm")


def saga_history(item: dict) -> list[dict]:
    """A saga item's history: its `h` attribute, one line per entry (see lift-events'
    store), read into the fields the timeline uses."""
    if "h" not in item:
        return json.loads(item["state"]["S"]).get("history", [])
    phases = {"a": "action", "c": "compensation"}
    history = []
    for line in item["h"]["S"].split("\n"):
        version, _, code, *rest = line.split(" ", 3) + [""]
        fields = rest[0].split(" ", 4)
        if code == "R":
            reason = json.loads(fields[4]) if len(fields) > 4 else None
            history.append({"event": "replied", "step": int(fields[0]), "phase": phases[fields[1]],
                            "ok": fields[3] == "1", "reason": reason})
        elif code == "C":
            history.append({"event": "command_sent", "step": int(fields[0]),
                            "phase": phases[fields[1]]})
    return history


def trip_timeline(state: dict) -> str:
    """A saga's replies in order, on one line: `reserve ok, ..., undo charge ok`."""
    parts = []
    for h in state.get("history", []):
        if h.get("event") != "replied":
            continue
        step = TRIP_STEPS[h["step"]] if h["step"] < len(TRIP_STEPS) else f"#{h['step']}"
        what = step if h["phase"] == "action" else f"undo {step}"
        outcome = "ok" if h["ok"] else f"failed ({h.get('reason', '?')})"
        parts.append(f"{what} {outcome}")
    return ", ".join(parts)


def drive_trips(stack: dict, checks: Checks) -> None:
    """Two trips through the trip saga: requested on the bus, read back from the saga table."""
    outputs = stack.get("outputs", {})
    bus, table = outputs["TripBusName"], outputs["TripSagaTableName"]
    print(f"\ntrip saga over its bus, invocations and three functions  {DIM}{bus}{RESET}")
    session = boto3.session.Session(region_name=stack["region"])
    events = session.client("events", endpoint_url=stack["endpoint"])
    dynamodb = session.client("dynamodb", endpoint_url=stack["endpoint"])
    run = uuid.uuid4().hex[:8]
    # trip id -> (what it shows, whether its last step is refused, expected end, compensations)
    trips = {
        f"demo-ok-{run}": ("a trip that completes", False, "completed", []),
        f"demo-full-{run}": ("a trip refused at its last step", True, "compensated", [1, 0]),
    }
    entries = [{
        "EventBusName": bus,
        "Source": "lift.trips",
        "DetailType": "TripRequested",
        "Detail": json.dumps({
            "id": uuid.uuid4().hex,
            "type": "TripRequested",
            "source": "lift.trips",
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "correlationId": f"demo-{trip}",
            "schemaVersion": 1,
            "payload": {"trip": trip, "amount": 120, "fail_last": fail_last},
        }),
    } for trip, (_, fail_last, _, _) in trips.items()]
    try:
        events.put_events(Entries=entries)
    except Exception as e:  # noqa: BLE001 - report and go on
        checks.report(False, f"PutEvents TripRequested x2              -> {type(e).__name__}: {short(str(e))}")
        return
    states: dict[str, dict] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for trip in trips:
            item = dynamodb.get_item(TableName=table, Key={"pk": {"S": trip}},
                                     ConsistentRead=True).get("Item")
            if item:
                # The item's own attributes hold what the state's JSON leaves out.
                state = json.loads(item["state"]["S"])
                state["status"] = item["status"]["S"]
                state["version"] = int(item["v"]["N"])
                state["updated_ms"] = int(item["updated"]["N"])
                state["history"] = saga_history(item)
                states[trip] = state
        if len(states) == len(trips) and all(
                s["status"] in ("completed", "compensated", "needs_attention") for s in states.values()):
            break
        time.sleep(0.2)
    for trip, (what, _, expected, undone) in trips.items():
        state = states.get(trip)
        if state is None:
            checks.report(False, f"{what:31} -> never started")
            continue
        compensated = [h["step"] for h in state.get("history", [])
                       if h.get("event") == "command_sent" and h.get("phase") == "compensation"]
        took = (state["updated_ms"] - state["created_ms"]) / 1000
        ok = state["status"] == expected and compensated == undone
        note = "" if ok else f"   (expected {expected}, compensations {undone})"
        checks.report(ok, f"{what:31} -> {state['status']} v{state['version']} in {took:.2f}s: "
                          f"{short(trip_timeline(state), 120)}{note}")


def drive_mesh(stack: dict, checks: Checks) -> None:
    """alpha and beta find each other in the service registry and call each other by name."""
    outputs = stack["outputs"]
    table = outputs["ServiceRegistryTableName"]
    print(f"\nmesh services registered in the service registry  {DIM}{table}{RESET}")
    client = boto3.client(
        "lambda", endpoint_url=stack["endpoint"], region_name=stack["region"],
        config=Config(read_timeout=60, retries={"max_attempts": 1}),
    )

    def get(function: str, path: str) -> tuple[int, dict | str]:
        raw, _, query = path.partition("?")
        event = {"version": "2.0", "routeKey": "$default", "rawPath": raw, "rawQueryString": query,
                 "headers": {}, "isBase64Encoded": False,
                 "requestContext": {"http": {"method": "GET", "path": raw, "protocol": "HTTP/1.1",
                                             "sourceIp": "127.0.0.1", "userAgent": "demo"},
                                    "requestId": uuid.uuid4().hex, "routeKey": "$default",
                                    "stage": "$default", "timeEpoch": int(time.time() * 1000)}}
        resp = client.invoke(FunctionName=function, Qualifier="live", Payload=json.dumps(event))
        payload = json.loads(resp["Payload"].read() or b"{}")
        try:
            return payload.get("statusCode", 0), json.loads(payload.get("body") or "{}")
        except ValueError:
            return payload.get("statusCode", 0), payload.get("body") or ""

    alpha, beta = outputs["MeshAlphaFunctionName"], outputs["MeshBetaFunctionName"]
    dynamodb = boto3.client("dynamodb", endpoint_url=stack["endpoint"], region_name=stack["region"])

    def registered() -> list[str]:
        # The registry is shared (the shop's functions are in it too): alpha and beta only.
        items = dynamodb.scan(TableName=table).get("Items", [])
        return sorted(item["sk"]["S"].removeprefix("i#") for item in items
                      if item["pk"]["S"] in ("svc#alpha", "svc#beta"))

    # Each registers itself once its first invocation has been answered.
    started = time.monotonic()
    for function in (alpha, beta):
        get(function, "/whoami")
    while len(registered()) < 2 and time.monotonic() - started < 30:
        time.sleep(0.2)
    ids = registered()
    checks.report(len(ids) >= 2, f"both registered {time.monotonic() - started:.1f}s after their first call: "
                                 f"{', '.join(ids)}")
    for caller, function, callee, via in [("alpha", alpha, "beta", "invoke"),
                                         ("alpha", alpha, "beta", "url"),
                                         ("beta", beta, "alpha", "invoke")]:
        path = f"/call/{callee}" + ("?via=url" if via == "url" else "")
        try:
            status, body = get(function, path)
        except Exception as e:  # noqa: BLE001 - report and go on
            checks.report(False, f"{caller} -> {callee} ({via}): {type(e).__name__}: {short(str(e))}")
            continue
        ok = (status == 200 and isinstance(body, dict)
              and body.get("answer", {}).get("service") == callee
              and body.get("answer", {}).get("caller") == caller)
        instance = body.get("instance") if isinstance(body, dict) else body
        checks.report(ok, f"{caller} finds {callee} by name and calls it via {via:6} -> {instance}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stack-file", type=Path, default=ROOT / "target" / "lift-local" / "stack.json")
    p.add_argument("--fixtures", type=Path,
                   default=ROOT.parent / "shared" / "fixtures" / "events")
    args = p.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")

    stack = json.loads(args.stack_file.read_text(encoding="utf-8"))
    functions = stack["functions"]
    checks = Checks()
    drive_hello(functions["hello"], checks)
    drive_echo(functions["echo"], stack["endpoint"], stack["region"], args.fixtures, checks)
    if "orders" in functions:
        drive_orders(functions["orders"], checks)
    secret = os.environ.get("LIFT_ORDERS_AUTH_SECRET", "lift-local-orders-secret-of-32-bytes")
    orders_api = stack.get("http_apis", {}).get("OrdersHttpApi")
    if orders_api:
        drive_orders_api(orders_api, secret.encode(), checks)
    orders_rest = stack.get("rest_apis", {}).get("OrdersRestApi")
    if orders_rest:
        drive_orders_api(orders_rest, secret.encode(), checks, rest=True)
    chat = stack.get("websockets", {}).get("ChatApi")
    if chat:
        drive_chat(chat, os.environ.get("LIFT_CHAT_TOKEN", "let-me-in"), checks)
    if "ServiceRegistryTableName" in stack.get("outputs", {}):
        drive_mesh(stack, checks)
    if "TripBusName" in stack.get("outputs", {}):
        drive_trips(stack, checks)
    print(f"\n{checks.passed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
