"""build_and_push.sh end to end: ECR API answered by a local moto server (AWS_ENDPOINT_URL),
images pushed to a local docker-registry (ECR_REGISTRY); plus its error paths and --help.

Tests of build_and_push.sh against moto + a local registry (needs a Docker engine).
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import boto3
import pytest

from helpers.docker_env import (
    REPO,
    build_args_env,
    build_image,
    free_port,
    http,
    require_docker,
    run,
    wait_http,
)

SCRIPT = str(REPO / "build_and_push.sh")
REPO_NAME = "flower-classifier-bp-test"
REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto_url():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/moto-api/", timeout=60)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    require_docker()
    port, state = free_port(), tmp_path_factory.mktemp("registry")
    run([str(REPO / "ci" / "local_registry.sh"), str(port), str(state)], timeout=120)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        pid = int((state / "registry.pid").read_text())
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def tool_bin(tmp_path: pathlib.Path, names: list[str]) -> str:
    """A PATH directory holding only the named tools (to simulate missing ones)."""
    d = tmp_path / "bin"
    d.mkdir(exist_ok=True)
    for name in names:
        found = shutil.which(
            name,
            path=os.pathsep.join([str(pathlib.Path(sys.executable).parent), os.environ["PATH"]]),
        )
        assert found, name
        (d / name).symlink_to(found)
    return str(d)


@pytest.fixture
def env(moto_url, registry, tmp_path):
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {
        **base,
        "PATH": os.pathsep.join([str(pathlib.Path(sys.executable).parent), os.environ["PATH"]]),
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "ECR_REGISTRY": registry,
        "DOCKER_CONFIG": str(tmp_path / "docker-config"),
        "BUILD_ARGS": build_args_env("gpu"),
    }


def test_help():
    proc = run([SCRIPT, "--help"])
    for word in (
        "--no-push",
        "IMAGE_NAME",
        "TAG",
        "AWS_ENDPOINT_URL",
        "ECR_REGISTRY",
        "BUILD_ARGS",
    ):
        assert word in proc.stdout


def test_unknown_option_fails():
    proc = run([SCRIPT, "--bogus"], check=False)
    assert proc.returncode != 0 and "error: unknown option" in proc.stderr


def test_missing_docker_is_clear(tmp_path):
    proc = run(
        [SCRIPT, "img", "t1"],
        check=False,
        env={**os.environ, "PATH": tool_bin(tmp_path, ["bash", "dirname", "git"])},
    )
    assert proc.returncode != 0 and "error: docker not found" in proc.stderr


@pytest.mark.docker
def test_missing_aws_cli_is_clear(tmp_path):
    require_docker()
    proc = run(
        [SCRIPT, "img", "t1"],
        check=False,
        env={**os.environ, "PATH": tool_bin(tmp_path, ["bash", "dirname", "git", "docker"])},
    )
    assert proc.returncode != 0 and "error: AWS CLI not found" in proc.stderr


@pytest.mark.docker
@pytest.mark.aws
def test_missing_credentials_is_clear(env):
    env = {k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    proc = run([SCRIPT, REPO_NAME, "t1"], check=False, env=env, timeout=120)
    assert proc.returncode != 0 and "error: no usable AWS credentials" in proc.stderr


@pytest.mark.docker
@pytest.mark.aws
def test_build_and_push_to_local_registry(env, registry, moto_url):
    build_image()  # warm the layer cache with the same build args: the script's build is seconds
    expected = f"{registry}/{REPO_NAME}:t1"
    tags = [expected, f"{registry}/{REPO_NAME}:latest"]
    try:
        for attempt in (1, 2):  # the second run must be idempotent
            start = time.monotonic()
            proc = run([SCRIPT, REPO_NAME, "t1"], env=env, timeout=1800, check=False)
            assert proc.returncode == 0, proc.stderr[-4000:]
            assert proc.stdout.strip().splitlines()[-1] == expected
            print(f"run {attempt}: {time.monotonic() - start:.0f}s", file=sys.stderr)

        ecr = boto3.client(
            "ecr",
            region_name=REGION,
            endpoint_url=moto_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        repos = ecr.describe_repositories()["repositories"]
        mine = [r for r in repos if r["repositoryName"] == REPO_NAME]
        assert len(mine) == 1
        assert mine[0]["imageScanningConfiguration"]["scanOnPush"] is True

        status, _, body = http("GET", f"http://{registry}/v2/{REPO_NAME}/tags/list")
        assert status == 200 and sorted(json.loads(body)["tags"]) == ["latest", "t1"]
        status, _, _ = http(
            "GET",
            f"http://{registry}/v2/{REPO_NAME}/manifests/t1",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        )
        assert status == 200
    finally:
        for tag in tags:
            subprocess.run(["docker", "rmi", tag], capture_output=True, timeout=60)


@pytest.mark.docker
@pytest.mark.aws
def test_latest_is_not_an_immutable_tag(env):
    proc = run([SCRIPT, REPO_NAME, "latest"], check=False, env=env)
    assert proc.returncode != 0 and "error: TAG must be immutable" in proc.stderr


@pytest.mark.docker
def test_no_push_builds_locally_without_aws(tmp_path):
    build_image()
    env = {
        **os.environ,
        "PATH": tool_bin(tmp_path, ["bash", "dirname", "git", "docker"]),
        "BUILD_ARGS": build_args_env("gpu"),
    }
    try:
        proc = run(
            [SCRIPT, "--no-push", "flower-bp-nopush", "t2"], env=env, timeout=1800, check=False
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.strip().splitlines()[-1] == "flower-bp-nopush:t2"
        run(["docker", "image", "inspect", "flower-bp-nopush:t2", "flower-bp-nopush:latest"])
    finally:
        for tag in ("flower-bp-nopush:t2", "flower-bp-nopush:latest"):
            subprocess.run(["docker", "rmi", tag], capture_output=True, timeout=60)
