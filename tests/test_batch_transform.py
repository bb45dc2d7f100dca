"""Batch Transform: endpoint/batch_transform.sh against moto's server (the request it sends, the
roles' policies on the job) and local_test/batch_transform.sh against the real `serve`.

Tests for endpoint/batch_transform.sh and local_test/batch_transform.sh.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from helpers.aws_emulator import (
    ACCOUNT_ID,
    DEFAULT_BUCKET,
    REGION,
    REPO,
    SCRIPT_KEY,
    client,
    recording_account,
    run_script,
    sent,
)
from helpers.aws_requests import parse_recording, to_requests
from helpers.iam_policy import denied
from helpers.sagemaker_requests import transform
from helpers.serving import ServerProcess

BUCKET = DEFAULT_BUCKET
PAYLOADS = REPO / "local_test" / "payloads"
MODEL_DIR = REPO / "local_test" / "test_dir" / "model"
MODEL_DATA = f"s3://{BUCKET}/flower-classifier/v1/model.tar.gz"


@pytest.fixture
def account(aws_env, moto_server):
    images = {"in/rose.jpg": b"jpeg", "in/petunia.jpg": b"jpeg", "mixed/a.png": b"png",
              "mixed/b.JPG": b"jpeg"}
    with recording_account(moto_server, aws_env, objects={
            f"flower-classifier/batch/{key}": body for key, body in images.items()}) as emulator:
        yield emulator


@pytest.mark.parametrize(("args", "message"), [
    ([], "--input and --output are required"),
    (["--input", "s3://bkt/in", "--output", "s3://bkt/in/out", "--model-name", "m"],
     "must not be --input or under it"),
    (["--input", "s3://bkt/in", "--output", "s3://bkt/out"], "--model-name or --model-data"),
    (["--input", "s3://bkt/in", "--output", "s3://bkt/out", "--model-name", "m", "--role",
      f"arn:aws:iam::{ACCOUNT_ID}:role/R"], "give --model-name or"),
    (["--input", "bkt/in"], "--input must look like s3://"),
])
def test_bad_arguments(args, message, aws_env):
    result = run_script("endpoint/batch_transform.sh", *args, env=aws_env)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_transform_job(aws_env, account):
    prefix = f"s3://{BUCKET}/flower-classifier/batch"
    result = run_script("endpoint/batch_transform.sh", "--input", f"{prefix}/in", "--output",
                        f"{prefix}/out", "--model-data", MODEL_DATA, "--poll-seconds", "1",
                        env=aws_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"{prefix}/out/"
    [model_request] = sent(account, "CreateModel")
    [request] = sent(account, "CreateTransformJob")
    assert request["ModelName"] == model_request["ModelName"]
    assert request["BatchStrategy"] == "SingleRecord"
    assert request["TransformInput"] == {
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"{prefix}/in/"}},
        "ContentType": "image/jpeg", "SplitType": "None", "CompressionType": "None"}
    assert request["TransformOutput"] == {"S3OutputPath": f"{prefix}/out/",
                                          "Accept": "application/json", "AssembleWith": "None"}
    # Left out, so SageMaker takes them from the container's GET /execution-parameters.
    assert "MaxPayloadInMB" not in request and "MaxConcurrentTransforms" not in request

    sm = client(account, "sagemaker")
    job = sm.describe_transform_job(TransformJobName=request["TransformJobName"])
    model = sm.describe_model(ModelName=request["ModelName"])
    iam = client(account, "iam")
    role = "SageMakerFlowerClassifierRole"
    policies = [iam.get_role_policy(RoleName=role, PolicyName=n)["PolicyDocument"]
                for n in iam.list_role_policies(RoleName=role)["PolicyNames"]]
    assert denied(policies, transform(job, model, REGION, ACCOUNT_ID)) == []
    deployer = [json.loads(run_script("iam/render_policy.sh", "iam/deployer-policy.json",
                                      env=aws_env).stdout)]
    calls = [c for c in parse_recording(account.recording()) if c.access_key == SCRIPT_KEY]
    assert denied(deployer, [r for c in calls for r in to_requests(c, ACCOUNT_ID)]) == []

    # An existing model, mixed file types, explicit limits.
    account.start_recording()
    result = run_script("endpoint/batch_transform.sh", "--input", f"{prefix}/mixed", "--output",
                        f"{prefix}/out2", "--model-name", request["ModelName"],
                        "--max-payload-mb", "6", "--max-concurrent", "4", "--poll-seconds", "1",
                        env=aws_env)
    assert result.returncode == 0, result.stderr
    assert sent(account, "CreateModel") == []
    [request] = sent(account, "CreateTransformJob")
    assert request["TransformInput"]["ContentType"] == "application/x-image"
    assert (request["MaxPayloadInMB"], request["MaxConcurrentTransforms"]) == (6, 4)

    result = run_script("endpoint/batch_transform.sh", "--input", f"{prefix}/nothing",
                        "--output", f"{prefix}/out3", "--model-name", "m", env=aws_env)
    assert result.returncode != 0 and "no objects under" in result.stderr


def local_transform(*args, timeout=300):
    return subprocess.run([str(REPO / "local_test" / "batch_transform.sh"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess(MODEL_DIR, env={"SAGEMAKER_MAX_PAYLOAD_IN_MB": "1"},
                       log_path=tmp_path_factory.mktemp("serve") / "serve.log") as proc:
        proc.wait_ready(timeout=300)
        yield proc


def test_local_batch_transform_writes_out_files_from_the_real_server(server, tmp_path):
    source = tmp_path / "in"
    (source / "a").mkdir(parents=True)
    (source / "b").mkdir()
    shutil.copy(PAYLOADS / "rose.jpg", source / "a" / "rose.jpg")
    shutil.copy(PAYLOADS / "columbine.png", source / "b" / "columbine.png")
    shutil.copy(PAYLOADS / "petunia.jpg", source / "petunia.jpg")
    out = tmp_path / "out"
    result = local_transform(source, out, "--url", server.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(out)
    assert "application/x-image" in result.stderr  # mixed names: one type for the job
    assert "MaxPayloadInMB 1" in result.stderr  # read from /execution-parameters
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.out"))
    assert written == ["a/rose.jpg.out", "b/columbine.png.out", "petunia.jpg.out"]
    for name in written:
        photo = source / name.removesuffix(".out")
        expected = server.post(photo.read_bytes(), "application/x-image").json()
        got = json.loads((out / name).read_text())["predictions"]
        # The same answer as one direct POST (probabilities to batching's rounding).
        assert [(p["class"], p["label"]) for p in got] == [
            (p["class"], p["label"]) for p in expected["predictions"]]
        assert [p["probability"] for p in got] == pytest.approx(
            [p["probability"] for p in expected["predictions"]], abs=1e-4)

    # A file over MaxPayloadInMB fails as it would fail the job; the others are still written.
    (source / "huge.jpg").write_bytes(b"\xff\xd8\xff" + b"0" * (1024 * 1024))
    (source / "notes.txt").write_text("not an image")
    again = local_transform(source, tmp_path / "out2", "--url", server.url)
    assert again.returncode != 0
    assert "huge.jpg: 1048579 bytes is over MaxPayloadInMB 1" in again.stderr
    assert "notes.txt: HTTP 400" in again.stderr
    assert (tmp_path / "out2" / "a" / "rose.jpg.out").is_file()
    assert not (tmp_path / "out2" / "huge.jpg.out").exists()


def test_local_batch_transform_arguments(tmp_path):
    result = local_transform(tmp_path / "missing", tmp_path / "out")
    assert result.returncode != 0 and "is not a directory" in result.stderr
    (tmp_path / "in").mkdir()
    result = local_transform(tmp_path / "in", tmp_path / "in" / "out", "--url", "http://x")
    assert result.returncode != 0 and "must not be INPUT_DIR or under it" in result.stderr
    result = local_transform("--help")
    assert result.returncode == 0 and result.stdout.startswith("Usage:")


def test_responses_carry_content_length(server):
    """Async inference and Batch Transform read whole answers: every response says its size."""
    import requests

    photo = (PAYLOADS / "rose.jpg").read_bytes()
    answers = [requests.get(server.url + "/ping", timeout=10),
               server.post(photo, "image/jpeg"),
               server.post(b"not an image", "image/jpeg"),
               requests.get(server.url + "/execution-parameters", timeout=10)]
    assert [a.status_code for a in answers] == [200, 200, 400, 200]
    for answer in answers:
        assert "chunked" not in answer.headers.get("Transfer-Encoding", "")
        assert int(answer.headers["Content-Length"]) == len(answer.content)


def test_container_honours_the_transform_job_environment(tmp_path):
    env = {"SAGEMAKER_BATCH": "true", "SAGEMAKER_BATCH_STRATEGY": "MULTI_RECORD",
           "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "3", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "2"}
    import requests

    with ServerProcess(MODEL_DIR, env=env, log_path=tmp_path / "serve.log") as proc:
        proc.wait_ready(timeout=300)
        params = requests.get(proc.url + "/execution-parameters", timeout=10).json()
    assert params == {"MaxConcurrentTransforms": 3, "BatchStrategy": "MULTI_RECORD",
                      "MaxPayloadInMB": 2}
    with ServerProcess(MODEL_DIR, env={"SAGEMAKER_BATCH_STRATEGY": "EVERYTHING"},
                       log_path=tmp_path / "bad.log") as proc:
        assert proc.wait_exit(timeout=120) == 2
        assert "SAGEMAKER_BATCH_STRATEGY='EVERYTHING' is invalid" in proc.log
