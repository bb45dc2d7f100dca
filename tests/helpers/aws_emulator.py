"""Test helper: runs moto's HTTP server as a real process on a loopback port and gives the
deployment scripts an environment pointing at it (dummy credentials, AWS_ENDPOINT_URL).

moto server fixtures for the AWS script tests.

Use them in a test module by importing the fixture functions, which registers them there:
    from helpers.aws_emulator import aws_env_fixture, moto_server_fixture  # noqa: F401
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers.aws_requests import parse_recording

REPO = Path(__file__).resolve().parents[2]
ACCOUNT_ID = "123456789012"  # moto's default account
REGION = "us-east-1"
# The scripts sign with this key and the tests' own boto3 clients with "testing", so a
# recording (Emulator.recording) tells the scripts' calls apart from the tests' setup.
SCRIPT_KEY = "AKIASCRIPTSUNDERTEST"


@dataclass
class Emulator:
    url: str

    def reset(self) -> None:
        """Forget every resource, so each test starts from an empty account."""
        self._post("/moto-api/reset", {})

    def start_recording(self) -> None:
        """Forget the recorded requests and record from now on (moto's request recorder)."""
        self._post("/moto-api/recorder/reset-recording", {})
        self._post("/moto-api/recorder/start-recording", {})

    def recording(self) -> str:
        """The requests recorded since start_recording(), one JSON object per line."""
        with urllib.request.urlopen(self.url + "/moto-api/recorder/download-recording",
                                    timeout=30) as response:
            return response.read().decode()

    def set_endpoint_results(self, results: list[dict]) -> None:
        """Queue canned sagemaker-runtime invoke-endpoint responses."""
        payload = {"account_id": ACCOUNT_ID, "region": REGION, "results": results}
        self._post("/moto-api/static/sagemaker/endpoint-results", payload)

    def _post(self, path: str, payload: dict) -> None:
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status < 300, response.status


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_client():
    """endpoint/client.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("flower_client", REPO / "endpoint" / "client.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session", name="moto_server")
def moto_server_fixture(tmp_path_factory: pytest.TempPathFactory):
    """Start `python -m moto.server` on 127.0.0.1, wait until it answers, stop it at the end."""
    port = _free_port()
    folder = tmp_path_factory.mktemp("moto")
    log = (folder / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        # The recorder stays off until a test calls Emulator.start_recording().
        env={**os.environ, "MOTO_RECORDER_FILEPATH": str(folder / "recording.jsonl")},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):  # up to ~20 s
            if proc.poll() is not None:
                pytest.fail(f"moto server exited with {proc.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(url + "/moto-api/data.json", timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("moto server did not answer within 20 s")
        yield Emulator(url)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(name="aws_env")
def aws_env_fixture(moto_server: Emulator, tmp_path: Path) -> dict[str, str]:
    """Environment for running the scripts against a freshly reset emulator."""
    moto_server.reset()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=SCRIPT_KEY,
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_SESSION_TOKEN="testing",
        AWS_REGION=REGION,
        AWS_ENDPOINT_URL=moto_server.url,
        # Keep the developer's own ~/.aws out of the tests.
        AWS_CONFIG_FILE=str(tmp_path / "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "aws-credentials"),
        # The `aws` CLI installed next to this Python comes first.
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def run_script(script: str, *args: str, env: dict[str, str], timeout: int = 120):
    """Run a repo script (path relative to the repo root) as a user would."""
    return subprocess.run(
        [str(REPO / script), *args],
        check=False,
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def client(emulator: Emulator, service: str):
    """A boto3 client talking to the emulator, for asserting what the scripts created."""
    import boto3

    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=emulator.url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def push_image(emulator, repository: str = "flower-classifier", tag: str = "latest") -> str:
    """What build_and_push.sh leaves in ECR (Docker cannot run here): an image tagged `tag`
    (latest; latest-cpu for --cpu). Returns its digest."""
    ecr = client(emulator, "ecr")
    try:
        ecr.create_repository(repositoryName=repository)
    except ecr.exceptions.RepositoryAlreadyExistsException:
        pass
    manifest = {"schemaVersion": 2, "mediaType":
                "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                           "size": 7023, "digest": "sha256:" + "a" * 64}, "layers": [],
                "annotations": {"tag": tag}}  # a different manifest, digest per tag
    image = ecr.put_image(repositoryName=repository, imageManifest=json.dumps(manifest),
                          imageTag=tag)["image"]
    return image["imageId"]["imageDigest"]


# SageMaker's default bucket, as lib/common.sh names it (default_bucket)
DEFAULT_BUCKET = f"sagemaker-{REGION}-{ACCOUNT_ID}"


@contextmanager
def recording_account(emulator, env: dict[str, str], *, bucket: bool = False,
                      objects: dict[str, bytes] | None = None) -> Iterator:
    """An account after the README's setup: the image pushed, the role created by the
    administrator, with the default bucket (and `objects` in it) if asked; then the scripts'
    calls are recorded until the block ends."""
    push_image(emulator)
    result = run_script("iam/create_role.sh", env={**env, "AWS_ACCESS_KEY_ID": "testing"})
    assert result.returncode == 0, result.stderr
    if bucket or objects:
        s3 = client(emulator, "s3")
        s3.create_bucket(Bucket=DEFAULT_BUCKET)
        for key, body in (objects or {}).items():
            s3.put_object(Bucket=DEFAULT_BUCKET, Key=key, Body=body)
    emulator.start_recording()
    yield emulator
    emulator._post("/moto-api/recorder/stop-recording", {})


def sent(emulator, operation: str) -> list[dict]:
    """The parameters of every `operation` call the scripts sent."""
    calls = parse_recording(emulator.recording())
    return [c.params for c in calls if c.access_key == SCRIPT_KEY and c.operation == operation]


def readme_deploy_block() -> str:
    """The first bash block of the README's "## Deploy to SageMaker" section."""
    section = (REPO / "README.md").read_text().split("## Deploy to SageMaker", 1)[1]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def runnable(block: str, admin_key: str | None = None) -> str:
    """The block as a script, changed only where the emulator cannot follow it: the image build
    becomes build_and_push.sh --dry-run (same arguments, prints the URI a push would), and the
    invoke and delete lines are dropped (moto cannot run a container; the endpoint is read).
    With admin_key, the administrator's iam/ scripts sign with that key instead."""
    lines = []
    for line in re.sub(r"\\\n\s*", "", block).splitlines():
        if re.match(r"\s*endpoint/(invoke|delete)\.sh", line):
            continue
        if admin_key:
            line = re.sub(r"(?<![\w/.])iam/", f"AWS_ACCESS_KEY_ID={admin_key} iam/", line)
        lines.append(line.replace("./build_and_push.sh ", "./build_and_push.sh --dry-run ", 1))
    assert any("--dry-run" in line for line in lines), "the README no longer builds the image"
    return "set -euo pipefail\n" + "\n".join(lines) + "\n"


def run_readme_deploy(env: dict[str, str], tmp_path: Path,
                      admin_key: str | None = None) -> subprocess.CompletedProcess:
    """Run the README's deploy commands (see runnable) in bash from the repo root."""
    script = tmp_path / "readme_deploy.sh"
    script.write_text(runnable(readme_deploy_block(), admin_key))
    return subprocess.run(["bash", str(script)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
