#!/usr/bin/env python3
"""Deploy template.yaml to a local AWS emulator (ministack).

What `sam package` + `sam deploy` would do, without SAM CLI or cargo-lambda:

1. zip each function's host-built binary (``<target-dir>/<profile>/<Binary>``) as ``bootstrap``
   into ``target/lift-local/<binary>.zip``;
2. upload the zips to an S3 bucket (created if missing);
3. write a deploy copy of the template (``target/lift-local/template.deploy.json``) whose
   functions' ``CodeUri`` is the uploaded ``s3://bucket/key``, and upload it beside them;
4. delete an existing stack of the same name, create it again from the uploaded template
   (``TemplateURL``, as ``sam deploy --s3-bucket`` does, so the template may grow past
   CreateStack's 51,200-byte ``TemplateBody``) and wait for CREATE_COMPLETE;
5. write ``target/lift-local/stack.json`` with each function's name and URLs (under
   ``functions`` by binary, the first function of each binary, and under ``resources`` by
   logical id, every function: several functions may run one binary), each
   WebSocket API's id, stage and URLs, each HTTP and REST API's id and URLs, and the
   stack's outputs.

Run it with the project venv's python (``scripts/emulator.sh install`` creates it):

    .venv/bin/python scripts/deploy.py [--profile debug|release] [--stack lift-local]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import zipfile
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"

try:
    import boto3
    import yaml
    from botocore.config import Config
    from botocore.exceptions import ClientError
except ImportError:  # not the venv: re-run under it if it exists
    if VENV_PYTHON.exists() and Path(sys.executable) != VENV_PYTHON:
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *sys.argv])
    sys.exit("deploy.py needs boto3 and PyYAML: run scripts/emulator.sh install first")

STATE_DIR = ROOT / "target" / "lift-local"
FUNCTION_TYPE = "AWS::Serverless::Function"
WEBSOCKET_API_TYPE = "AWS::ApiGatewayV2::Api"
STAGE_TYPE = "AWS::ApiGatewayV2::Stage"
# A fixed timestamp keeps the zip byte-identical for an unchanged binary.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def log(msg: str) -> None:
    print(f"[deploy] {msg}", flush=True)


# --------------------------------------------------------------------------- YAML


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that understands CloudFormation short-form tags (!Ref, !GetAtt, !If, ...).

    Short forms become the long JSON forms ({"Ref": ..}, {"Fn::GetAtt": [..]}, ..), as
    cfn-flip does, so the result can be written out as a JSON template. Dates stay strings.
    """


def _construct_cfn_tag(loader: CfnLoader, tag_suffix: str, node: yaml.Node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        resource, _, attribute = value.partition(".")
        return {"Fn::GetAtt": [resource, attribute]}
    return {f"Fn::{tag_suffix}": value}


CfnLoader.add_multi_constructor("!", _construct_cfn_tag)
# Keep YAML timestamps (AWSTemplateFormatVersion: 2010-09-09) as plain strings.
CfnLoader.add_constructor(
    "tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node)
)


def load_template(path: Path) -> dict:
    with path.open(encoding="utf-8") as f:
        template = yaml.load(f, Loader=CfnLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(template, dict) or "Resources" not in template:
        sys.exit(f"{path}: not a CloudFormation template (no Resources)")
    return template


# --------------------------------------------------------------------------- packaging


def functions_of(template: dict) -> dict[str, str]:
    """Logical id -> binary name for every function built with cargo-lambda."""
    found = {}
    for logical_id, resource in template["Resources"].items():
        if resource.get("Type") != FUNCTION_TYPE:
            continue
        binary = ((resource.get("Metadata") or {}).get("BuildProperties") or {}).get("Binary")
        if not binary:
            sys.exit(f"{logical_id}: no Metadata.BuildProperties.Binary in the template")
        found[logical_id] = binary
    if not found:
        sys.exit(f"no {FUNCTION_TYPE} resources in the template")
    return found


def make_zip(binary_path: Path, zip_path: Path) -> bytes:
    info = zipfile.ZipInfo("bootstrap", date_time=ZIP_DATE)
    info.external_attr = (0o100755 & 0xFFFF) << 16  # regular file, rwxr-xr-x
    info.create_system = 3  # Unix, so the mode bits are honoured
    info.compress_type = zipfile.ZIP_DEFLATED
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr(info, binary_path.read_bytes())
    return zip_path.read_bytes()


def ensure_bucket(s3, bucket: str, region: str) -> None:
    try:
        s3.head_bucket(Bucket=bucket)
        return
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
    log(f"creating bucket s3://{bucket}")
    kwargs = {"Bucket": bucket}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    s3.create_bucket(**kwargs)


def rest_apis_of(template: dict) -> dict[str, str]:
    """Logical id of each REST API (AWS::ApiGateway::RestApi) -> the name of its stage."""
    resources = template["Resources"]
    apis = {}
    for logical_id, resource in resources.items():
        if resource.get("Type") != "AWS::ApiGateway::RestApi":
            continue
        stages = [
            (stage.get("Properties") or {}).get("StageName")
            for stage in resources.values()
            if stage.get("Type") == "AWS::ApiGateway::Stage"
            and (stage.get("Properties") or {}).get("RestApiId") == {"Ref": logical_id}
        ]
        if len(stages) != 1 or not stages[0]:
            sys.exit(f"{logical_id}: expected one AWS::ApiGateway::Stage with a StageName")
        apis[logical_id] = stages[0]
    return apis


def http_apis_of(template: dict) -> list[str]:
    """Logical ids of the HTTP APIs (AWS::ApiGatewayV2::Api, ProtocolType HTTP)."""
    return [
        logical_id for logical_id, resource in template["Resources"].items()
        if resource.get("Type") == WEBSOCKET_API_TYPE
        and (resource.get("Properties") or {}).get("ProtocolType") == "HTTP"
    ]


def websocket_apis_of(template: dict) -> dict[str, str]:
    """Logical id of each WebSocket API -> logical id of its stage."""
    resources = template["Resources"]
    apis = {}
    for logical_id, resource in resources.items():
        props = resource.get("Properties") or {}
        if resource.get("Type") != WEBSOCKET_API_TYPE or props.get("ProtocolType") != "WEBSOCKET":
            continue
        stages = [
            stage_id for stage_id, stage in resources.items()
            if stage.get("Type") == STAGE_TYPE
            and (stage.get("Properties") or {}).get("ApiId") == {"Ref": logical_id}
        ]
        if len(stages) != 1:
            sys.exit(f"{logical_id}: expected one {STAGE_TYPE} with ApiId !Ref {logical_id}, found {len(stages)}")
        apis[logical_id] = stages[0]
    return apis


# --------------------------------------------------------------------------- CloudFormation


def stack_status(cfn, stack: str) -> str | None:
    try:
        stacks = cfn.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as e:
        if "does not exist" in str(e):
            return None
        raise
    return stacks[0]["StackStatus"] if stacks else None


def wait_for(cfn, stack: str, timeout: float) -> str | None:
    """Poll until the stack is in no *_IN_PROGRESS state; return the final status."""
    deadline = time.monotonic() + timeout
    while True:
        status = stack_status(cfn, stack)
        if status is None or not status.endswith("_IN_PROGRESS"):
            return status
        if time.monotonic() > deadline:
            sys.exit(f"stack {stack} still {status} after {timeout:.0f}s")
        time.sleep(1)


def print_failure_events(cfn, stack: str) -> None:
    try:
        events = cfn.describe_stack_events(StackName=stack)["StackEvents"]
    except ClientError as e:
        print(f"  (could not read stack events: {e})", file=sys.stderr)
        return
    failed = [e for e in events if "FAILED" in e.get("ResourceStatus", "")] or events[:15]
    for e in reversed(failed):
        print(
            f"  {e.get('LogicalResourceId', '?')} {e.get('ResourceType', '')} "
            f"{e.get('ResourceStatus', '')}: {e.get('ResourceStatusReason', '')}",
            file=sys.stderr,
        )


def delete_stack(cfn, stack: str, timeout: float) -> None:
    status = stack_status(cfn, stack)
    if status is None or status == "DELETE_COMPLETE":
        return
    if status.endswith("_IN_PROGRESS"):
        status = wait_for(cfn, stack, timeout)
    log(f"deleting existing stack {stack} ({status})")
    cfn.delete_stack(StackName=stack)
    status = wait_for(cfn, stack, timeout)
    if status not in (None, "DELETE_COMPLETE"):
        print_failure_events(cfn, stack)
        sys.exit(f"stack {stack} could not be deleted: {status}")


# --------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", choices=("debug", "release"), default="debug",
                   help="cargo profile whose binaries to deploy (default: debug)")
    p.add_argument("--stack", default="lift-local", help="stack name (default: lift-local)")
    p.add_argument("--endpoint",
                   default=os.environ.get("AWS_ENDPOINT_URL") or "http://127.0.0.1:4566",
                   help="AWS endpoint (default: $AWS_ENDPOINT_URL or http://127.0.0.1:4566)")
    p.add_argument("--target-dir", type=Path,
                   default=Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target"),
                   help="cargo target dir holding <profile>/<binary> (default: $CARGO_TARGET_DIR or target/)")
    p.add_argument("--template", type=Path, default=ROOT / "template.yaml")
    p.add_argument("--bucket", default=None, help="artifact bucket (default: <stack>-artifacts)")
    p.add_argument("--timeout", type=float, default=300, help="seconds to wait per stack operation")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = args.endpoint.rstrip("/")
    # It deletes the stack before creating it again (tables and all), passes the endpoint
    # to every function as AWS_ENDPOINT_URL and zips host-built binaries: fit for a local
    # emulator only. On AWS, use `sam build` and `sam deploy` (README, Deploying).
    host = urlparse(endpoint).hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1") and not host.endswith(".localhost"):
        sys.exit(f"[deploy] {endpoint} is not a local endpoint: this script deploys to a local emulator only")
    bucket = args.bucket or f"{args.stack}-artifacts"
    target_dir = args.target_dir.resolve()

    template = load_template(args.template)
    functions = functions_of(template)

    # Every binary must exist before anything is touched.
    binaries = {}
    for logical_id, binary in functions.items():
        path = target_dir / args.profile / binary
        if not path.is_file():
            flag = " --release" if args.profile == "release" else ""
            sys.exit(f"{path} not found: build it first (cargo build{flag} --workspace --bins)")
        binaries[logical_id] = path

    session = boto3.session.Session(region_name=region)
    cfg = Config(retries={"max_attempts": 3, "mode": "standard"})
    s3 = session.client("s3", endpoint_url=endpoint, config=cfg)
    cfn = session.client("cloudformation", endpoint_url=endpoint, config=cfg)
    log(f"endpoint {endpoint}, region {region}, stack {args.stack}, profile {args.profile}")

    ensure_bucket(s3, bucket, region)
    for logical_id, binary in functions.items():
        zip_path = STATE_DIR / f"{binary}.zip"
        data = make_zip(binaries[logical_id], zip_path)
        key = f"{args.stack}/{binary}-{hashlib.sha256(data).hexdigest()[:16]}.zip"
        s3.put_object(Bucket=bucket, Key=key, Body=data)
        template["Resources"][logical_id]["Properties"]["CodeUri"] = f"s3://{bucket}/{key}"
        log(f"{binary}: {binaries[logical_id]} -> s3://{bucket}/{key} ({len(data) / 1048576:.1f} MiB)")

    deploy_template = STATE_DIR / "template.deploy.json"
    body = json.dumps(template, indent=1).encode("utf-8")
    deploy_template.write_bytes(body + b"\n")
    # CreateStack reads a template from S3 up to 1,000,000 bytes (51,200 inline).
    if len(body) > 1_000_000:
        sys.exit(f"the deploy template is {len(body)} bytes, over CreateStack's 1,000,000")
    template_key = f"{args.stack}/template-{hashlib.sha256(body).hexdigest()[:16]}.json"
    s3.put_object(Bucket=bucket, Key=template_key, Body=body)
    template_url = f"{endpoint.rstrip('/')}/{bucket}/{template_key}"

    parameters = {
        "AwsEndpointUrl": endpoint,
        # The local deployment's secrets; the template has no defaults, so that a deployment
        # to AWS chooses its own. The tests and the demo sign with these.
        "ChatToken": "let-me-in",
        "OrdersAuthSecret": "lift-local-orders-secret-of-32-bytes",
        "ShopAuthSecret": "lift-local-shop-secret-of-32-bytes!",
        # Registry leases renewed every 2 s, so that tests see reports within seconds.
        "MeshRenewSeconds": "2",
    }
    delete_stack(cfn, args.stack, args.timeout)
    log(f"creating stack {args.stack}")
    cfn.create_stack(
        StackName=args.stack,
        TemplateURL=template_url,
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()
                    if k in template.get("Parameters", {})],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    status = wait_for(cfn, args.stack, args.timeout)
    if status != "CREATE_COMPLETE":
        print(f"[deploy] stack {args.stack} ended in {status}; failure events:", file=sys.stderr)
        print_failure_events(cfn, args.stack)
        return 1

    stack = cfn.describe_stacks(StackName=args.stack)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    template_outputs = template.get("Outputs") or {}
    lam = session.client("lambda", endpoint_url=endpoint, config=cfg)

    result = {"endpoint": endpoint, "region": region, "stack": args.stack, "functions": {},
              "resources": {},
              "websockets": {}, "http_apis": {}, "rest_apis": {}, "outputs": outputs}
    for logical_id, binary in functions.items():
        name = cfn.describe_stack_resource(StackName=args.stack, LogicalResourceId=logical_id)[
            "StackResourceDetail"]["PhysicalResourceId"]
        # The output whose value is !GetAtt <LogicalId>Url.FunctionUrl, else ask Lambda;
        # a function without a Function URL (one behind a WebSocket API) has none.
        url = next(
            (outputs[k] for k, o in template_outputs.items()
             if k in outputs and (o or {}).get("Value") == {"Fn::GetAtt": [f"{logical_id}Url", "FunctionUrl"]}),
            None,
        )
        if url is None:
            try:
                url = lam.get_function_url_config(FunctionName=name)["FunctionUrl"]
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                    raise
        entry = {"name": name, "url": url, "local_url": None}
        if url:
            url_id = (urlparse(url).hostname or "").split(".")[0]
            entry["local_url"] = f"{endpoint}/_aws/lambda-url/{url_id}/"
        result["functions"].setdefault(binary, entry)
        result["resources"][logical_id] = entry
        log(f"{logical_id} ({binary}): {name}  {url or '(no Function URL)'}")

    apigw = session.client("apigatewayv2", endpoint_url=endpoint, config=cfg)
    for api_logical_id, stage_logical_id in websocket_apis_of(template).items():
        api_id = cfn.describe_stack_resource(StackName=args.stack, LogicalResourceId=api_logical_id)[
            "StackResourceDetail"]["PhysicalResourceId"]
        stage = template["Resources"][stage_logical_id]["Properties"].get("StageName", "$default")
        api_endpoint = apigw.get_api(ApiId=api_id)["ApiEndpoint"]
        result["websockets"][api_logical_id] = {
            "api_id": api_id,
            "stage": stage,
            # The host clients connect to: the domainName of the API's events.
            "domain_name": urlparse(api_endpoint).hostname,
            "url": f"{api_endpoint}/{stage}",
            # The emulator's path-based form, which needs no wildcard DNS.
            "local_url": f"{endpoint.replace('http', 'ws', 1)}/_aws/execute-api/{api_id}/{stage}",
        }
        log(f"{api_logical_id}: {api_endpoint}/{stage}")

    for api_logical_id in http_apis_of(template):
        api_id = cfn.describe_stack_resource(StackName=args.stack, LogicalResourceId=api_logical_id)[
            "StackResourceDetail"]["PhysicalResourceId"]
        api_endpoint = apigw.get_api(ApiId=api_id)["ApiEndpoint"]
        result["http_apis"][api_logical_id] = {
            "api_id": api_id,
            "url": api_endpoint,
            # The emulator's path-based form; the $default stage adds no path segment.
            "local_url": f"{endpoint}/_aws/execute-api/{api_id}",
        }
        log(f"{api_logical_id}: {api_endpoint}")

    for api_logical_id, stage in rest_apis_of(template).items():
        api_id = cfn.describe_stack_resource(StackName=args.stack, LogicalResourceId=api_logical_id)[
            "StackResourceDetail"]["PhysicalResourceId"]
        result["rest_apis"][api_logical_id] = {
            "api_id": api_id,
            "stage": stage,
            "url": f"https://{api_id}.execute-api.{region}.amazonaws.com/{stage}",
            "local_url": f"{endpoint}/_aws/execute-api/{api_id}/{stage}",
        }
        log(f"{api_logical_id}: {endpoint}/_aws/execute-api/{api_id}/{stage}")

    stack_file = STATE_DIR / "stack.json"
    stack_file.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    log(f"{args.stack} is CREATE_COMPLETE; wrote {stack_file.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
