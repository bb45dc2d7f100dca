"""Tests of the test helper tests/helpers/iam_policy.py against IAM's documented evaluation rules
(wildcards, explicit deny, NotAction/NotResource, conditions, missing keys, IfExists).
"""
import pytest

from helpers.iam_policy import (
    ALLOW,
    EXPLICIT_DENY,
    IMPLICIT_DENY,
    Request,
    denied,
    evaluate,
    matches,
)

BUCKET = "arn:aws:s3:::models"


def policy(*statements):
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(action, resource, **extra):
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


@pytest.mark.parametrize(("pattern", "value", "hit"), [
    ("arn:aws:s3:::models/*", "arn:aws:s3:::models/a/b.tar.gz", True),
    ("arn:aws:s3:::models/*", "arn:aws:s3:::models", False),
    ("arn:aws:s3:::models/*", "arn:aws:s3:::models-other/a", False),
    ("arn:aws:logs:*:1:log-group:/aws/sagemaker/*", "arn:aws:logs:r:1:log-group:/aws/sagemaker/"
     "Endpoints/f:log-stream:x", True),  # `*` crosses ':' and '/'
    ("repository/flower-classifier", "repository/sagemaker-flower-classifier", False),
    ("a?c", "abc", True), ("a?c", "ac", False),
    ("a.c", "abc", False),  # regex characters are literal
    ("*", "", True),
])
def test_wildcards(pattern, value, hit):
    assert matches(pattern, value) is hit


def test_actions_ignore_case_resources_do_not():
    p = [policy(allow("S3:getobject", f"{BUCKET}/Key"))]
    assert evaluate(p, Request("s3:GetObject", f"{BUCKET}/Key")) == ALLOW
    assert evaluate(p, Request("s3:GetObject", f"{BUCKET}/key")) == IMPLICIT_DENY
    p = [policy(allow("ecr:Batch*", "*"))]
    assert evaluate(p, Request("ecr:BatchGetImage", "x")) == ALLOW
    assert evaluate(p, Request("ecr:PutImage", "x")) == IMPLICIT_DENY


def test_explicit_deny_wins_over_any_allow():
    p = [policy(allow("s3:*", "*")),
         policy({"Effect": "Deny", "Action": "s3:DeleteObject", "Resource": f"{BUCKET}/*"})]
    assert evaluate(p, Request("s3:GetObject", f"{BUCKET}/k")) == ALLOW
    assert evaluate(p, Request("s3:DeleteObject", f"{BUCKET}/k")) == EXPLICIT_DENY
    assert evaluate([], Request("s3:GetObject", f"{BUCKET}/k")) == IMPLICIT_DENY


def test_not_action_and_not_resource():
    p = [policy({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"},
                {"Effect": "Deny", "Action": "s3:*", "NotResource": f"{BUCKET}/*"})]
    assert evaluate(p, Request("s3:GetObject", f"{BUCKET}/k")) == ALLOW
    assert evaluate(p, Request("s3:GetObject", "arn:aws:s3:::other/k")) == EXPLICIT_DENY
    assert evaluate(p, Request("iam:PassRole", "arn:aws:iam::1:role/r")) == IMPLICIT_DENY


def test_s3_prefix_condition():
    """The ListBucket statement of the AWS docs' home-folder example."""
    p = [policy(allow("s3:ListBucket", BUCKET,
                      Condition={"StringLike": {"s3:prefix": ["flowers", "flowers/*"]}}))]
    assert evaluate(p, Request("s3:ListBucket", BUCKET, {"s3:prefix": "flowers/train/"})) == ALLOW
    assert evaluate(p, Request("s3:ListBucket", BUCKET, {"s3:prefix": "flowers"})) == ALLOW
    assert evaluate(p, Request("s3:ListBucket", BUCKET, {"s3:prefix": "flowersx/"})) == (
        IMPLICIT_DENY)
    assert evaluate(p, Request("s3:ListBucket", BUCKET)) == IMPLICIT_DENY  # key missing
    # Condition keys are case-insensitive, values are not.
    assert evaluate(p, Request("s3:ListBucket", BUCKET, {"S3:Prefix": "flowers/"})) == ALLOW
    assert evaluate(p, Request("s3:ListBucket", BUCKET, {"s3:prefix": "Flowers/"})) == (
        IMPLICIT_DENY)


def test_negated_operators_and_if_exists_on_a_missing_key():
    deny = {"Effect": "Deny", "Action": "*", "Resource": "*",
            "Condition": {"StringNotEquals": {"aws:RequestedRegion": "us-east-1"}}}
    p = [policy(allow("s3:GetObject", "*"), deny)]
    assert evaluate(p, Request("s3:GetObject", "k", {"aws:RequestedRegion": "us-east-1"})) == ALLOW
    assert evaluate(p, Request("s3:GetObject", "k", {"aws:RequestedRegion": "eu-west-1"})) == (
        EXPLICIT_DENY)
    assert evaluate(p, Request("s3:GetObject", "k")) == EXPLICIT_DENY  # missing: Not... holds
    if_exists = [policy(allow("s3:GetObject", "*", Condition={
        "StringEqualsIfExists": {"s3:ExistingObjectTag/team": "ml"}}))]
    assert evaluate(if_exists, Request("s3:GetObject", "k")) == ALLOW
    assert evaluate(if_exists, Request("s3:GetObject", "k", {
        "s3:ExistingObjectTag/team": "web"})) == IMPLICIT_DENY


def test_pass_role_condition_and_several_operators_all_must_hold():
    p = [policy(allow("iam:PassRole", "arn:aws:iam::1:role/R", Condition={
        "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"},
        "StringLike": {"aws:RequestTag/project": "flower*"}}))]
    ok = {"iam:PassedToService": "sagemaker.amazonaws.com", "aws:RequestTag/project": "flowers"}
    assert evaluate(p, Request("iam:PassRole", "arn:aws:iam::1:role/R", ok)) == ALLOW
    wrong = {**ok, "iam:PassedToService": "ec2.amazonaws.com"}
    assert evaluate(p, Request("iam:PassRole", "arn:aws:iam::1:role/R", wrong)) == IMPLICIT_DENY
    assert evaluate(p, Request("iam:PassRole", "arn:aws:iam::1:role/R",
                               {"iam:PassedToService": "sagemaker.amazonaws.com"})) == (
        IMPLICIT_DENY)


def test_multi_valued_keys():
    any_of = [policy(allow("s3:PutObject", "*", Condition={
        "ForAnyValue:StringEquals": {"aws:TagKeys": ["a", "b"]}}))]
    all_of = [policy(allow("s3:PutObject", "*", Condition={
        "ForAllValues:StringEquals": {"aws:TagKeys": ["a", "b"]}}))]
    assert evaluate(any_of, Request("s3:PutObject", "k", {"aws:TagKeys": ["a", "z"]})) == ALLOW
    assert evaluate(all_of, Request("s3:PutObject", "k", {"aws:TagKeys": ["a", "z"]})) == (
        IMPLICIT_DENY)
    assert evaluate(all_of, Request("s3:PutObject", "k", {"aws:TagKeys": ["b", "a"]})) == ALLOW


def test_unsupported_parts_raise_instead_of_guessing():
    with pytest.raises(NotImplementedError):
        evaluate([policy(allow("s3:GetObject", "*", Condition={
            "NumericLessThan": {"s3:max-keys": "10"}}))], Request("s3:GetObject", "k"))
    with pytest.raises(NotImplementedError):
        evaluate([policy(allow("s3:GetObject", "arn:aws:s3:::b/${aws:username}/*"))],
                 Request("s3:GetObject", "arn:aws:s3:::b/x/k"))
    with pytest.raises(ValueError):
        evaluate([{"Statement": []}], Request("s3:GetObject", "k"))


def test_denied_lists_what_is_refused():
    p = [policy(allow("s3:GetObject", f"{BUCKET}/*"))]
    assert denied(p, [Request("s3:GetObject", f"{BUCKET}/k")]) == []
    assert denied(p, [Request("s3:PutObject", f"{BUCKET}/k")]) == [
        f"ImplicitDeny: s3:PutObject on {BUCKET}/k"]
