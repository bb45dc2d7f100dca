"""train/sagemaker_train.sh against moto's server (data upload, the create-training-job request
it sends, waiting, artifact URI), the roles' policies on the job, and its metric regexes
against the log lines the container's real training prints.

Tests for train/sagemaker_train.sh.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from helpers.aws_emulator import (
    ACCOUNT_ID,
    DEFAULT_BUCKET,
    REGION,
    REPO,
    SCRIPT_KEY,
    client,
    run_script,
    sent,
)
from helpers.aws_requests import parse_recording, to_requests
from helpers.iam_policy import denied
from helpers.sagemaker_requests import training
from helpers.sample_data import make_color_dataset

BUCKET = DEFAULT_BUCKET
SCRIPT = "train/sagemaker_train.sh"


@pytest.mark.parametrize(("args", "message"), [
    ([], "--data is required"),
    (["--data", "/nonexistent"], "must hold train/<class>/ and valid/<class>/"),
    (["--data", "s3://bkt/p", "--checkpoint-s3", "s3://bkt/c"], "go with --spot"),
    (["--data", "s3://bkt/p", "--hyperparameters", "epochs=2,colour=red"],
     "unknown hyperparameter 'colour'"),
    (["--data", "s3://bkt/p", "--hyperparameters", "epochs"], "wants k=v,k=v"),
    (["--data", "s3://bkt/p", "--role", "MyRole"], "--role must be an IAM role ARN"),
])
def test_bad_arguments(args, message, aws_env):
    result = run_script(SCRIPT, *args, env=aws_env)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_help(aws_env):
    result = run_script(SCRIPT, "--help", env=aws_env)
    assert result.returncode == 0 and result.stdout.startswith("Usage:")


def test_training_job(aws_env, account, tmp_path):
    data = make_color_dataset(tmp_path / "flowers")
    args = ["--data", str(data), "--hyperparameters", "arch=resnet18,epochs=2,no_augment=true",
            "--spot", "--wait", "--poll-seconds", "1", "--instance-type", "ml.g5.xlarge"]
    result = run_script(SCRIPT, *args, env=aws_env, timeout=300)
    assert result.returncode == 0, result.stderr
    [job] = client(account, "sagemaker").list_training_jobs()["TrainingJobSummaries"]
    name = job["TrainingJobName"]
    assert re.fullmatch(r"flowers-\d{8}-\d{6}-[0-9a-f]{4}", name)
    artifact = f"s3://{BUCKET}/flower-classifier/training/{name}/output/model.tar.gz"
    assert result.stdout.strip().splitlines()[-1] == artifact  # deploy.sh --model-data takes it
    assert "Completed" in result.stderr  # progress is shown

    s3 = client(account, "s3")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    prefix = "flower-classifier/training/data/flowers"
    assert {f"{prefix}/train/1/0.jpg", f"{prefix}/valid/3/2.jpg",
            f"{prefix}/train/cat_to_name.json"} <= keys

    [request] = sent(account, "CreateTrainingJob")
    assert request["HyperParameters"] == {"arch": "resnet18", "epochs": "2", "no_augment": "true"}
    assert [(c["ChannelName"], c["DataSource"]["S3DataSource"]["S3Uri"])
            for c in request["InputDataConfig"]] == [
        ("train", f"s3://{BUCKET}/{prefix}/train/"), ("valid", f"s3://{BUCKET}/{prefix}/valid/")]
    assert request["AlgorithmSpecification"]["TrainingImage"].startswith(
        f"{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com/flower-classifier@sha256:")
    assert request["RoleArn"] == f"arn:aws:iam::{ACCOUNT_ID}:role/SageMakerFlowerClassifierRole"
    assert request["EnableManagedSpotTraining"] is True
    assert request["CheckpointConfig"] == {
        "S3Uri": f"s3://{BUCKET}/flower-classifier/training/checkpoints/flowers/",
        "LocalPath": "/opt/ml/checkpoints"}
    stopping = request["StoppingCondition"]
    assert stopping["MaxWaitTimeInSeconds"] >= stopping["MaxRuntimeInSeconds"]

    # The execution role allows everything SageMaker does for this job (moto keeps the request's
    # channels, output and checkpoint config; its MetricDefinitions are its own, not ours).
    iam = client(account, "iam")
    role = "SageMakerFlowerClassifierRole"
    policies = [iam.get_role_policy(RoleName=role, PolicyName=n)["PolicyDocument"]
                for n in iam.list_role_policies(RoleName=role)["PolicyNames"]]
    described = client(account, "sagemaker").describe_training_job(TrainingJobName=name)
    assert denied(policies, training(described, REGION, ACCOUNT_ID)) == []
    # ... and the deployer's policy allows every call the script made.
    rendered = run_script("iam/render_policy.sh", "iam/deployer-policy.json", env=aws_env)
    deployer = [json.loads(rendered.stdout)]
    calls = [c for c in parse_recording(account.recording()) if c.access_key == SCRIPT_KEY]
    assert denied(deployer, [r for c in calls for r in to_requests(c, ACCOUNT_ID)]) == []

    # Again: a new job; the data is already there, so nothing but the names file is sent again.
    account.start_recording()
    result = run_script(SCRIPT, *args, env=aws_env, timeout=300)
    assert result.returncode == 0, result.stderr
    puts = [c for c in parse_recording(account.recording())
            if c.access_key == SCRIPT_KEY and c.service == "s3" and c.method == "PUT"]
    assert [c.path.rsplit("/", 1)[1] for c in puts] == ["cat_to_name.json"]
    assert len(client(account, "sagemaker").list_training_jobs()["TrainingJobSummaries"]) == 2


def test_s3_data_is_used_as_it_is(aws_env, account):
    result = run_script(SCRIPT, "--data", f"s3://{BUCKET}/datasets/flowers/", "--name", "exp",
                        env=aws_env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"exp-\d{8}-\d{6}-[0-9a-f]{4}", result.stdout.strip().splitlines()[-1])
    [request] = sent(account, "CreateTrainingJob")
    assert [c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]] == [
        f"s3://{BUCKET}/datasets/flowers/train/", f"s3://{BUCKET}/datasets/flowers/valid/"]
    assert "EnableManagedSpotTraining" not in request
    assert not [c for c in parse_recording(account.recording()) if c.service == "s3"
                and c.method == "PUT"]


def test_metric_regexes_match_the_real_training_log(aws_env, account, tmp_path):
    """The container's training, run for real (SageMaker's /opt/ml layout, tiny data), prints
    the lines the job's metric definitions parse; every value matches the checkpoint's history."""
    result = run_script(SCRIPT, "--data", f"s3://{BUCKET}/d", "--dry-run", env=aws_env,
                        timeout=300)
    assert result.returncode == 0, result.stderr
    assert "aws sagemaker create-training-job" in result.stderr
    assert sent(account, "CreateTrainingJob") == []  # the dry run started nothing
    result = run_script(SCRIPT, "--data", f"s3://{BUCKET}/d", env=aws_env, timeout=300)
    assert result.returncode == 0, result.stderr
    [request] = sent(account, "CreateTrainingJob")
    definitions = request["AlgorithmSpecification"]["MetricDefinitions"]

    base = tmp_path / "opt_ml"
    make_color_dataset(base / "input" / "data")
    (base / "input" / "config").mkdir(parents=True)
    (base / "input" / "config" / "hyperparameters.json").write_text(json.dumps({
        "arch": "resnet18", "weights": "none", "epochs": "3", "hidden_units": "0",
        "no_augment": "true", "num_workers": "0", "batch_size": "8", "learning_rate": "0.01"}))
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), "PYTHONPATH": str(REPO / "container")}
    run = subprocess.run([sys.executable, str(REPO / "container" / "train")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    log = (run.stdout + run.stderr).splitlines()

    import torch

    history = torch.load(base / "model" / "checkpoint.pth", weights_only=True)["history"]
    expected = {"train:loss": [r["train_loss"] for r in history],
                "validation:loss": [r["valid_loss"] for r in history],
                "validation:accuracy": [100 * r["top1"] for r in history],
                "validation:top5": [100 * r["top5"] for r in history]}
    assert sorted(d["Name"] for d in definitions) == sorted(expected)
    for definition in definitions:
        found = [float(m.group(1)) for line in log
                 if (m := re.search(definition["Regex"], line))]
        assert found == pytest.approx(expected[definition["Name"]], abs=0.06), definition
