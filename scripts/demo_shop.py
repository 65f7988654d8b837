#!/usr/bin/env python3
"""Drive the deployed shop (examples/shop) end to end (called by scripts/demo.sh).

Reads target/lift-local/stack.json (written by scripts/deploy.py), registers the shop's
five functions in the service registry with `lift register` (a function registers itself
on its first invocation; this makes the ones nobody has called yet findable), then places
orders through the orders Function URL, as customers of two tenants with bearer JWTs:

  * one that completes (reserve, charge, ship);
  * one whose payment is declined: the reservation is released;
  * one whose shipping fails after payment: refund, then release, in that order;
  * a duplicate request (same Idempotency-Key and body): the first answer, nothing placed;
    the same key from another tenant places its own order;
  * one whose payment participant dies in the middle of the charge (after writing it,
    before replying): the message comes back after its visibility timeout and the saga
    still completes, charged once;
  * one cancelled by its customer (POST /orders/{id}/cancel) while its charge is in doubt
    in the same way: refunded and released without the charge's answer; a completed order
    cannot be cancelled (409);
  * one cancelled by an operator with `lift cancel ID` (a cancel on the orchestrator's
    queue), the same way;
  * one whose shipping fails while refunds to its customer are on hold: the refund is
    refused and the saga needs attention; once the hold is lifted, an operator redrives it
    with `lift redrive ID` and it ends compensated;
  * bad requests: no token, an invalid body, an unknown product, another customer's order.

Then it prints each saga's timeline and the sagas by state (`lift saga`, `lift sagas`),
the service map (`lift map`) and where the SVG picture was written. Exits non-zero if
anything did not go as expected.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo_calls import DIM, RESET, ROOT, Checks, http, short  # noqa: E402

import boto3  # noqa: E402  (demo_calls re-ran us under the venv if needed)

SECRET = os.environ.get("LIFT_SHOP_AUTH_SECRET", "lift-local-shop-secret-of-32-bytes!").encode()
SERVICES = ["orders", "orchestrator", "inventory", "payments", "shipping"]
# A reply in a saga's timeline: `v3  +40ms    reserve action answered ok (attempt 1)`.
REPLY = re.compile(r"(\S+) (action|compensation) (answered ok|failed) \(attempt")
# How long a saga may take: the crash costs the payments queue's visibility timeout (30 s).
WAIT_S = 90
# The statuses a saga ends in (one that needs attention may still be redriven).
FINAL = ("completed", "compensated", "needs_attention")


def token(customer: str, tenant: str) -> str:
    """A bearer JWT as the shop's customers hold: HS256, issuer lift-shop."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"sub": customer, "tenant": tenant, "iss": "lift-shop",
                             "exp": int(time.time()) + 3600}).encode())
    signature = b64(hmac.new(SECRET, f"{header}.{claims}".encode(), hashlib.sha256).digest())
    return f"{header}.{claims}.{signature}"


class Shop:
    def __init__(self, stack: dict, lift: Path) -> None:
        self.stack = stack
        self.out = stack["outputs"]
        self.lift = lift
        self.base = stack["resources"]["ShopOrdersFunction"]["local_url"].rstrip("/")
        self.env = dict(os.environ, AWS_ENDPOINT_URL=stack["endpoint"],
                        AWS_REGION=stack["region"],
                        LIFT_REGISTRY_TABLE=self.out["ServiceRegistryTableName"],
                        LIFT_SAGA_TABLE=self.out["ShopSagaTableName"],
                        LIFT_ORCHESTRATOR_QUEUE=self.out["ShopOrchestratorQueueUrl"])
        self.table = boto3.resource("dynamodb", endpoint_url=stack["endpoint"],
                                    region_name=stack["region"]).Table(self.out["ShopTableName"])

    def run_lift(self, *args: str) -> tuple[int, str]:
        done = subprocess.run([str(self.lift), *args], env=self.env, capture_output=True,
                              text=True, timeout=60)
        return done.returncode, done.stdout + done.stderr

    def post(self, who: str, body: dict, key: str | None = None) -> tuple[int, dict | str]:
        headers = {"authorization": f"Bearer {who}"}
        if key:
            headers["idempotency-key"] = key
        status, text = http("POST", self.base + "/orders", body, headers)
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def get(self, who: str, order: str) -> tuple[int, dict | str]:
        status, text = http("GET", f"{self.base}/orders/{order}", None,
                            {"authorization": f"Bearer {who}"})
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def wait(self, who: str, order: str, until: tuple[str, ...] = FINAL) -> dict:
        """The order's saga once its status is one of `until` (or as it stands after
        WAIT_S)."""
        deadline = time.time() + WAIT_S
        view: dict = {}
        while time.time() < deadline:
            status, body = self.get(who, order)
            if status == 200 and isinstance(body, dict):
                view = body
                if body["status"] in until:
                    return body
            time.sleep(0.5)
        return view

    def record(self, key: str) -> str | None:
        item = self.table.get_item(Key={"pk": key}, ConsistentRead=True).get("Item")
        return item.get("state") if item else None

    def stock(self, sku: str) -> int | None:
        item = self.table.get_item(Key={"pk": f"stock#{sku}"}, ConsistentRead=True).get("Item")
        return int(item["available"]) if item else None


def replies(view: dict) -> list[str]:
    """The timeline's reply lines, in order, as `step phase ok|failed`."""
    lines = []
    for line in view.get("timeline", "").splitlines():
        found = REPLY.search(line)
        if found:
            step, phase, outcome = found.groups()
            lines.append(f"{step} {phase} {'ok' if outcome == 'answered ok' else 'failed'}")
    return lines


def drive(shop: Shop, checks: Checks) -> list[tuple[str, str]]:
    print(f"\nshop: registering the five functions  {DIM}(lift register SERVICE --arn ALIAS){RESET}")
    for service in SERVICES:
        arn = shop.out[f"Shop{service.capitalize()}AliasArn"]
        code, text = shop.run_lift("register", service, "--arn", arn)
        checks.report(code == 0, f"{service:13} {short(text.strip(), 100)}")

    alice = token("alice", "acme")
    bob = token("bob", "acme")
    carol = token("carol", "globex")
    dave = token("dave", "acme")
    print(f"\nshop: orders through the orders Function URL  {DIM}{shop.base}/orders{RESET}")
    sagas: list[tuple[str, str]] = []

    def place(label: str, who: str, body: dict, key: str | None = None) -> str | None:
        started = time.time()
        status, answer = shop.post(who, body, key)
        ok = status == 202 and isinstance(answer, dict)
        checks.report(ok, f"{label:34} POST -> {status} {short(json.dumps(answer), 90)}"
                      f"  {DIM}{(time.time() - started) * 1000:.0f} ms{RESET}")
        if not ok:
            return None
        sagas.append((label, answer["order"]))
        return answer["order"]

    def ended(label: str, who: str, order: str | None, status: str, expect_replies: list[str],
              until: tuple[str, ...] = FINAL) -> dict:
        if order is None:
            checks.report(False, f"{label}: no order to follow")
            return {}
        started = time.time()
        view = shop.wait(who, order, until)
        got = replies(view)
        ok = view.get("status") == status and got == expect_replies
        checks.report(ok, f"{label:34} {view.get('status', 'not started')}"
                      f" in {time.time() - started:.1f} s: {'; '.join(got) or '-'}")
        if not ok:
            print(f"      expected {status}: {'; '.join(expect_replies)}")
        return view

    kettle_before = shop.stock("kettle")
    done = place("1. completes", alice, {"items": [{"sku": "kettle", "quantity": 2}], "ship_to": "Lisbon"})
    declined = place("2. payment declined", alice, {"items": [{"sku": "piano", "quantity": 1}], "ship_to": "Oslo"})
    unshippable = place("3. shipping fails after payment", bob,
                        {"items": [{"sku": "teapot", "quantity": 3}], "ship_to": "Atlantis"})
    crashed = place("5. payments dies mid-charge", alice,
                    {"items": [{"sku": "gremlin", "quantity": 1}], "ship_to": "Porto"})

    def charge_written(order: str | None) -> None:
        """Waits until the charge of `order` is written: for a gremlin order, its payments
        process has then died before replying."""
        deadline = time.time() + WAIT_S
        while order is not None and time.time() < deadline:
            if shop.record(f"payment#{order}") == "done":
                return
            time.sleep(0.2)

    # Placed once order 5's charge is written, so that the two charges never share a
    # delivery. Its payments process dies mid-charge too: cancelled while that charge is
    # in doubt, before SQS delivers the command again (30 s), the saga refunds it without
    # its answer.
    charge_written(crashed)
    doubtful = place("6. cancelled while charging", dave,
                     {"items": [{"sku": "gremlin", "quantity": 1}], "ship_to": "Braga"})
    charge_written(doubtful)
    if doubtful is not None:
        status, text = http("POST", f"{shop.base}/orders/{doubtful}/cancel", None,
                            {"authorization": f"Bearer {dave}"})
        checks.report(status == 202, f"{'6. cancelled while charging':34} POST .../cancel -> {status} "
                      f"{short(text, 80)}")

    view = ended("1. completes", alice, done, "completed", [
        "reserve action ok", "charge action ok", "ship action ok"])
    stock_after = shop.stock("kettle")
    base = kettle_before if kettle_before is not None else 1_000_000
    checks.report(stock_after == base - 2 and shop.record(f"payment#{done}") == "done"
                  and shop.record(f"shipment#{done}") == "done",
                  f"{'':34} kettle stock {base} -> {stock_after}, charged and shipped once")
    ended("2. payment declined", alice, declined, "compensated", [
        "reserve action ok", "charge action failed", "reserve compensation ok"])
    checks.report(shop.record(f"reservation#{declined}") == "undone"
                  and shop.record(f"payment#{declined}") is None,
                  f"{'':34} reservation released, nothing charged")
    ended("3. shipping fails after payment", bob, unshippable, "compensated", [
        "reserve action ok", "charge action ok", "ship action failed",
        "charge compensation ok", "reserve compensation ok"])
    checks.report(shop.record(f"payment#{unshippable}") == "undone"
                  and shop.record(f"reservation#{unshippable}") == "undone",
                  f"{'':34} refunded, then released")

    print(f"\nshop: a duplicate request  {DIM}(same Idempotency-Key and body){RESET}")
    key = f"demo-{uuid.uuid4()}"
    body = {"items": [{"sku": "teapot", "quantity": 1}], "ship_to": "Lisbon"}
    first = place("4. first request", carol, body, key)
    status, again = shop.post(carol, body, key)
    checks.report(status == 202 and isinstance(again, dict) and again.get("order") == first,
                  f"{'4. the same again':34} POST -> {status} same order {first}: nothing new placed")
    status, other = shop.post(alice, body, key)
    checks.report(status == 202 and isinstance(other, dict) and other.get("order") != first,
                  f"{'4. same key, another tenant':34} POST -> {status} its own order "
                  f"{other.get('order') if isinstance(other, dict) else other}")
    if isinstance(other, dict) and "order" in other:
        sagas.append(("4. same key, another tenant", other["order"]))
    ended("4. first request", carol, first, "completed", [
        "reserve action ok", "charge action ok", "ship action ok"])

    print(f"\nshop: a participant that dies mid-step  {DIM}(payments exits after writing the charge,"
          f" before replying; SQS delivers the command again after 30 s){RESET}")
    ended("5. payments dies mid-charge", alice, crashed, "completed", [
        "reserve action ok", "charge action ok", "ship action ok"])
    checks.report(shop.record(f"payment#{crashed}") == "done",
                  f"{'':34} charged once (the second delivery found the charge and replied)")

    print(f"\nshop: an order cancelled while its charge is in doubt  {DIM}(the charge and the goods"
          f" are given back without the charge's answer){RESET}")
    ended("6. cancelled while charging", dave, doubtful, "compensated", [
        "reserve action ok", "charge compensation ok", "reserve compensation ok"])
    checks.report(shop.record(f"payment#{doubtful}") == "undone"
                  and shop.record(f"reservation#{doubtful}") == "undone",
                  f"{'':34} the charge refunded, the goods released")
    status, text = http("POST", f"{shop.base}/orders/{done}/cancel", None,
                        {"authorization": f"Bearer {alice}"})
    checks.report(status == 409, f"{'order 1, completed, cancelled':34} POST -> {status} {short(text, 100)}")

    print(f"\nshop: an operator cancels an order from the command line  {DIM}(lift cancel ID: a cancel"
          f" on the orchestrator's queue){RESET}")
    by_ops = place("7. cancelled by an operator", dave,
                   {"items": [{"sku": "gremlin", "quantity": 1}], "ship_to": "Faro"})
    charge_written(by_ops)
    if by_ops is not None:
        code, text = shop.run_lift("cancel", by_ops, "--reason", "the warehouse is closed")
        checks.report(code == 0, f"{'7. cancelled by an operator':34} lift cancel -> {short(text.strip(), 90)}")
    view = ended("7. cancelled by an operator", dave, by_ops, "compensated", [
        "reserve action ok", "charge compensation ok", "reserve compensation ok"])
    checks.report(view.get("reason") == "cancelled: the warehouse is closed"
                  and shop.record(f"payment#{by_ops}") == "undone",
                  f"{'':34} {view.get('reason')}; the charge refunded")

    print(f"\nshop: a refund refused, then redriven  {DIM}(refunds to erin on hold: the saga needs"
          f" attention; the hold lifted, lift redrive ID sends the refund again under a new"
          f" command id){RESET}")
    erin = token("erin", "acme")
    hold = {"pk": "refund-hold#acme#erin"}
    shop.table.put_item(Item=hold)
    try:
        held = place("8. refund on hold", erin,
                     {"items": [{"sku": "kettle", "quantity": 1}], "ship_to": "Atlantis"})
        view = ended("8. refund on hold", erin, held, "needs_attention", [
            "reserve action ok", "charge action ok", "ship action failed",
            "charge compensation failed"])
        checks.report("on hold" in (view.get("reason") or "")
                      and shop.record(f"payment#{held}") == "done",
                      f"{'':34} {short(view.get('reason') or '-', 100)}; still charged")
    finally:
        # Lifted whatever happened: a hold left behind would stop later runs' refunds.
        shop.table.delete_item(Key=hold)
    if held is not None:
        code, text = shop.run_lift("redrive", held, "--reason", "refunds to erin released")
        checks.report(code == 0, f"{'8. redriven by an operator':34} lift redrive -> {short(text.strip(), 90)}")
    ended("8. redriven by an operator", erin, held, "compensated", [
        "reserve action ok", "charge action ok", "ship action failed", "charge compensation failed",
        "charge compensation ok", "reserve compensation ok"], until=("compensated",))
    checks.report(shop.record(f"payment#{held}") == "undone"
                  and shop.record(f"reservation#{held}") == "undone",
                  f"{'':34} refunded, then released")

    print("\nshop: bad requests")
    cases = [
        ("no token", None, {"items": [{"sku": "kettle", "quantity": 1}], "ship_to": "Lisbon"}, 401),
        ("invalid body", alice, {"items": [], "ship_to": ""}, 422),
        ("unknown product", alice, {"items": [{"sku": "dragon", "quantity": 1}], "ship_to": "Lisbon"}, 422),
        ("out of stock", alice, {"items": [{"sku": "unicorn", "quantity": 1}], "ship_to": "Lisbon"}, 409),
    ]
    for label, who, payload, expected in cases:
        headers = {"authorization": f"Bearer {who}"} if who else {}
        status, text = http("POST", shop.base + "/orders", payload, headers)
        checks.report(status == expected, f"{label:34} POST -> {status} {short(text, 100)}")
    # bob is in alice's tenant: the 404 is the customer check's, not the tenant check's.
    status, text = http("GET", f"{shop.base}/orders/{done}", None,
                        {"authorization": f"Bearer {bob}"})
    checks.report(status == 404, f"{'another customer reads order 1':34} GET  -> {status} {short(text, 100)}")
    return sagas


def report(shop: Shop, sagas: list[tuple[str, str]], checks: Checks) -> None:
    print("\nshop: the sagas' timelines  (lift saga ID)")
    for label, order in sagas:
        code, text = shop.run_lift("saga", order)
        print(f"\n  {label}")
        for line in text.rstrip().splitlines():
            print(f"    {line}")
        checks.report(code == 0, f"lift saga {order}")
    print("\nshop: sagas by state  (lift sagas)")
    code, text = shop.run_lift("sagas", "--limit", "20")
    print("\n".join(f"    {line}" for line in text.rstrip().splitlines()))
    checks.report(code == 0, "lift sagas")
    print("\nshop: the service map  (lift map)")
    svg = ROOT / "target" / "lift-local" / "service-map.svg"
    code, text = shop.run_lift("map", "--svg", str(svg))
    print("\n".join(f"    {line}" for line in text.rstrip().splitlines()))
    calls = re.search(r"orders\b.*-->.*\binventory\b", text)
    checks.report(code == 0 and svg.exists() and calls is not None,
                  f"lift map: orders -> inventory; the picture is in {svg.relative_to(ROOT)}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stack-file", type=Path, default=ROOT / "target" / "lift-local" / "stack.json")
    p.add_argument("--lift", type=Path, required=True, help="the lift binary")
    args = p.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    stack = json.loads(args.stack_file.read_text(encoding="utf-8"))
    shop = Shop(stack, args.lift)
    checks = Checks()
    started = time.time()
    sagas = drive(shop, checks)
    report(shop, sagas, checks)
    print(f"\nshop: {checks.passed} passed, {checks.failed} failed in {time.time() - started:.0f} s")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
