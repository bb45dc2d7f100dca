# Tests of endpoint/client.py against moto's sagemaker-runtime (canned responses set through
# /moto-api): predict() in-process with real boto3 over HTTP, and the module's command line.
"""Python client tests."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from aws_emulator import (  # noqa: F401 (importing the *_fixture functions registers them)
    REPO,
    aws_env_fixture,
    moto_server_fixture,
)

PREDICTIONS = {"predictions": [{"class": "1", "label": "pink primrose", "probability": 0.9}]}


def load_client():
    spec = importlib.util.spec_from_file_location("flower_client", REPO / "endpoint" / "client.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def canned(moto_server, body=PREDICTIONS):
    moto_server.set_endpoint_results(
        [{"Body": json.dumps(body), "ContentType": "application/json",
          "InvokedProductionVariant": "AllTraffic", "CustomAttributes": ""}]
    )  # fmt: skip


def test_guess_content_type():
    client = load_client()
    assert client.guess_content_type(b"", "x.JPG") == "image/jpeg"
    assert client.guess_content_type(b"", "x.png") == "image/png"
    assert client.guess_content_type(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert client.guess_content_type(b"\x89PNG\r\n\x1a\nrest") == "image/png"
    assert client.guess_content_type(b"GIF89a") == "application/x-image"
    assert client.RETRY_CONFIG.retries == {"max_attempts": 5, "mode": "adaptive"}


def test_predict_bytes_and_path(aws_env, moto_server, monkeypatch, tmp_path):
    for key, value in aws_env.items():  # configuration only: boto3 talks HTTP to moto
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    client = load_client()
    canned(moto_server)
    # moto decodes request bodies as UTF-8, so the "image" is ASCII bytes (see test_invoke).
    assert client.predict("flowers", b"placeholder", top_k=3, content_type="image/jpeg") == (
        PREDICTIONS
    )
    image = tmp_path / "flower.png"
    image.write_bytes(b"placeholder two")
    canned(moto_server, {"predictions": []})
    assert client.predict("flowers", image) == {"predictions": []}
    with pytest.raises(ValueError, match="top_k"):
        client.predict("flowers", b"x", top_k=0)


def test_command_line(aws_env, moto_server, tmp_path):
    canned(moto_server)
    image = tmp_path / "flower.jpg"
    image.write_bytes(b"placeholder")
    cmd = [sys.executable, str(REPO / "endpoint" / "client.py"), "flowers", str(image)]
    result = subprocess.run([*cmd, "--top-k", "1"], env=aws_env, capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == PREDICTIONS

    result = subprocess.run([*cmd[:-1], str(tmp_path / "missing.jpg")], env=aws_env,
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 1 and result.stderr.startswith("error: ")
