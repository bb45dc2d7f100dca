"""train/tune.sh against moto's server: the tuning request it sends (checked against botocore's
model of the API), its objective among the job's metric definitions, the roles' policies.

Tests for train/tune.sh.
"""

from __future__ import annotations

import json
import re

import botocore.session
import pytest
from botocore.validate import ParamValidator

from helpers.aws_emulator import (
    ACCOUNT_ID,
    DEFAULT_BUCKET,
    REGION,
    SCRIPT_KEY,
    client,
    run_script,
)
from helpers.aws_requests import parse_recording, to_requests
from helpers.iam_policy import denied
from helpers.sagemaker_requests import training

BUCKET = DEFAULT_BUCKET
SCRIPT = "train/tune.sh"


@pytest.mark.parametrize(("args", "message"), [
    ([], "--data is required"),
    (["--data", "s3://bkt/d", "--parallel-jobs", "5", "--max-jobs", "4"], "must not exceed"),
    (["--data", "s3://bkt/d", "--learning-rate", "0.1"], "must be MIN:MAX"),
    (["--data", "s3://bkt/d", "--epochs", "9:3"], "0 < MIN < MAX"),
    (["--data", "s3://bkt/d", "--hidden-units", "1.5:8"], "must be MIN:MAX"),
    (["--data", "s3://bkt/d", "--hyperparameters", "epochs=3"], "must not set epochs"),
    (["--data", "s3://bkt/d", "--strategy", "Guess"], "--strategy must be"),
])
def test_bad_arguments(args, message, aws_env):
    result = run_script(SCRIPT, *args, env=aws_env)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_tuning_job(aws_env, account):
    data = f"s3://{BUCKET}/flower-classifier/data/flowers"
    result = run_script(SCRIPT, "--data", data, "--name", "flowers-vgg-long-name",
                        "--max-jobs", "4", "--parallel-jobs", "2",
                        "--learning-rate", "0.0005:0.05", "--hidden-units", "256:2048",
                        "--epochs", "2:6", "--hyperparameters", "arch=vgg16",
                        "--poll-seconds", "1", env=aws_env, timeout=300)
    assert result.returncode == 0, result.stderr
    calls = [c for c in parse_recording(account.recording()) if c.access_key == SCRIPT_KEY]
    [request] = [c.params for c in calls if c.operation == "CreateHyperParameterTuningJob"]
    model = botocore.session.get_session().get_service_model("sagemaker")
    shape = model.operation_model("CreateHyperParameterTuningJob").input_shape
    report = ParamValidator().validate(request, shape)
    assert not report.has_errors(), report.generate_report()

    name = request["HyperParameterTuningJobName"]
    assert len(name) <= 32 and re.fullmatch(r"flowers-vgg-long-\d{10}-[0-9a-f]{4}", name)
    config = request["HyperParameterTuningJobConfig"]
    assert config["HyperParameterTuningJobObjective"] == {
        "Type": "Maximize", "MetricName": "validation:accuracy"}
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 4,
                                        "MaxParallelTrainingJobs": 2}
    ranges = config["ParameterRanges"]
    assert ranges["ContinuousParameterRanges"] == [
        {"Name": "learning_rate", "MinValue": "0.0005", "MaxValue": "0.05",
         "ScalingType": "Logarithmic"}]
    assert [(r["Name"], r["MinValue"], r["MaxValue"])
            for r in ranges["IntegerParameterRanges"]] == [
        ("hidden_units", "256", "2048"), ("epochs", "2", "6")]
    definition = request["TrainingJobDefinition"]
    # SageMaker refuses an objective that is not one of a custom image's metric definitions.
    metrics = {m["Name"] for m in definition["AlgorithmSpecification"]["MetricDefinitions"]}
    assert "validation:accuracy" in metrics
    assert definition["StaticHyperParameters"] == {"arch": "vgg16"}
    assert [c["DataSource"]["S3DataSource"]["S3Uri"] for c in definition["InputDataConfig"]] == [
        f"{data}/train/", f"{data}/valid/"]

    best = client(account, "sagemaker").describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name)["BestTrainingJob"]["TrainingJobName"]
    assert f"best training job: {best}" in result.stderr
    assert result.stdout.strip().splitlines()[-1] == (
        f"s3://{BUCKET}/flower-classifier/tuning/{best}/output/model.tar.gz")

    # Each training job the tuner starts runs with the role on these channels and output.
    iam = client(account, "iam")
    role = "SageMakerFlowerClassifierRole"
    policies = [iam.get_role_policy(RoleName=role, PolicyName=n)["PolicyDocument"]
                for n in iam.list_role_policies(RoleName=role)["PolicyNames"]]
    job = {"TrainingJobName": best, **definition, "AlgorithmSpecification": {
        "TrainingImage": definition["AlgorithmSpecification"]["TrainingImage"]}}
    assert denied(policies, training(job, REGION, ACCOUNT_ID)) == []
    deployer = [json.loads(run_script("iam/render_policy.sh", "iam/deployer-policy.json",
                                      env=aws_env).stdout)]
    assert denied(deployer, [r for c in calls for r in to_requests(c, ACCOUNT_ID)]) == []


def test_dry_run_starts_nothing(aws_env, account, tmp_path):
    from helpers.sample_data import make_color_dataset

    data = make_color_dataset(tmp_path / "flowers")
    result = run_script(SCRIPT, "--data", str(data), "--dry-run", env=aws_env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "aws sagemaker create-hyper-parameter-tuning-job" in result.stderr
    assert "would sync" in result.stderr
    sm = client(account, "sagemaker")
    assert sm.list_hyper_parameter_tuning_jobs()["HyperParameterTuningJobSummaries"] == []
    assert "Contents" not in client(account, "s3").list_objects_v2(Bucket=BUCKET)
