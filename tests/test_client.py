"""Tests of endpoint/client.py: against moto's sagemaker-runtime (canned responses), and against
the real server behind SageMaker's invoke path (RuntimeProxy) for max_side's real answers.

Python client tests.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import boto3
import numpy as np
import pytest
from PIL import ExifTags, Image

from helpers.aws_emulator import (
    REPO,
    load_client,
)
from helpers.sample_data import opened, phone_photo
from helpers.serving import RuntimeProxy

# Any resampling of these noisy phone-sized photos (the server's own Resize from 3000 px against
# Lanczos to 1024 px, then the server's) moved the demo model's top-1 probability by up to 0.03,
# and never its top-1 class; max_side is the caller's choice, so this bounds it, not 0.02.
SHRINK_TOLERANCE = 0.05

PREDICTIONS = {"predictions": [{"class": "1", "label": "pink primrose", "probability": 0.9}]}



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


def test_shrink_downscales_big_photos_and_leaves_small_ones(photos):
    client = load_client()
    big = phone_photo(photos[1])
    width, height = opened(big).size
    data, content_type = client.shrink(big, 1024)
    small = opened(data)
    assert content_type == "image/jpeg" and small.format == "JPEG" and max(small.size) == 1024
    assert abs(small.width / small.height - width / height) < 0.01
    assert len(data) < len(big) / 4
    original = photos[1].read_bytes()
    assert client.shrink(original, 1024) == (original, None)  # already small: sent as it is


def test_shrink_applies_exif_orientation(photos):
    client = load_client()
    big = phone_photo(photos[1], orientation=6)  # stored landscape, shown portrait
    stored = opened(big)
    assert stored.width > stored.height
    small = opened(client.shrink(big, 1024)[0])
    assert small.height == 1024 and small.width < small.height
    assert small.getexif().get(ExifTags.Base.Orientation, 1) == 1
    upright = stored.transpose(Image.Transpose.ROTATE_270).resize(small.size, Image.LANCZOS)
    gap = np.abs(np.asarray(small, np.int16) - np.asarray(upright, np.int16)).mean()
    assert gap < 3, gap


def test_shrink_keeps_transparency_and_refuses_non_images(tmp_path):
    client = load_client()
    pixels = np.random.default_rng(1).integers(0, 256, (1500, 2000, 4), dtype=np.uint8)
    pixels[:, :500, 3] = 0
    out = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(out, "PNG")
    data, content_type = client.shrink(out.getvalue(), 1024)
    small = opened(data)
    assert content_type == "image/png" and small.mode == "RGBA" and small.size == (1024, 768)
    assert small.getchannel("A").getextrema()[0] == 0
    palette = Image.fromarray(pixels[:, :, 0]).convert("P")
    out = io.BytesIO()
    palette.save(out, "PNG", transparency=0)
    data, content_type = client.shrink(out.getvalue(), 1024)
    assert content_type == "image/png" and opened(data).mode == "RGBA"
    deep = io.BytesIO()
    Image.fromarray(np.full((1500, 2000), 40000, np.uint16)).save(deep, "PNG")
    assert client.shrink(deep.getvalue(), 1024) == (deep.getvalue(), None)
    with pytest.raises(ValueError, match="max_side: not an image"):
        client.shrink(b"not an image at all", 1024)
    with pytest.raises(ValueError, match="max_side must be a positive"):
        client.predict("flowers", b"x", max_side=0)


def test_an_oversized_image_is_refused_before_sending(tmp_path):
    client = load_client()
    with pytest.raises(ValueError, match="over invoke_endpoint's 6 MB limit.*--max-side"):
        client.predict("flowers", b"\xff" * (client.PAYLOAD_LIMIT + 1), client=object())


@pytest.fixture(scope="module")
def demo_endpoint(demo_server):
    """The demo model served for real, behind SageMaker runtime's invoke path."""
    with RuntimeProxy(demo_server) as proxy:
        yield proxy


def test_max_side_keeps_the_endpoints_answers(demo_endpoint, photos, tmp_path):
    client = load_client()
    runtime = boto3.client("sagemaker-runtime", endpoint_url=demo_endpoint.url,
                           region_name="us-east-1", aws_access_key_id="testing",
                           aws_secret_access_key="testing")  # fmt: skip
    exact, shrunk = [], []
    for photo in [p for p in photos if p.suffix == ".jpg"][:4]:
        big = phone_photo(photo)
        for max_side, answers in ((None, exact), (1024, shrunk)):
            result = client.predict("flowers", big, top_k=102, client=runtime, max_side=max_side)
            answers.append({p["class"]: p["probability"] for p in result["predictions"]})
        full, sent = demo_endpoint.bodies[-2:]
        assert full == big and len(sent) < len(big) / 4 and max(opened(sent).size) == 1024
    for full, small in zip(exact, shrunk):
        top1 = max(full, key=full.get)
        assert max(small, key=small.get) == top1
        assert abs(full[top1] - small[top1]) <= SHRINK_TOLERANCE, (top1, full[top1], small[top1])

    image = tmp_path / "phone.jpg"
    image.write_bytes(phone_photo(photos[0]))
    env = {**os.environ, "AWS_ENDPOINT_URL": demo_endpoint.url, "AWS_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    cmd = [sys.executable, str(REPO / "endpoint" / "client.py"), "flowers", str(image),
           "--max-side", "1024", "--top-k", "1"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60,
                            check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["predictions"]) == 1
    assert max(opened(demo_endpoint.bodies[-1]).size) == 1024
