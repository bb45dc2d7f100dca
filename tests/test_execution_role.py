"""The execution role against what SageMaker asks of it: runs the README's deploy commands as
written (moto server), then evaluates the role's real policy on every request of each flow.

Execution-role tests: README defaults, non-default names, and the requests outside them.
"""

from __future__ import annotations

import json
import shutil

import pytest

from helpers.aws_emulator import (
    ACCOUNT_ID,
    REGION,
    REPO,
    client,
    push_image,
    run_readme_deploy,
    run_script,
)
from helpers.iam_policy import Request, denied, evaluate
from helpers.sagemaker_requests import hosting, image_pull, logs, metrics, read_object, write_object


def role_policies(emulator, role_name: str) -> list[dict]:
    iam = client(emulator, "iam")
    names = iam.list_role_policies(RoleName=role_name)["PolicyNames"]
    assert iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"] == []
    return [iam.get_role_policy(RoleName=role_name, PolicyName=n)["PolicyDocument"] for n in names]


def endpoint_model(emulator, endpoint: str) -> dict:
    sm = client(emulator, "sagemaker")
    config = sm.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
    [variant] = sm.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"]
    return sm.describe_model(ModelName=variant["ModelName"])


def outside(bucket: str, prefix: str, repo: str) -> list[Request]:
    """Requests no flow needs: other repositories, buckets and prefixes, deletes, other logs."""
    acct, s3 = ACCOUNT_ID, f"arn:aws:s3:::{bucket}"
    return [
        *image_pull(f"{acct}.dkr.ecr.{REGION}.amazonaws.com/{repo}-other:latest")[1:],
        Request("ecr:PutImage", f"arn:aws:ecr:{REGION}:{acct}:repository/{repo}"),
        *read_object(f"s3://{bucket}/{prefix}-other/model.tar.gz"),
        *read_object(f"s3://{bucket}/model.tar.gz"),
        *read_object(f"s3://{bucket}-other/{prefix}/model.tar.gz"),
        Request("s3:DeleteObject", f"{s3}/{prefix}/model.tar.gz"),
        Request("s3:ListBucket", s3, {"s3:prefix": ""}),
        Request("s3:ListBucket", s3, {"s3:prefix": f"{prefix}-other/"}),
        Request("s3:ListBucket", s3),
        *write_object(f"s3://{bucket}/{prefix}"),  # the prefix's own key is not under it
        *logs(REGION, acct, "/aws/lambda/x", "s")[:1],
        *metrics("AWS/EC2"),
        Request("sagemaker:CreateEndpoint", f"arn:aws:sagemaker:{REGION}:{acct}:endpoint/x"),
        Request("iam:PassRole", f"arn:aws:iam::{acct}:role/Admin"),
    ]


def test_readme_deploy_commands_give_sagemaker_all_it_needs(aws_env, moto_server, tmp_path):
    push_image(moto_server)  # what ./build_and_push.sh pushes (Docker cannot run here)
    result = run_readme_deploy(aws_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    [endpoint] = client(moto_server, "sagemaker").list_endpoints()["Endpoints"]
    model = endpoint_model(moto_server, endpoint["EndpointName"])
    role_name = model["ExecutionRoleArn"].rsplit("/", 1)[1]
    policies = role_policies(moto_server, role_name)
    # The repository build_and_push.sh pushed to is the one the role may pull from.
    assert denied(policies, hosting(model, endpoint["EndpointName"], REGION, ACCOUNT_ID)) == []
    bucket = f"sagemaker-{REGION}-{ACCOUNT_ID}"
    assert model["PrimaryContainer"]["ModelDataUrl"].startswith(f"s3://{bucket}/flower-classifier/")
    refused = outside(bucket, "flower-classifier", "flower-classifier")
    assert [r for r in refused if evaluate(policies, r) == "Allow"] == []


def test_non_default_names(aws_env, moto_server, tmp_path):
    """Repository, bucket, prefix and role all renamed: the role follows every name."""
    repo, bucket, prefix, role = "team/flowers", "my-models", "flowers/v2", "FlowersProdRole"
    client(moto_server, "s3").create_bucket(Bucket=bucket)
    model_dir = tmp_path / "model"
    shutil.copytree(REPO / "local_test" / "test_dir" / "model", model_dir)

    def run(*args):
        result = run_script(*args, env=aws_env, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout.strip().splitlines()[-1]

    image = run("build_and_push.sh", "--dry-run", repo, "v7")
    assert image == f"{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com/{repo}:v7"
    role_arn = run("iam/create_role.sh", role, "--repository", repo, "--bucket", bucket,
                   "--prefix", prefix)
    model_data = run("endpoint/package_model.sh", str(model_dir), f"s3://{bucket}/{prefix}/v7")
    run("endpoint/deploy.sh", "--name", "prod-flowers", "--image", image, "--model-data",
        model_data, "--role", role_arn, "--instance-type", "ml.m5.large", "--poll-seconds", "1")

    model = endpoint_model(moto_server, "prod-flowers")
    policies = role_policies(moto_server, role)
    assert denied(policies, hosting(model, "prod-flowers", REGION, ACCOUNT_ID)) == []
    refused = outside(bucket, prefix, repo)
    assert [str(r) for r in refused if evaluate(policies, r) == "Allow"] == []


def test_the_old_default_repository_could_not_pull_the_readme_image(aws_env):
    """The bug this suite closes: a role for sagemaker-flower-classifier, an image in
    flower-classifier. The evaluator sees the denial moto never did."""
    result = run_script("iam/render_policy.sh", "iam/execution-role-policy.json",
                        "--repository", "sagemaker-flower-classifier", env=aws_env)
    assert result.returncode == 0, result.stderr
    policies = [json.loads(result.stdout)]
    image = f"{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com/flower-classifier:abc1234"
    assert denied(policies, image_pull(image)) == [
        f"ImplicitDeny: {a} on arn:aws:ecr:{REGION}:{ACCOUNT_ID}:repository/flower-classifier"
        for a in ("ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage",
                  "ecr:GetDownloadUrlForLayer")]


@pytest.mark.parametrize("template", ["iam/execution-role-policy.json"])
def test_every_statement_is_used_by_some_flow(template, aws_env):
    """No grant beyond the flows: each statement allows at least one request SageMaker makes."""
    result = run_script("iam/render_policy.sh", template, env=aws_env)
    assert result.returncode == 0, result.stderr
    policy = json.loads(result.stdout)
    bucket = f"sagemaker-{REGION}-{ACCOUNT_ID}"
    model = {"PrimaryContainer": {
        "Image": f"{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com/flower-classifier:abc1234",
        "ModelDataUrl": f"s3://{bucket}/flower-classifier/v1/model.tar.gz"}}
    requests = [*hosting(model, "flowers", REGION, ACCOUNT_ID),
                Request("s3:ListBucket", f"arn:aws:s3:::{bucket}",
                        {"s3:prefix": "flower-classifier/data/train"}),
                *write_object(f"s3://{bucket}/flower-classifier/training/job/output/model.tar.gz")]
    for statement in policy["Statement"]:
        single = [{"Version": "2012-10-17", "Statement": [statement]}]
        assert any(evaluate(single, r) == "Allow" for r in requests), statement["Sid"]


def test_async_notifications_are_granted_on_exactly_the_named_topics(aws_env):
    """deploy.sh --async --sns-success/--sns-error: SageMaker publishes with the execution role.
    The default role may publish nowhere; --sns-topic grants sns:Publish on those topics only."""
    done = f"arn:aws:sns:{REGION}:{ACCOUNT_ID}:flowers-done"
    failed = f"arn:aws:sns:{REGION}:{ACCOUNT_ID}:flowers-failed"
    other = f"arn:aws:sns:{REGION}:{ACCOUNT_ID}:someone-else"
    publish = [Request("sns:Publish", topic) for topic in (done, failed)]
    plain = run_script("iam/render_policy.sh", "iam/execution-role-policy.json", env=aws_env)
    assert plain.returncode == 0, plain.stderr
    assert len(denied([json.loads(plain.stdout)], publish)) == 2
    granted = run_script("iam/render_policy.sh", "iam/execution-role-policy.json",
                         "--sns-topic", done, "--sns-topic", failed, env=aws_env)
    assert granted.returncode == 0, granted.stderr
    policy = json.loads(granted.stdout)
    assert denied([policy], publish) == []
    assert denied([policy], [Request("sns:Publish", other)]) != []
    bad = run_script("iam/render_policy.sh", "iam/execution-role-policy.json",
                     "--sns-topic", "flowers-done", env=aws_env)
    assert bad.returncode != 0 and "invalid SNS topic ARN 'flowers-done'" in bad.stderr
