#!/usr/bin/env python3
"""Run two trip sagas on the deployed stack (deploy/template.yaml) and show their history.

One trip completes; the other is refused at its last step and compensates in reverse
(refund, then release). Exits non-zero when either ends otherwise.

    AWS_ENDPOINT_URL=http://127.0.0.1:4566 .venv/bin/python lift-events/deploy/trip_demo.py [--stack lift-trips]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from datetime import datetime, timezone

import boto3


def envelope(trip: str, amount: int, fail_last: bool) -> dict:
    return {
        "id": uuid.uuid4().hex,
        "type": "TripRequested",
        "source": "lift.demo",
        "time": datetime.now(timezone.utc).isoformat(),
        "correlationId": f"demo-{trip}",
        "schemaVersion": 1,
        "payload": {"trip": trip, "amount": amount, "fail_last": fail_last},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stack", default="lift-trips")
    p.add_argument("--timeout", type=float, default=90)
    args = p.parse_args()
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    session = boto3.session.Session(
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
    )
    cfn = session.client("cloudformation", endpoint_url=endpoint)
    outputs = {o["OutputKey"]: o["OutputValue"]
               for o in cfn.describe_stacks(StackName=args.stack)["Stacks"][0].get("Outputs", [])}
    events = session.client("events", endpoint_url=endpoint)
    dynamodb = session.client("dynamodb", endpoint_url=endpoint)

    run = uuid.uuid4().hex[:8]
    trips = {f"trip-ok-{run}": ("completed", False), f"trip-fail-{run}": ("compensated", True)}
    entries = [{
        "EventBusName": outputs["BusName"],
        "Source": "lift.demo",
        "DetailType": "TripRequested",
        "Detail": json.dumps(envelope(trip, 120, fail_last)),
    } for trip, (_, fail_last) in trips.items()]
    started = time.monotonic()
    events.put_events(Entries=entries)
    print(f"[demo] requested {', '.join(trips)} on {outputs['BusName']}")

    states: dict[str, dict] = {}
    while time.monotonic() - started < args.timeout:
        for trip in trips:
            item = dynamodb.get_item(TableName=outputs["SagaTableName"], Key={"pk": {"S": trip}},
                                     ConsistentRead=True).get("Item")
            if item:
                states[trip] = json.loads(item["state"]["S"])
        if len(states) == len(trips) and all(
                s["status"] in ("completed", "compensated", "needs_attention") for s in states.values()):
            break
        time.sleep(0.5)
    failed = False
    for trip, (expected, _) in trips.items():
        state = states.get(trip)
        if not state:
            print(f"[demo] {trip}: never stored")
            failed = True
            continue
        took = (state["updated_ms"] - state["created_ms"]) / 1000
        print(f"[demo] {trip}: {state['status']} (version {state['version']}, {took:.2f}s)"
              f"{' - ' + state['reason'] if state.get('reason') else ''}")
        for h in state["history"]:
            detail = {k: v for k, v in h.items() if k not in ("version", "at_ms", "event")}
            print(f"    v{h['version']:<3} +{h['at_ms'] - state['created_ms']:>6}ms  {h['event']:<22} {json.dumps(detail)}")
        if state["status"] != expected:
            print(f"[demo] {trip}: expected {expected}")
            failed = True
        if expected == "compensated":
            undone = [h["step"] for h in state["history"]
                      if h["event"] == "command_sent" and h["phase"] == "compensation"]
            if undone != [1, 0]:
                print(f"[demo] {trip}: compensations {undone}, expected [1, 0]")
                failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
