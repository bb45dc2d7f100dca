"""Tests of iam/: create_role.sh against moto (trust policy, inline policy, idempotence) and a
parliament lint of every rendered permissions policy (no findings, no `*` in any Action).

IAM role script and policy lint tests.
"""

from __future__ import annotations

import json
import warnings

import pytest

from helpers.aws_emulator import (
    ACCOUNT_ID,
    client,
    run_script,
)

with warnings.catch_warnings():  # parliament imports the deprecated pkg_resources
    warnings.simplefilter("ignore")
    import parliament

POLICIES = ["iam/execution-role-policy.json", "iam/deployer-policy.json"]
# Community auditors flag these by design; each is required and scoped as far as AWS allows.
ACCEPTED_COMMUNITY_FINDINGS = {
    "CREDENTIALS_EXPOSURE": {"ecr:getauthorizationtoken"},  # docker login to ECR
    "PERMISSIONS_MANAGEMENT_ACTIONS": {"iam:passrole", "iam:createservicelinkedrole"},
}


def statements(policy: dict) -> list[dict]:
    found = policy["Statement"]
    return found if isinstance(found, list) else [found]


def actions(statement: dict) -> list[str]:
    found = statement["Action"]
    return [found] if isinstance(found, str) else found


@pytest.fixture
def rendered(aws_env) -> dict[str, str]:
    out = {}
    for template in POLICIES:
        result = run_script("iam/render_policy.sh", template, "--role-name", "FlowerRole",
                            env=aws_env)  # fmt: skip
        assert result.returncode == 0, result.stderr
        out[template] = result.stdout
    return out


def test_templates_render_completely(rendered):
    for template, text in rendered.items():
        assert "${" not in text, template
        policy = json.loads(text)
        assert f"arn:aws:s3:::sagemaker-us-east-1-{ACCOUNT_ID}" in text, template
        for statement in statements(policy):
            for action in actions(statement):
                assert "*" not in action, f"{template}: wildcard action {action}"


def test_parliament_finds_nothing(rendered):
    for template, text in rendered.items():
        findings = parliament.analyze_policy_string(text).findings
        assert [(f.issue, f.detail) for f in findings] == [], template
        community = parliament.analyze_policy_string(text, include_community_auditors=True)
        for finding in community.findings:
            accepted = ACCEPTED_COMMUNITY_FINDINGS.get(finding.issue, set())
            assert set(finding.location.get("actions", ["?"])) <= accepted, (template, finding)


def test_deployer_can_pass_only_the_execution_role(rendered):
    policy = json.loads(rendered["iam/deployer-policy.json"])
    passing = [s for s in statements(policy) if "iam:PassRole" in actions(s)]
    assert [s["Resource"] for s in passing] == [f"arn:aws:iam::{ACCOUNT_ID}:role/FlowerRole"]
    assert passing[0]["Condition"] == {
        "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}
    }


def test_trust_policy_is_sagemaker_only():
    # parliament lints identity policies; a trust policy has a Principal and no Resource.
    with open("iam/trust-policy.json") as f:
        policy = json.load(f)
    [statement] = statements(policy)
    assert statement["Effect"] == "Allow"
    assert statement["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    assert actions(statement) == ["sts:AssumeRole"]
    # only this account's SageMaker may assume it (confused-deputy guard)
    assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": "${ACCOUNT_ID}"}}


def test_create_role_is_idempotent(aws_env, moto_server):
    iam = client(moto_server, "iam")
    first = run_script("iam/create_role.sh", "FlowerRole", env=aws_env)
    assert first.returncode == 0, first.stderr
    arn = f"arn:aws:iam::{ACCOUNT_ID}:role/FlowerRole"
    assert first.stdout.strip().splitlines()[-1] == arn

    role = iam.get_role(RoleName="FlowerRole")["Role"]
    [statement] = statements(role["AssumeRolePolicyDocument"])
    assert statement["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT_ID}}
    assert iam.list_role_policies(RoleName="FlowerRole")["PolicyNames"] == [
        "flower-classifier-execution"
    ]
    assert iam.list_attached_role_policies(RoleName="FlowerRole")["AttachedPolicies"] == []

    options = ["--bucket", "my-models", "--prefix", "flowers/", "--repository", "team/flowers"]
    again = run_script("iam/create_role.sh", "FlowerRole", *options, env=aws_env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == arn
    assert [r["RoleName"] for r in iam.list_roles()["Roles"]] == ["FlowerRole"]
    policy = iam.get_role_policy(RoleName="FlowerRole", PolicyName="flower-classifier-execution")
    document = policy["PolicyDocument"]
    text = json.dumps(document)
    assert "arn:aws:s3:::my-models/flowers/*" in text
    assert f"arn:aws:ecr:us-east-1:{ACCOUNT_ID}:repository/team/flowers" in text
    assert "sagemaker-us-east-1" not in text  # the update replaced the old policy
    assert parliament.analyze_policy_string(json.dumps(document)).findings == []


def test_create_role_rejects_bad_input(aws_env):
    result = run_script("iam/create_role.sh", "bad role", env=aws_env)
    assert result.returncode != 0 and "error: invalid role name" in result.stderr
    result = run_script("iam/create_role.sh", "--bucket", "Bad_Bucket", env=aws_env)
    assert result.returncode != 0 and "error: invalid S3 bucket name" in result.stderr
