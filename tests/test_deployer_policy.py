"""iam/deployer-policy.json against every AWS call the scripts make: the calls are read from the
scripts' text and recorded while the scripts run against moto, then evaluated as IAM would.

Deployer-policy tests: static call list, recorded calls with their resources, no wildcards.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest

from helpers.aws_emulator import (
    ACCOUNT_ID,
    REGION,
    REPO,
    SCRIPT_KEY,
    client,
    push_image,
    readme_deploy_block,
    run_readme_deploy,
    run_script,
)
from helpers.aws_requests import parse_recording, to_requests
from helpers.iam_policy import denied, statements

# Scripts the deployer runs. iam/ is run once by an administrator (it creates the role).
DEPLOYER_SCRIPTS = sorted(
    [REPO / "build_and_push.sh", REPO / "lib" / "common.sh", *(REPO / "endpoint").glob("*.sh"),
     *(REPO / "train").glob("*.sh")]
)
# CLI commands that need no IAM permission.
NO_PERMISSION = {("sts", "get-caller-identity"), ("configure", "get")}
# CLI commands whose IAM action is not the command's own name.
SPECIAL = {
    ("ecr", "get-login-password"): ["ecr:GetAuthorizationToken"],
    ("s3api", "head-bucket"): ["s3:ListBucket"],
    ("s3api", "head-object"): ["s3:GetObject"],
    ("s3api", "list-objects-v2"): ["s3:ListBucket"],
    ("s3", "mb"): ["s3:CreateBucket"],
    ("s3", "cp"): ["s3:PutObject", "s3:AbortMultipartUpload"],
    ("s3", "sync"): ["s3:ListBucket", "s3:PutObject", "s3:AbortMultipartUpload"],
    ("s3", "ls"): ["s3:ListBucket"],
}
SERVICES = {"sagemaker-runtime": "sagemaker", "s3api": "s3"}
# `docker push` to ECR (build_and_push.sh) makes these calls through the registry API.
DOCKER_PUSH = ["ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload",
               "ecr:UploadLayerPart", "ecr:CompleteLayerUpload", "ecr:PutImage",
               "ecr:BatchGetImage"]
ADMIN_KEY = "testing"  # the administrator who runs iam/create_role.sh once
# boto3 calls of endpoint/client.py (client variable . method) -> IAM action.
BOTO3_CALL = re.compile(r"\b(?:runtime|s3)\.(\w+)\(")
BOTO3_ACTIONS = {
    "invoke_endpoint": "sagemaker:InvokeEndpoint",
    "invoke_endpoint_async": "sagemaker:InvokeEndpointAsync",
    "put_object": "s3:PutObject",
    "get_object": "s3:GetObject",
}
CLI_CALL = re.compile(r"\baws\s+([a-z0-9-]+)\s+([a-z0-9-]+)")


def cli_calls(text: str) -> set[tuple[str, str]]:
    """Every `aws SERVICE COMMAND` in a script or README block (line continuations joined)."""
    return set(CLI_CALL.findall(re.sub(r"\\\n\s*", " ", text)))


def iam_actions(service: str, command: str) -> list[str]:
    if (service, command) in NO_PERMISSION:
        return []
    if (service, command) in SPECIAL:
        return SPECIAL[service, command]
    name = "".join(part.capitalize() for part in command.split("-"))
    return [f"{SERVICES.get(service, service)}:{name}"]


def script_actions() -> dict[str, set[str]]:
    """IAM action -> where it comes from, for every AWS call in the deployer's scripts."""
    found: dict[str, set[str]] = {}
    sources = {p.relative_to(REPO).as_posix(): p.read_text() for p in DEPLOYER_SCRIPTS}
    sources["README.md (deploy)"] = readme_deploy_block()
    for source, text in sources.items():
        for service, command in cli_calls(text):
            for action in iam_actions(service, command):
                found.setdefault(action, set()).add(source)
        if "docker push" in text:
            for action in DOCKER_PUSH:
                found.setdefault(action, set()).add(source)
    client_py = (REPO / "endpoint" / "client.py").read_text()
    for method in BOTO3_CALL.findall(client_py):
        assert method in BOTO3_ACTIONS, f"endpoint/client.py calls {method}: map it to IAM"
        found.setdefault(BOTO3_ACTIONS[method], set()).add("endpoint/client.py")
    return found


def render(env, **names) -> list[dict]:
    args = [x for k, v in names.items() for x in (f"--{k.replace('_', '-')}", v)]
    result = run_script("iam/render_policy.sh", "iam/deployer-policy.json", *args, env=env)
    assert result.returncode == 0, result.stderr
    return [json.loads(result.stdout)]


def granted(policy: dict) -> set[str]:
    found = set()
    for statement in statements(policy):
        actions = statement["Action"]
        found.update([actions] if isinstance(actions, str) else actions)
    return found


def test_no_wildcard_actions_and_no_unused_grants(aws_env):
    [policy] = render(aws_env)
    actions = granted(policy)
    assert [a for a in actions if "*" in a or "?" in a] == []
    assert all("NotAction" not in s for s in statements(policy))
    needed = set(script_actions())
    # Granted for calls AWS makes on the deployer's behalf, not the scripts' own calls.
    implied = {
        "iam:PassRole",  # create-model / create-*-job pass the execution role
        "sagemaker:AddTags",  # --tags on create-model / create-endpoint-config / create-endpoint
        "cloudwatch:PutMetricAlarm", "cloudwatch:DescribeAlarms", "cloudwatch:DeleteAlarms",
        "iam:CreateServiceLinkedRole",  # target tracking's alarms and its service-linked role
    }
    assert sorted(actions - needed - implied) == []


def test_every_scripted_call_is_granted(aws_env):
    [policy] = render(aws_env)
    missing = {a: sorted(s) for a, s in script_actions().items() if a not in granted(policy)}
    assert missing == {}


def lifecycle(env, emulator, tmp_path, *, name, image, model_data, role):
    """The deployer's commands after the deploy itself: a planned update, a call, autoscaling,
    and the delete (update-endpoint itself is captured by test_aws_scripts: moto lacks it)."""
    emulator.set_endpoint_results([{"Body": "{}", "ContentType": "application/json"}])
    photo = tmp_path / "flower.jpg"
    photo.write_bytes(b"placeholder image bytes")  # moto's server decodes bodies as UTF-8
    for args in (
        ["endpoint/deploy.sh", "--name", name, "--image", image, "--model-data", model_data,
         "--role", role, "--dry-run"],
        ["endpoint/invoke.sh", "--name", name, str(photo)],
        ["endpoint/autoscale.sh", "--name", name, "--max", "2"],
        ["endpoint/delete.sh", "--name", name, "--poll-seconds", "1"],
    ):
        result = run_script(*args, env=env, timeout=300)
        assert result.returncode == 0, (args, result.stderr[-2000:])


def recorded(emulator) -> list:
    calls = [c for c in parse_recording(emulator.recording()) if c.access_key == SCRIPT_KEY]
    return [r for c in calls for r in to_requests(c, ACCOUNT_ID)]


@pytest.fixture
def recording(moto_server):
    moto_server.start_recording()
    yield moto_server
    moto_server._post("/moto-api/recorder/stop-recording", {})


def admin_role(env, *args) -> str:
    """iam/create_role.sh, run by an administrator (not recorded as the deployer's)."""
    admin = {**env, "AWS_ACCESS_KEY_ID": ADMIN_KEY}
    result = run_script("iam/create_role.sh", *args, env=admin)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_readme_deploy_as_the_deployer(aws_env, recording, tmp_path):
    """README commands as written, then the rest of the lifecycle, all by the deployer."""
    push_image(recording)  # what ./build_and_push.sh pushes (Docker cannot run here)
    result = run_readme_deploy(aws_env, tmp_path, admin_key=ADMIN_KEY)
    assert result.returncode == 0, result.stderr[-3000:]
    [endpoint] = client(recording, "sagemaker").list_endpoints()["Endpoints"]
    sm = client(recording, "sagemaker")
    config = sm.describe_endpoint(EndpointName=endpoint["EndpointName"])["EndpointConfigName"]
    model = sm.describe_model(ModelName=config)  # deploy.sh names both alike
    lifecycle(aws_env, recording, tmp_path, name=endpoint["EndpointName"],
              image=model["PrimaryContainer"]["Image"],
              model_data=model["PrimaryContainer"]["ModelDataUrl"],
              role=model["ExecutionRoleArn"])
    requests = recorded(recording)
    actions = {r.action for r in requests}
    assert {"sagemaker:CreateModel", "sagemaker:CreateEndpoint", "s3:PutObject",
            "iam:PassRole", "sagemaker:InvokeEndpoint", "sagemaker:DeleteEndpoint",
            "application-autoscaling:RegisterScalableTarget"} <= actions
    assert denied(render(aws_env), requests) == []


def test_non_default_names_as_the_deployer(aws_env, recording, tmp_path):
    repo, bucket, prefix, role_name = "team/flowers", "my-models", "flowers/v2", "FlowersProd"
    role = admin_role(aws_env, role_name, "--repository", repo, "--bucket", bucket,
                      "--prefix", prefix)
    client(recording, "s3").create_bucket(Bucket=bucket)
    shutil.copytree(REPO / "local_test" / "test_dir" / "model", tmp_path / "model")  # small

    def run(*args):
        result = run_script(*args, env=aws_env, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout.strip().splitlines()[-1]

    image = run("build_and_push.sh", "--dry-run", repo, "v7")
    model_data = run("endpoint/package_model.sh", str(tmp_path / "model"),
                     f"s3://{bucket}/{prefix}/v7")
    run("endpoint/deploy.sh", "--name", "prod", "--image", image, "--model-data", model_data,
        "--role", role, "--instance-type", "ml.m5.large", "--poll-seconds", "1")
    lifecycle(aws_env, recording, tmp_path, name="prod", image=image, model_data=model_data,
              role=role)
    requests = recorded(recording)
    policy = render(aws_env, role_name=role_name, repository=repo, bucket=bucket, prefix=prefix)
    assert denied(policy, requests) == []
    # The same calls under the README's default names are refused where the names matter.
    refused = denied(render(aws_env), requests)
    assert any("iam:PassRole" in line for line in refused)
    assert any(f"arn:aws:s3:::{bucket}/{prefix}/v7/model.tar.gz" in line for line in refused)
    assert REGION in image
