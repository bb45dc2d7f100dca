"""Test helper: turns the HTTP requests moto's recorder saw into IAM authorization requests
(action, resource ARN, condition keys), for checking a policy against what scripts really call.

Recorded AWS API calls -> iam_policy.Request, by protocol (JSON, query, CBOR, REST).
"""

from __future__ import annotations

import base64
import io
import json
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from helpers.iam_policy import Request

# Request parameter -> SageMaker resource type in its ARN.
SAGEMAKER_RESOURCES = {
    "ModelName": "model",
    "EndpointConfigName": "endpoint-config",
    "EndpointName": "endpoint",
    "TrainingJobName": "training-job",
    "TransformJobName": "transform-job",
    "HyperParameterTuningJobName": "hyper-parameter-tuning-job",
}
ROLE_PARAMETERS = ("ExecutionRoleArn", "RoleArn")


@dataclass(frozen=True)
class Call:
    """One recorded API call: who made it, which service and operation, its parameters."""

    access_key: str
    region: str
    service: str
    operation: str
    params: dict
    method: str
    path: str
    query: dict

    def __str__(self) -> str:
        return f"{self.service}:{self.operation}"


def _body(entry: dict) -> bytes:
    raw = entry.get("body") or ""
    return base64.b64decode(raw) if entry.get("body_encoded") else raw.encode()


def _entries(text: str):
    """The recorder's JSON objects (one per line; concurrent requests may share a line)."""
    decoder, at = json.JSONDecoder(), 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at >= len(text):
            return
        entry, at = decoder.raw_decode(text, at)
        yield entry


def parse_recording(text: str) -> list[Call]:
    calls = []
    for entry in _entries(text):
        headers = {k.lower(): v for k, v in entry["headers"].items()}
        scope = re.search(r"Credential=([^/]+)/\d+/([^/]+)/([^/]+)/",
                          headers.get("authorization", ""))
        if not scope:
            continue  # moto-api calls, unsigned requests
        key, region, service = scope.groups()
        url = urlsplit(entry["url"])
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        body = _body(entry)
        params: dict = {}
        if "x-amz-target" in headers:  # JSON protocol
            operation = headers["x-amz-target"].rsplit(".", 1)[1]
            params = json.loads(body or b"{}")
        elif match := re.match(r"/service/[^/]+/operation/(\w+)", url.path):  # rpc-v2-cbor
            operation = match.group(1)
            params = _cbor(body)
        elif service in ("iam", "sts", "sns", "monitoring") and b"Action=" in body:
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            operation = form.pop("Action")
            params = form
        else:
            operation = ""  # REST: decided from method and path
        calls.append(Call(key, region, service, operation, params, entry["method"],
                          unquote(url.path), query))
    return calls


def _cbor(body: bytes) -> dict:
    """A CBOR request body (CloudWatch's rpc-v2-cbor protocol), with botocore's own decoder."""
    if not body:
        return {}
    from botocore.parsers import RpcV2CBORParser

    return RpcV2CBORParser().parse_data_item(io.BytesIO(body))


def _s3(call: Call) -> list[Request]:
    parts = call.path.lstrip("/").split("/", 1)
    bucket, key = parts[0], parts[1] if len(parts) > 1 else ""
    arn = f"arn:aws:s3:::{bucket}"
    q, m = call.query, call.method
    if not key:
        if m == "PUT" and not q:
            return [Request("s3:CreateBucket", arn)]
        if m in ("GET", "HEAD") and ("list-type" in q or not q or "prefix" in q):
            return [Request("s3:ListBucket", arn, {"s3:prefix": q.get("prefix", "")}
                            if m == "GET" else {})]
        if "location" in q:
            return [Request("s3:GetBucketLocation", arn)]
        raise AssertionError(f"unmapped S3 bucket call {m} {call.path}?{q}")
    obj = f"{arn}/{key}"
    if m == "DELETE":
        action = "s3:AbortMultipartUpload" if "uploadId" in q else "s3:DeleteObject"
    elif m in ("PUT", "POST"):
        action = "s3:PutObject"  # PutObject, CreateMultipartUpload, UploadPart, Complete...
    elif m in ("GET", "HEAD"):
        action = "s3:ListMultipartUploadParts" if "uploadId" in q else "s3:GetObject"
    else:
        raise AssertionError(f"unmapped S3 object call {m} {call.path}")
    return [Request(action, obj)]


def to_requests(call: Call, account: str) -> list[Request]:
    """The authorization requests IAM evaluates for one call (none for GetCallerIdentity)."""
    region, p = call.region, call.params
    if call.service == "sts" and call.operation == "GetCallerIdentity":
        return []  # allowed to everyone, whatever the policy says
    if call.service == "s3":
        return _s3(call)
    if call.service == "sagemaker" and not call.operation:  # sagemaker-runtime (REST)
        match = re.fullmatch(r"/endpoints/([^/]+)/(invocations|async-invocations)", call.path)
        assert match, f"unmapped sagemaker-runtime call {call.method} {call.path}"
        action = "InvokeEndpoint" if match.group(2) == "invocations" else "InvokeEndpointAsync"
        return [Request(f"sagemaker:{action}",
                        f"arn:aws:sagemaker:{region}:{account}:endpoint/{match.group(1)}")]
    action = f"{call.service}:{call.operation}"
    if call.service == "monitoring":
        action = f"cloudwatch:{call.operation}"
    if call.service == "sagemaker":
        prefix = f"arn:aws:sagemaker:{region}:{account}"
        # The operation's own resource (CreateTransformJob: the job, not its ModelName);
        # CreateEndpoint and UpdateEndpoint are authorized on the endpoint and its config.
        noun = re.sub(r"^(Create|Describe|Delete|Update|Stop|List)", "", call.operation)
        own = [f"{noun}Name"]
        if call.operation in ("CreateEndpoint", "UpdateEndpoint"):
            own.append("EndpointConfigName")
        resources = [f"{prefix}:{SAGEMAKER_RESOURCES[name]}/{p[name]}" for name in own
                     if name in SAGEMAKER_RESOURCES and isinstance(p.get(name), str)]
        if "ResourceArn" in p:
            resources.append(p["ResourceArn"])
        if not resources or call.operation.startswith("List"):
            resources = ["*"]
        found = [Request(action, r) for r in resources]
        if p.get("Tags") and call.operation.startswith("Create"):
            found += [Request("sagemaker:AddTags", r) for r in resources]
        for name in ROLE_PARAMETERS:
            if isinstance(p.get(name), str):
                found.append(Request("iam:PassRole", p[name],
                                     {"iam:PassedToService": "sagemaker.amazonaws.com"}))
        for definition in p.get("TrainingJobDefinitions", [p.get("TrainingJobDefinition")]):
            if definition and definition.get("RoleArn"):
                found.append(Request("iam:PassRole", definition["RoleArn"],
                                     {"iam:PassedToService": "sagemaker.amazonaws.com"}))
        return found
    if call.service == "ecr":
        names = p.get("repositoryNames") or [p["repositoryName"]] if (
            "repositoryName" in p or "repositoryNames" in p) else []
        if not names:
            return [Request(action, "*")]
        return [Request(action, f"arn:aws:ecr:{region}:{account}:repository/{n}") for n in names]
    if call.service == "iam":
        if "RoleName" in p:
            return [Request(action, f"arn:aws:iam::{account}:role/{p['RoleName']}")]
        return [Request(action, "*")]
    if call.service == "application-autoscaling":
        if call.operation.startswith("Describe"):
            return [Request(action, "*")]
        return [Request(action, f"arn:aws:application-autoscaling:{region}:{account}:"
                                "scalable-target/0123456789abcdef0123456789abcdef")]
    if action.startswith("cloudwatch:"):
        names = [p["AlarmName"]] if "AlarmName" in p else list(p.get("AlarmNames", []))
        names += [v for k, v in p.items() if re.fullmatch(r"AlarmNames\.member\.\d+", k)]
        if not names:
            return [Request(action, "*")]
        return [Request(action, f"arn:aws:cloudwatch:{region}:{account}:alarm:{n}")
                for n in names]
    raise AssertionError(f"no IAM mapping for {call}")
