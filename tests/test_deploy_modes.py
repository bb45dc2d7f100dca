"""deploy.sh's other endpoint kinds and safe updates against moto's server: serverless, async
inference, data capture, and guardrail updates with rollback alarms. Requests moto cannot
serve (update-endpoint) are captured and checked against botocore's model of the API.

Tests for deploy.sh --serverless, --async, --capture, --canary/--linear.
"""

from __future__ import annotations

import json

import botocore.session
import pytest
from botocore.validate import ParamValidator

from helpers.aws_emulator import (
    ACCOUNT_ID,
    DEFAULT_BUCKET,
    REGION,
    SCRIPT_KEY,
    client,
    push_image,
    recording_account,
    run_script,
    sent,
)
from helpers.aws_requests import parse_recording, to_requests
from helpers.iam_policy import denied
from helpers.sagemaker_requests import endpoint_config_writes, hosting

BUCKET = DEFAULT_BUCKET
MODEL_DATA = f"s3://{BUCKET}/flower-classifier/v1/model.tar.gz"
ROLE = "SageMakerFlowerClassifierRole"


@pytest.fixture
def account(aws_env, moto_server):
    with recording_account(moto_server, aws_env) as emulator:
        yield emulator


def assert_valid(service: str, operation: str, params: dict) -> None:
    """The request as the API documents it (botocore's service model): names, types, ranges."""
    model = botocore.session.get_session().get_service_model(service)
    report = ParamValidator().validate(params, model.operation_model(operation).input_shape)
    assert not report.has_errors(), report.generate_report()


def deploy(env, *args, **kw):
    return run_script("endpoint/deploy.sh", "--model-data", MODEL_DATA, "--poll-seconds", "1",
                      *args, env=env, timeout=300, **kw)


def role_policies(emulator):
    iam = client(emulator, "iam")
    return [iam.get_role_policy(RoleName=ROLE, PolicyName=n)["PolicyDocument"]
            for n in iam.list_role_policies(RoleName=ROLE)["PolicyNames"]]


@pytest.mark.parametrize(("args", "message"), [
    (["--serverless", "1500"], "must be 1024, 2048"),
    (["--serverless", "7168"], "must be 1024, 2048"),
    (["--serverless", "2048", "--instance-type", "ml.m5.large"], "has no instances"),
    (["--serverless", "2048", "--canary", "10"], "does not go with"),
    (["--serverless", "2048", "--max-concurrency", "201"], "must be 1-200"),
    (["--sns-success", f"arn:aws:sns:{REGION}:{ACCOUNT_ID}:done"], "go with --async"),
    (["--async", f"s3://{BUCKET}/a", "--sns-error", "topic"], "must be SNS topic ARNs"),
    (["--canary", "10", "--linear", "20"], "not both"),
    (["--canary", "100"], "must be 1-99"),
    (["--capture", "bucket/x"], "--capture must look like s3://"),
    (["--capture", f"s3://{BUCKET}/c", "--capture-percent", "101"], "must be 1-100"),
])
def test_bad_arguments(args, message, aws_env):
    result = deploy(aws_env, *args)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_serverless(aws_env, account):
    cpu_digest = push_image(account, tag="latest-cpu")
    result = deploy(aws_env, "--serverless", "3072", "--max-concurrency", "3")
    assert result.returncode == 0, result.stderr
    [request] = sent(account, "CreateEndpointConfig")
    assert_valid("sagemaker", "CreateEndpointConfig", request)
    [variant] = request["ProductionVariants"]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 3072, "MaxConcurrency": 3}
    assert not {"InstanceType", "InitialInstanceCount", "InferenceAmiVersion"} & set(variant)
    [model] = sent(account, "CreateModel")
    assert model["PrimaryContainer"]["Image"].endswith(f"/flower-classifier@{cpu_digest}")
    sm = client(account, "sagemaker")
    assert sm.describe_endpoint(EndpointName="flowers")["EndpointStatus"] == "InService"


def test_serverless_needs_the_cpu_image(aws_env, account):
    result = deploy(aws_env, "--serverless", "2048")
    assert result.returncode != 0
    assert "no image tagged latest-cpu" in result.stderr
    assert "./build_and_push.sh --cpu" in result.stderr


def test_async_and_capture(aws_env, account):
    topic = f"arn:aws:sns:{REGION}:{ACCOUNT_ID}:flowers"
    result = deploy(aws_env, "--instance-type", "ml.m5.large",
                    "--async", f"s3://{BUCKET}/flower-classifier/async",
                    "--sns-success", f"{topic}-done", "--sns-error", f"{topic}-failed",
                    "--capture", f"s3://{BUCKET}/flower-classifier/capture",
                    "--capture-percent", "50")
    assert result.returncode == 0, result.stderr
    [request] = sent(account, "CreateEndpointConfig")
    assert_valid("sagemaker", "CreateEndpointConfig", request)
    assert request["AsyncInferenceConfig"] == {
        "OutputConfig": {
            "S3OutputPath": f"s3://{BUCKET}/flower-classifier/async/output/",
            "S3FailurePath": f"s3://{BUCKET}/flower-classifier/async/failure/",
            "NotificationConfig": {"SuccessTopic": f"{topic}-done",
                                   "ErrorTopic": f"{topic}-failed"}},
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 4}}
    capture = request["DataCaptureConfig"]
    assert capture["EnableCapture"] is True and capture["InitialSamplingPercentage"] == 50
    assert capture["DestinationS3Uri"] == f"s3://{BUCKET}/flower-classifier/capture/"
    assert [o["CaptureMode"] for o in capture["CaptureOptions"]] == ["Input", "Output"]
    [model] = sent(account, "CreateModel")
    assert model["PrimaryContainer"]["Environment"]["SAGEMAKER_MAX_PAYLOAD_IN_MB"] == "100"

    # The execution role lets SageMaker write the answers, failures and captured records, and
    # read the request the client uploaded under the prefix.
    sm = client(account, "sagemaker")
    config = sm.describe_endpoint_config(
        EndpointConfigName=sm.describe_endpoint(EndpointName="flowers")["EndpointConfigName"])
    config = {**config, "AsyncInferenceConfig": request["AsyncInferenceConfig"],
              "DataCaptureConfig": capture}  # as sent (moto may drop fields)
    described = sm.describe_model(ModelName=model["ModelName"])
    requests = [*hosting(described, "flowers", REGION, ACCOUNT_ID),
                *endpoint_config_writes(config, "flowers")]
    requests += [r for r in hosting({"PrimaryContainer": {
        "Image": described["PrimaryContainer"]["Image"],
        "ModelDataUrl": f"s3://{BUCKET}/flower-classifier/async/input/photo.jpg"}},
        "flowers", REGION, ACCOUNT_ID) if r.action == "s3:GetObject"]
    assert denied(role_policies(account), requests) == []


@pytest.mark.parametrize(("flag", "routing"), [
    ("--canary", {"Type": "CANARY", "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10},
                  "WaitIntervalInSeconds": 120}),
    ("--linear", {"Type": "LINEAR", "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 10},
                  "WaitIntervalInSeconds": 120}),
])
def test_guarded_update_with_rollback_alarms(aws_env, account, flag, routing):
    args = ["--instance-type", "ml.m5.large", "--instance-count", "2", flag, "10",
            "--bake-seconds", "120", "--latency-ms", "1500"]
    result = deploy(aws_env, *args)
    assert result.returncode == 0, result.stderr
    assert "guardrails apply to updates" in result.stderr
    alarms = client(account, "cloudwatch").describe_alarms()["MetricAlarms"]
    by_name = {a["AlarmName"]: a for a in alarms}
    assert sorted(by_name) == ["flowers-5xx", "flowers-latency"]
    assert by_name["flowers-5xx"]["MetricName"] == "Invocation5XXErrors"
    assert by_name["flowers-latency"]["MetricName"] == "ModelLatency"
    assert by_name["flowers-latency"]["Threshold"] == 1_500_000  # microseconds
    dims = sorted((d["Name"], d["Value"]) for d in by_name["flowers-5xx"]["Dimensions"])
    assert dims == [("EndpointName", "flowers"), ("VariantName", "AllTraffic")]
    for params in sent(account, "PutMetricAlarm"):
        assert_valid("cloudwatch", "PutMetricAlarm", params)

    # moto has no UpdateEndpoint (HTTP 500): the request is captured and checked against the
    # API's documented shape instead.
    account.start_recording()
    result = deploy({**aws_env, "AWS_MAX_ATTEMPTS": "1"}, *args)
    assert result.returncode != 0 and "update-endpoint failed" in result.stderr
    [update] = sent(account, "UpdateEndpoint")
    assert_valid("sagemaker", "UpdateEndpoint", update)
    policy = update["DeploymentConfig"]["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"] == routing
    assert policy["TerminationWaitInSeconds"] == 120
    assert update["DeploymentConfig"]["AutoRollbackConfiguration"] == {
        "Alarms": [{"AlarmName": "flowers-5xx"}, {"AlarmName": "flowers-latency"}]}

    result = run_script("endpoint/delete.sh", "--poll-seconds", "1", env=aws_env)
    assert result.returncode == 0, result.stderr
    assert client(account, "cloudwatch").describe_alarms()["MetricAlarms"] == []


def test_plain_update_stays_all_at_once(aws_env, account):
    assert deploy(aws_env, "--instance-type", "ml.m5.large").returncode == 0
    account.start_recording()
    result = deploy({**aws_env, "AWS_MAX_ATTEMPTS": "1"}, "--instance-type", "ml.m5.large")
    assert result.returncode != 0
    [update] = sent(account, "UpdateEndpoint")
    assert_valid("sagemaker", "UpdateEndpoint", update)
    assert set(update) == {"EndpointName", "EndpointConfigName"}
    assert sent(account, "PutMetricAlarm") == []
    assert json.dumps(update).count("flowers-") == 1


def test_client_checks_the_serverless_payload_limit(aws_env, moto_server, monkeypatch):
    """client.py --serverless refuses a body over 4 MB before the call, sends one under it."""
    from helpers.aws_emulator import load_client

    endpoint_client = load_client()

    moto_server.set_endpoint_results([{"Body": '{"predictions": []}',
                                       "ContentType": "application/json"}])
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION"):
        monkeypatch.setenv(key, aws_env[key])
    body = b"0" * (4 * 1024 * 1024 + 1)  # ASCII: moto's server decodes bodies as UTF-8
    with pytest.raises(ValueError, match="over a serverless endpoint's 4 MB limit"):
        endpoint_client.predict("flowers", body, content_type="image/jpeg", serverless=True)
    small = b"0" * (4 * 1024 * 1024 - 1)
    assert endpoint_client.predict("flowers", small, content_type="image/jpeg",
                                   serverless=True) == {"predictions": []}


def test_client_async_uploads_invokes_and_waits(aws_env, account, tmp_path):
    """client.py --async: the photo goes to S3 as it is, invoke_endpoint_async names it, and the
    answer is read from the output location (moto writes its canned answer there)."""
    import subprocess
    import sys

    from helpers.aws_emulator import REPO

    client(account, "s3").create_bucket(Bucket=BUCKET)
    answer = {"predictions": [{"class": "74", "label": "rose", "probability": 0.9}]}
    account._post("/moto-api/static/sagemaker/async-endpoint-results", {
        "results": [{"data": json.dumps(answer)},
                    {"is_failure": True, "data": "model failed on it"}]})
    photo = REPO / "local_test" / "payloads" / "rose.jpg"
    prefix = f"s3://{BUCKET}/flower-classifier/async/input"

    def run_client(*extra):
        return subprocess.run([sys.executable, str(REPO / "endpoint" / "client.py"), "flowers",
                               str(photo), "--async", prefix, *extra], env=aws_env,
                              capture_output=True, text=True, timeout=120)

    result = run_client("--top-k", "1")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == answer
    calls = [c for c in parse_recording(account.recording()) if c.access_key == SCRIPT_KEY]
    requests = [r for c in calls for r in to_requests(c, ACCOUNT_ID)]
    assert "sagemaker:InvokeEndpointAsync" in {r.action for r in requests}
    # The deployer may do all of it (moto answers from a bucket of its own, left out here).
    deployer = [json.loads(run_script("iam/render_policy.sh", "iam/deployer-policy.json",
                                      env=aws_env).stdout)]
    ours = [r for r in requests if not r.resource.startswith("arn:aws:s3:::sagemaker-output-")]
    assert denied(deployer, ours) == []
    uploads = client(account, "s3").list_objects_v2(
        Bucket=BUCKET, Prefix="flower-classifier/async/input/")["Contents"]
    assert len(uploads) == 1 and uploads[0]["Key"].endswith(".jpg")
    body = client(account, "s3").get_object(Bucket=BUCKET, Key=uploads[0]["Key"])["Body"].read()
    assert body == photo.read_bytes()  # sent as it is: the 6 MB real-time limit is not in play

    failed = run_client()
    assert failed.returncode == 1 and "the endpoint failed on" in failed.stderr
    assert "model failed on it" in failed.stderr
