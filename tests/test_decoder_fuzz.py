"""Property-based fuzzing of the decode path (hypothesis): whatever the bytes, decode_image and
decode_instances return RGB images or raise BadRequest - never anything else - and what they
return always preprocesses to 3x224x224. A small HTTP-level fuzz runs against a real server.
Profiles: HYPOTHESIS_PROFILE=ci (default: derandomized, bounded) or =fuzz (random, longer).
"""
from __future__ import annotations

import base64
import io
import json
import os
import warnings
from functools import lru_cache
from pathlib import Path

import psutil
import pytest
import requests
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from flower_classifier.errors import BadRequest
from flower_classifier.model.images import decode_image
from flower_classifier.model.preprocess import Preprocessing, preprocess
from flower_classifier.serving.decoder import decode_instances
from flower_classifier.serving.handler import MAX_INSTANCES

PHOTO = Path(__file__).resolve().parents[1] / "local_test" / "payloads" / "rose.jpg"
MAX_PIXELS = 40_000_000
SPEC = Preprocessing()
HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large,
          HealthCheck.function_scoped_fixture]
settings.register_profile("ci", max_examples=300, deadline=None, derandomize=True,
                          database=None, suppress_health_check=HEALTH)
settings.register_profile("fuzz", max_examples=5000, deadline=None,
                          suppress_health_check=HEALTH)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@lru_cache(maxsize=1)
def seeds() -> dict[str, bytes]:
    """Small valid files in every accepted format, from a real photo."""
    image = Image.open(PHOTO).convert("RGB")
    image.thumbnail((48, 48))
    out = {}
    for name, fmt, mode, options in (
            ("jpeg", "JPEG", "RGB", {}), ("progressive", "JPEG", "RGB", {"progressive": True}),
            ("cmyk", "JPEG", "CMYK", {}), ("png", "PNG", "RGB", {}), ("rgba", "PNG", "RGBA", {}),
            ("palette", "PNG", "P", {}), ("gif", "GIF", "P", {}), ("webp", "WEBP", "RGB", {}),
            ("bmp", "BMP", "RGB", {}), ("tiff", "TIFF", "RGB", {"compression": "tiff_lzw"}),
            ("tiff16", "TIFF", "I;16", {})):
        buffer = io.BytesIO()
        source = image.convert("L").convert(mode) if mode == "I;16" else image.convert(mode)
        source.save(buffer, fmt, **options)
        out[name] = buffer.getvalue()
    return out


@st.composite
def mutated(draw) -> bytes:
    """A valid file with a few byte flips, an overwritten run, a cut or an insertion."""
    data = bytearray(seeds()[draw(st.sampled_from(sorted(seeds())))])
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "overwrite", "truncate", "insert", "header"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "overwrite":
            run = draw(st.binary(min_size=1, max_size=32))
            data[at:at + len(run)] = run
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:  # the first 64 bytes hold the sizes and tables decoders trust most
            at = draw(st.integers(0, min(63, len(data) - 1)))
            data[at] = draw(st.integers(0, 255))
    return bytes(data)


def check_decoded(call) -> None:
    """The property: RGB images that preprocess cleanly, or BadRequest; nothing else."""
    try:
        images = call()
    except BadRequest as error:
        message = str(error)
        assert message and "Traceback" not in message and len(message) < 600
        return
    for image in images if isinstance(images, list) else [images]:
        assert image.mode == "RGB"
        width, height = image.size
        assert 1 <= width and 1 <= height and width * height <= MAX_PIXELS
        assert tuple(preprocess(image, SPEC).shape) == (3, 224, 224)


@given(st.binary(max_size=4096))
def test_random_bytes(data):
    check_decoded(lambda: decode_image(data, MAX_PIXELS))


@given(mutated())
def test_mutated_images(data):
    check_decoded(lambda: decode_image(data, MAX_PIXELS))


@given(st.sampled_from(["RGB", "RGBA", "L", "LA", "P", "1", "CMYK", "I;16", "I", "F"]),
       st.sampled_from(["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"]),
       st.integers(1, 700), st.integers(1, 40), st.booleans())
@settings(max_examples=150)
def test_valid_images_of_any_mode_and_shape_decode(mode, fmt, long, short, wide):
    """Odd-but-valid images (any size, aspect ratio, mode the format can store) must decode."""
    width, height = (long, short) if wide else (short, long)
    image = Image.linear_gradient("L").resize((width, height)).convert(mode)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # I-mode PNG, Pillow 13
            image.save(buffer, fmt)
    except (OSError, ValueError, KeyError):
        assume(False)  # a mode this format cannot store: not an input a client can send
    decoded = decode_image(buffer.getvalue(), MAX_PIXELS)
    assert decoded.mode == "RGB" and decoded.size == (width, height)
    assert tuple(preprocess(decoded, SPEC).shape) == (3, 224, 224)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=12)


@st.composite
def json_bodies(draw) -> bytes:
    choice = draw(st.integers(0, 3))
    if choice == 0:  # arbitrary JSON documents
        return json.dumps(draw(json_values)).encode()
    if choice == 1:  # the right shape, with good, mutated or non-base64 instances
        items = draw(st.lists(st.one_of(
            mutated().map(lambda b: {"b64": base64.b64encode(b).decode()}),
            st.text(max_size=40).map(lambda t: {"b64": t}),
            json_values.map(lambda v: {"b64": v})), min_size=0, max_size=4))
        return json.dumps({"instances": items}).encode()
    if choice == 2:  # JSON-looking bytes
        return draw(st.binary(max_size=256))
    text = json.dumps({"instances": [{"b64": base64.b64encode(seeds()["png"]).decode()}]})
    at = draw(st.integers(0, len(text)))
    return (text[:at] + draw(st.text(max_size=8)) + text[at:]).encode("utf-8", "surrogatepass")


@given(json_bodies())
def test_json_bodies(data):
    check_decoded(lambda: decode_instances(data, MAX_PIXELS, MAX_INSTANCES))


# --- the same over HTTP: statuses stay 2xx/4xx with a JSON body, the worker stays up ----------
CONTENT_TYPES = [None, "image/jpeg", "image/png", "application/octet-stream", "application/json",
                 "image/tiff", "text/plain", "image/gif; charset=x", ""]


@st.composite
def requests_to_send(draw):
    body = draw(st.one_of(mutated(), st.binary(max_size=2048), json_bodies()))
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    headers = {}
    if draw(st.booleans()):
        value = draw(st.text(st.characters(min_codepoint=0x21, max_codepoint=0xFF), max_size=16))
        headers["X-Amzn-SageMaker-Custom-Attributes"] = f"top_k={value}"
    if draw(st.booleans()):
        headers["Accept"] = draw(st.sampled_from(
            ["application/json", "*/*", "text/csv", "application/json;q=0", "image/*;q=0.5, */*"]))
    return body, content_type, headers


@pytest.fixture(scope="module")
def http_baseline(small_server):
    return {child.pid for child in psutil.Process(small_server.process.pid).children()}


@given(request_parts=requests_to_send())
@settings(max_examples=60)
def test_http_fuzz(small_server, http_baseline, request_parts):
    body, content_type, headers = request_parts
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = requests.post(small_server.url + "/invocations", data=body, headers=headers,
                             timeout=60)
    assert response.status_code in (200, 400, 406, 413, 415), response.text[:300]
    assert response.headers["Content-Type"].startswith("application/json")
    assert "Traceback" not in response.text and 'File "' not in response.text
    document = response.json()
    assert ("predictions" in document) if response.status_code == 200 else document["error"]


def test_http_fuzz_left_the_server_healthy(small_server, http_baseline):
    assert requests.get(small_server.url + "/ping", timeout=2).status_code == 200
    pids = {child.pid for child in psutil.Process(small_server.process.pid).children()}
    assert pids == http_baseline
