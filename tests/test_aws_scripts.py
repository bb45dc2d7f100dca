"""End-to-end tests of endpoint/*.sh run as a user would, against moto's HTTP server
(tests/helpers/aws_emulator.py), asserting through the AWS API what the scripts created.

Tests for package_model.sh, deploy.sh, invoke.sh, autoscale.sh and delete.sh.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile

import pytest

# tests/ is on sys.path (pytest's default "prepend" import mode, and tests/conftest.py).
from helpers.aws_emulator import (
    ACCOUNT_ID,
    client,
    push_image,
    run_script,
)
from helpers.checkpoints import make_project_checkpoint

SCRIPTS = [
    "iam/create_role.sh",
    "iam/render_policy.sh",
    "endpoint/package_model.sh",
    "endpoint/deploy.sh",
    "endpoint/invoke.sh",
    "endpoint/delete.sh",
    "endpoint/autoscale.sh",
]
IMAGE = f"{ACCOUNT_ID}.dkr.ecr.us-east-1.amazonaws.com/flower-classifier:latest"
ROLE_NAME = "FlowerTestRole"
ROLE = f"arn:aws:iam::{ACCOUNT_ID}:role/{ROLE_NAME}"
MODEL_DATA = "s3://models-bucket/flower-classifier/v1/model.tar.gz"


def make_role(emulator, name: str = ROLE_NAME) -> None:
    client(emulator, "iam").create_role(
        RoleName=name,
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "sagemaker.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )


def deploy(env, name, *extra):
    return run_script(
        "endpoint/deploy.sh",
        "--name", name, "--image", IMAGE, "--model-data", MODEL_DATA, "--role", ROLE,
        "--poll-seconds", "1", "--timeout", "60", *extra,
        env=env,
    )  # fmt: skip


def owned(names, endpoint):
    return sorted(n for n in names if re.fullmatch(rf"{endpoint}-\d{{8}}-\d{{6}}-[0-9a-f]{{4}}", n))


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script, aws_env):
    result = run_script(script, "--help", env=aws_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage:")


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("endpoint/deploy.sh", ["--name", "x", "--image", IMAGE],
         "--checkpoint or --model-data is required"),
        ("endpoint/deploy.sh", ["--checkpoint", "/nonexistent.pth"], "is not a file"),
        ("endpoint/deploy.sh", ["--checkpoint", "README.md", "--model-data", MODEL_DATA],
         "not both"),
        ("endpoint/deploy.sh", ["--instance-count", "0"], "positive integer"),
        ("endpoint/deploy.sh", ["--bogus", "1"], "unknown option '--bogus'"),
        ("endpoint/deploy.sh", ["--name"], "--name needs a value"),
        (
            "endpoint/deploy.sh",
            ["--name", "x", "--image", IMAGE, "--model-data", MODEL_DATA, "--role", "FlowerRole"],
            "--role must be an IAM role ARN",
        ),
        ("endpoint/package_model.sh", ["/nonexistent", "s3://b/p"], "is not a directory"),
        ("endpoint/invoke.sh", ["--name", "x", "/nonexistent.jpg"], "not found"),
        ("endpoint/invoke.sh", ["--name", "x"], "IMAGE_FILE is required"),
        ("endpoint/delete.sh", ["--name"], "--name needs a value"),
        ("endpoint/deploy.sh", ["--instance-type", "ml.p3.2xlarge", "--image", IMAGE,
                                "--model-data", MODEL_DATA, "--role", ROLE], "Volta"),
        ("endpoint/delete.sh", ["--name", "bad_name"], "must be 1-41 letters"),
    ],
)
def test_bad_arguments(script, args, message, aws_env):
    result = run_script(script, *args, env=aws_env)
    assert result.returncode != 0
    assert "error: " in result.stderr and message in result.stderr, result.stderr


def test_no_credentials(aws_env):
    env = {k: v for k, v in aws_env.items() if "KEY" not in k and "TOKEN" not in k}
    env["AWS_EC2_METADATA_DISABLED"] = "true"  # no instance-metadata lookup on a dev box
    result = deploy(env, "flowers")
    assert result.returncode != 0
    assert "error: no usable AWS credentials" in result.stderr, result.stderr


def test_no_region(aws_env):
    env = {k: v for k, v in aws_env.items() if k != "AWS_REGION"}
    result = run_script("endpoint/delete.sh", "--name", "flowers", env=env)
    assert result.returncode != 0
    assert "error: no AWS region" in result.stderr, result.stderr


def test_package_model(aws_env, moto_server, tmp_path):
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"1": "pink primrose", "2": "hard-leaved pocket orchid"}))
    (tmp_path / "model").mkdir()
    model = make_project_checkpoint(tmp_path / "model", names)
    prefix = "s3://models-bucket/flower-classifier/v1/"

    result = run_script("endpoint/package_model.sh", str(model), prefix, env=aws_env)
    assert result.returncode != 0 and "aws s3 mb s3://models-bucket" in result.stderr

    s3 = client(moto_server, "s3")
    s3.create_bucket(Bucket="models-bucket")
    for _ in range(2):  # re-running overwrites the same key
        result = run_script("endpoint/package_model.sh", str(model), prefix, env=aws_env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().splitlines()[-1] == MODEL_DATA
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="models-bucket")["Contents"]]
    assert keys == ["flower-classifier/v1/model.tar.gz"]
    body = s3.get_object(Bucket="models-bucket", Key=keys[0])["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["cat_to_name.json", "checkpoint.pth"]
        packed = tar.extractfile("checkpoint.pth").read()
        assert packed == (model / "checkpoint.pth").read_bytes()

    # The same checks as train/package_model.py, the server's loader: names must cover classes.
    names.write_text(json.dumps({"1": "pink primrose"}))
    shutil.copy(names, model / "cat_to_name.json")
    result = run_script("endpoint/package_model.sh", str(model), prefix, env=aws_env)
    assert result.returncode != 0 and "has no name for classes ['2']" in result.stderr
    # cat_to_name.json is optional, as it is for the server.
    (model / "cat_to_name.json").unlink()
    result = run_script("endpoint/package_model.sh", str(model), prefix, env=aws_env)
    assert result.returncode == 0, result.stderr
    # A checkpoint the server cannot load is refused before anything is uploaded.
    (model / "checkpoint.pth").write_bytes(b"\x80fake-checkpoint")
    result = run_script("endpoint/package_model.sh", str(model), "s3://models-bucket/x",
                        env=aws_env)  # fmt: skip
    assert result.returncode != 0 and "is not a model the server can load" in result.stderr
    assert "x/model.tar.gz" not in [o["Key"] for o in
                                    s3.list_objects_v2(Bucket="models-bucket")["Contents"]]


def test_deploy_missing_role(aws_env):
    result = deploy(aws_env, "flowers")
    assert result.returncode != 0
    assert f"error: role '{ROLE}' does not exist" in result.stderr, result.stderr


def test_deploy_cpu_autoscale_delete(aws_env, moto_server):
    make_role(moto_server)
    sm = client(moto_server, "sagemaker")
    result = run_script("endpoint/autoscale.sh", "--name", "flowers", env=aws_env)
    assert result.returncode != 0 and "deploy it first" in result.stderr

    result = deploy(aws_env, "flowers", "--instance-type", "ml.m5.large", "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "flowers"
    assert "endpoint flowers: InService" in result.stderr  # progress is shown

    endpoint = sm.describe_endpoint(EndpointName="flowers")
    assert endpoint["EndpointStatus"] == "InService"
    config_name = endpoint["EndpointConfigName"]
    assert owned([config_name], "flowers") == [config_name]
    variant = sm.describe_endpoint_config(EndpointConfigName=config_name)["ProductionVariants"][0]
    assert variant["InstanceType"] == "ml.m5.large"
    assert variant["InitialInstanceCount"] == 1
    # auto timeouts: the model is not in S3 here, so only the measured cold start counts
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == 120
    assert variant["ModelDataDownloadTimeoutInSeconds"] == 120
    assert "InferenceAmiVersion" not in variant  # CPU instance: default AMI
    model = sm.describe_model(ModelName=variant["ModelName"])
    assert model["PrimaryContainer"]["Image"] == IMAGE
    assert model["PrimaryContainer"]["ModelDataUrl"] == MODEL_DATA
    assert model["PrimaryContainer"]["Environment"] == {
        "MODEL_SERVER_WORKERS": "2",
        "MODEL_SERVER_TIMEOUT": "60",
    }
    assert model["ExecutionRoleArn"] == ROLE
    tags = sm.list_tags(ResourceArn=model["ModelArn"])["Tags"]
    assert {"Key": "flower-endpoint", "Value": "flowers"} in tags

    for _ in range(2):  # idempotent
        result = run_script("endpoint/autoscale.sh", "--name", "flowers", "--max", "3",
                            env=aws_env)  # fmt: skip
        assert result.returncode == 0, result.stderr
    aas = client(moto_server, "application-autoscaling")
    targets = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert [(t["ResourceId"], t["MinCapacity"], t["MaxCapacity"]) for t in targets] == [
        ("endpoint/flowers/variant/AllTraffic", 1, 3)
    ]
    policies = aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert len(policies) == 1
    spec = policies[0]["TargetTrackingScalingPolicyConfiguration"]
    assert spec["PredefinedMetricSpecification"]["PredefinedMetricType"] == (
        "SageMakerVariantInvocationsPerInstance"
    )

    # Another endpoint whose name shares the prefix must survive the delete.
    other = "flowers-b-20240101-000000-abcd"
    sm.create_model(ModelName=other, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": IMAGE})
    sm.create_endpoint_config(
        EndpointConfigName=other,
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": other,
                             "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}],
    )  # fmt: skip
    sm.create_endpoint(EndpointName="flowers-b", EndpointConfigName=other)

    result = run_script("endpoint/delete.sh", "--name", "flowers", "--poll-seconds", "1",
                        env=aws_env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]] == ["flowers-b"]
    configs = sm.list_endpoint_configs()["EndpointConfigs"]
    assert [c["EndpointConfigName"] for c in configs] == [other]
    assert [m["ModelName"] for m in sm.list_models()["Models"]] == [other]
    assert aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []

    again = run_script("endpoint/delete.sh", "--name", "flowers", env=aws_env)
    assert again.returncode == 0, again.stderr
    assert "endpoint flowers does not exist" in again.stderr


def test_v100_needs_the_cu126_image_and_its_ami(aws_env, moto_server):
    """ml.p3 passes only with an explicit --ami-version (an image built with the CUDA 12.6
    wheels, driver >= 525); the default CUDA 13.0 image cannot use Volta."""
    make_role(moto_server)
    result = deploy(aws_env, "flowers", "--instance-type", "ml.p3.2xlarge", "--ami-version",
                    "al2-ami-sagemaker-inference-gpu-2", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "al2-ami-sagemaker-inference-gpu-2" in result.stderr


def test_deploy_gpu_then_redeploy(aws_env, moto_server):
    """GPU deploy sets InferenceAmiVersion; re-running deploy.sh updates it (blue/green).

    moto does not implement UpdateEndpoint (it answers HTTP 500), so this test cannot watch an
    update finish. Instead it checks, honestly: (1) --dry-run against the live endpoint plans
    new model + config and `update-endpoint --endpoint-name NAME --endpoint-config-name NEW`,
    never a second create-endpoint, and changes nothing; (2) a real re-run reaches the
    update-endpoint call, fails fast with an error naming it, and leaves the endpoint on its
    old config (what SageMaker itself does when an update cannot start).
    """
    make_role(moto_server)
    sm = client(moto_server, "sagemaker")
    result = deploy(aws_env, "flowers", "--startup-timeout", "900")  # default ml.g4dn.xlarge
    assert result.returncode == 0, result.stderr
    old_config = sm.describe_endpoint(EndpointName="flowers")["EndpointConfigName"]
    variant = sm.describe_endpoint_config(EndpointConfigName=old_config)["ProductionVariants"][0]
    assert variant["InstanceType"] == "ml.g4dn.xlarge"
    assert variant["InferenceAmiVersion"] == "al2023-ami-sagemaker-inference-gpu-4-1"
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == 900
    container = sm.describe_model(ModelName=variant["ModelName"])["PrimaryContainer"]
    assert "MODEL_SERVER_WORKERS" not in container["Environment"]  # one worker per GPU

    plan = deploy(aws_env, "flowers", "--instance-type", "ml.m5.xlarge", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    calls = [line for line in plan.stderr.splitlines() if line.startswith("aws ")]
    assert [c.split()[2] for c in calls] == [
        "create-model",
        "create-endpoint-config",
        "update-endpoint",
    ]
    new = re.search(r"--model-name (flowers-\S+)", calls[0]).group(1)
    assert new != old_config and owned([new], "flowers") == [new]
    assert f"--endpoint-config-name {new}" in calls[1] and "ml.m5.xlarge" in calls[1]
    assert "InferenceAmiVersion" not in calls[1]
    assert calls[2] == (
        f"aws sagemaker update-endpoint --endpoint-name flowers --endpoint-config-name {new}"
    )
    assert len(sm.list_models()["Models"]) == 1  # the dry run created nothing

    # One attempt: the CLI would otherwise retry moto's HTTP 500 with backoff.
    result = deploy({**aws_env, "AWS_MAX_ATTEMPTS": "1"}, "flowers", "--instance-type",
                    "ml.m5.xlarge")  # fmt: skip
    assert result.returncode != 0
    assert "error: update-endpoint failed for flowers" in result.stderr, result.stderr
    assert sm.describe_endpoint(EndpointName="flowers")["EndpointConfigName"] == old_config
    assert len(owned([m["ModelName"] for m in sm.list_models()["Models"]], "flowers")) == 2

    result = run_script("endpoint/delete.sh", "--name", "flowers", "--poll-seconds", "1",
                        env=aws_env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sm.list_endpoints()["Endpoints"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert sm.list_models()["Models"] == []


def test_invoke(aws_env, moto_server, tmp_path):
    """moto's invoke-endpoint returns canned results: this proves the CLI call and plumbing.

    moto's server also decodes request bodies as UTF-8, so real JPEG bytes (0xFF...) make it
    fail with HTTP 500; the test image is therefore ASCII bytes in a .jpg file.
    """
    predictions = {"predictions": [{"class": "1", "label": "pink primrose", "probability": 0.9}]}
    moto_server.set_endpoint_results(
        [{"Body": json.dumps(predictions), "ContentType": "application/json",
          "InvokedProductionVariant": "AllTraffic", "CustomAttributes": "top_k=3"}]
    )  # fmt: skip
    image = tmp_path / "flower.jpg"
    image.write_bytes(b"placeholder image bytes")
    result = run_script("endpoint/invoke.sh", "--name", "flowers", str(image), "--top-k", "3",
                        env=aws_env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == predictions

    other = tmp_path / "flower.gif"
    other.write_bytes(b"GIF89a")
    result = run_script("endpoint/invoke.sh", "--name", "flowers", str(other), env=aws_env)
    assert result.returncode != 0 and "pass --content-type" in result.stderr


def test_deploy_from_checkpoint(aws_env, moto_server, tmp_path):
    """deploy.sh --checkpoint: checked, packed, uploaded under the default bucket and prefix,
    served with the default repository's latest image and the default role."""
    bucket = f"sagemaker-us-east-1-{ACCOUNT_ID}"
    checkpoint = "local_test/test_dir/model/checkpoint.pth"
    args = ["--checkpoint", checkpoint, "--instance-type", "ml.m5.large", "--poll-seconds", "1"]
    make_role(moto_server, "SageMakerFlowerClassifierRole")
    client(moto_server, "s3").create_bucket(Bucket=bucket)
    result = run_script("endpoint/deploy.sh", *args, env=aws_env)
    assert result.returncode != 0 and "push one with ./build_and_push.sh" in result.stderr

    digest = push_image(moto_server)
    plan = run_script("endpoint/deploy.sh", *args, "--dry-run", env=aws_env, timeout=300)
    assert plan.returncode == 0, plan.stderr
    result = run_script("endpoint/deploy.sh", *args, env=aws_env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "flowers"  # the default endpoint name

    sm = client(moto_server, "sagemaker")
    [model] = [sm.describe_model(ModelName=m["ModelName"]) for m in sm.list_models()["Models"]]
    container = model["PrimaryContainer"]
    assert container["Image"] == (
        f"{ACCOUNT_ID}.dkr.ecr.us-east-1.amazonaws.com/flower-classifier@{digest}")
    assert model["ExecutionRoleArn"] == (
        f"arn:aws:iam::{ACCOUNT_ID}:role/SageMakerFlowerClassifierRole")
    key = re.fullmatch(rf"s3://{bucket}/(flower-classifier/models/[0-9a-f]{{16}}/model\.tar\.gz)",
                       container["ModelDataUrl"]).group(1)
    assert "package_model.sh " in plan.stderr and key.rsplit("/", 1)[0] in plan.stderr
    body = client(moto_server, "s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["cat_to_name.json", "checkpoint.pth"]
    config = sm.describe_endpoint(EndpointName="flowers")["EndpointConfigName"]
    [variant] = sm.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"]
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == 120
    assert variant["ModelDataDownloadTimeoutInSeconds"] == 120

    # A checkpoint that will not serve is refused before anything is created.
    bad = tmp_path / "checkpoint.pth"
    bad.write_bytes(b"\x80not a checkpoint")
    result = run_script("endpoint/deploy.sh", "--name", "other", "--checkpoint", str(bad),
                        env=aws_env, timeout=300)
    assert result.returncode != 0 and "could not package and upload" in result.stderr
    assert len(sm.list_models()["Models"]) == 1
