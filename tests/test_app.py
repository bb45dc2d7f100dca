"""The SageMaker HTTP contract, over real HTTP against a real `serve` process.
Covers /ping, /invocations (image and JSON), top_k, errors and /execution-parameters.
"""
from __future__ import annotations

import base64
import io
import json
import socket
import threading
from pathlib import Path

import pytest
import requests
from gunicorn.http.body import Body, LengthReader
from gunicorn.http.unreader import SocketUnreader
from PIL import Image

from flower_classifier.serving.app import read_input


def jpeg_bytes(size=(320, 240), color=(200, 30, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG")
    return buffer.getvalue()


def check_predictions(predictions, k):
    assert len(predictions) == k
    probs = [p["probability"] for p in predictions]
    assert probs == sorted(probs, reverse=True)
    assert all(0.0 <= p <= 1.0 for p in probs)
    for p in predictions:
        assert set(p) == {"class", "label", "probability"}


def test_ping_is_200_with_empty_body(small_server):
    response = requests.get(small_server.url + "/ping", timeout=5)
    assert response.status_code == 200
    assert response.content == b""


@pytest.mark.parametrize("content_type", [
    "image/jpeg", "application/x-image", "application/octet-stream", "image/jpeg; charset=utf-8",
    "IMAGE/JPEG"])
def test_single_jpeg_gives_top5_with_flower_names(small_server, photos, content_type):
    jpg = next(p for p in photos if p.suffix == ".jpg")
    response = small_server.post(jpg.read_bytes(), content_type)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    predictions = response.json()["predictions"]
    check_predictions(predictions, 5)
    names = json.loads(Path(small_server.env["SM_MODEL_DIR"], "cat_to_name.json").read_text())
    assert all(p["label"] == names[p["class"]] for p in predictions)


def test_png_is_accepted(small_server, photos):
    png = next(p for p in photos if p.suffix == ".png")
    response = small_server.post(png.read_bytes(), "image/png")
    assert response.status_code == 200, response.text
    check_predictions(response.json()["predictions"], 5)


def test_missing_content_type_is_treated_as_raw_image(small_server, photos):
    response = small_server.post(photos[0].read_bytes(), None)
    assert response.status_code == 200, response.text


def test_json_instances_give_one_list_per_instance_in_order(small_server, photos):
    bodies = [p.read_bytes() for p in photos[:3]]
    document = {"instances": [{"b64": base64.b64encode(b).decode()} for b in bodies]}
    response = small_server.post(json.dumps(document).encode(), "application/json")
    assert response.status_code == 200, response.text
    batched = response.json()["predictions"]
    assert len(batched) == 3
    for body, predictions in zip(bodies, batched):
        single = small_server.post(body, "application/x-image").json()["predictions"]
        assert [p["class"] for p in predictions] == [p["class"] for p in single]
        for a, b in zip(predictions, single):
            assert a["probability"] == pytest.approx(b["probability"], abs=1e-5)


@pytest.mark.parametrize("attributes,k", [("top_k=3", 3), ("foo=bar, top_k=1 ,x=y", 1),
                                          ("TOP_K=10", 10), ("other=1", 5)])
def test_top_k_from_custom_attributes(small_server, photos, attributes, k):
    response = small_server.post(photos[0].read_bytes(), "image/jpeg", **{
        "X-Amzn-SageMaker-Custom-Attributes": attributes})
    assert response.status_code == 200, response.text
    check_predictions(response.json()["predictions"], k)


@pytest.mark.parametrize("attributes", ["top_k=0", "top_k=-1", "top_k=abc", "top_k=1.5",
                                        "top_k=", "top_k=103"])
def test_bad_top_k_is_400(small_server, photos, attributes):
    response = small_server.post(photos[0].read_bytes(), "image/jpeg", **{
        "X-Amzn-SageMaker-Custom-Attributes": attributes})
    assert response.status_code == 400
    assert "top_k" in response.json()["error"]


@pytest.mark.parametrize("body,content_type,status,words", [
    (b"", "image/jpeg", 400, "empty"),
    (b"not an image at all", "image/jpeg", 400, "not a readable image"),
    (b"<html><body>hi</body></html>", "application/x-image", 400, "not a readable image"),
    (b"a,b,c\n1,2,3", "text/csv", 415, "unsupported Content-Type"),
    (b"{not json", "application/json", 400, "malformed JSON"),
    (b'{"instances": []}', "application/json", 400, "instances"),
    (b'{"instances": [{"b64": "!!!"}]}', "application/json", 400, "base64"),
    (b'{"instances": [{"url": "x"}]}', "application/json", 400, "b64"),
    (b'\xff\xfe{"a": 1}', "application/json", 400, "UTF-8"),
])
def test_bad_input_is_a_clear_json_error(small_server, body, content_type, status, words):
    response = small_server.post(body, content_type)
    assert response.status_code == status
    message = response.json()["error"]
    assert words in message
    assert "Traceback" not in response.text


def test_truncated_jpeg_is_400(small_server, photos):
    data = photos[0].read_bytes()
    response = small_server.post(data[: len(data) // 2], "image/jpeg")
    assert response.status_code == 400
    assert "decoded" in response.json()["error"]


def test_decompression_bomb_is_400(small_server):
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, "PNG")  # 400 MP declared, a few KB on the wire
    response = small_server.post(buffer.getvalue(), "image/png")
    assert response.status_code == 400
    assert "MAX_IMAGE_PIXELS" in response.json()["error"]


def test_payload_limit_413_over_and_200_under(small_server):
    limit = 6 * 1024 * 1024
    image = jpeg_bytes()
    padded = image + b"\0" * (limit - len(image))  # JPEG decoders ignore trailing bytes
    assert len(padded) == limit
    assert small_server.post(padded, "image/jpeg").status_code == 200
    response = small_server.post(padded + b"\0", "image/jpeg")
    assert response.status_code == 413
    assert "6 MB" in response.json()["error"]


@pytest.mark.parametrize("accept,status", [("application/json", 200), ("*/*", 200),
                                           ("application/*", 200), (None, 200),
                                           ("text/csv", 406), ("image/png", 406)])
def test_accept_header(small_server, photos, accept, status):
    headers = {"Accept": accept} if accept else {}
    response = small_server.post(photos[0].read_bytes(), "image/jpeg", **headers)
    assert response.status_code == status
    if status == 406:
        assert "application/json" in response.json()["error"]


def test_405_and_404_are_json(small_server):
    response = requests.post(small_server.url + "/ping", timeout=5)
    assert response.status_code == 405
    assert "error" in response.json()
    response = requests.get(small_server.url + "/invocations", timeout=5)
    assert response.status_code == 405
    response = requests.get(small_server.url + "/nope", timeout=5)
    assert response.status_code == 404
    assert "error" in response.json()


def test_execution_parameters(small_server):
    response = requests.get(small_server.url + "/execution-parameters", timeout=5)
    assert response.status_code == 200
    document = response.json()
    assert document["BatchStrategy"] in ("SINGLE_RECORD", "MULTI_RECORD")
    assert document["MaxPayloadInMB"] == 6
    assert document["MaxConcurrentTransforms"] >= 1


def test_bad_request_does_not_degrade_the_next(small_server, photos):
    good = photos[0].read_bytes()
    before = small_server.post(good).json()
    for _ in range(5):
        assert small_server.post(b"\x89PNG\r\n\x1a\n garbage", "image/png").status_code == 400
    assert small_server.post(good).json() == before


def test_line_wrapped_base64_is_accepted(small_server, photos):
    encoded = base64.encodebytes(photos[0].read_bytes()).decode()  # 76-column lines, like `base64`
    assert "\n" in encoded
    response = small_server.post(json.dumps({"instances": [{"b64": encoded}]}).encode(),
                                 "application/json")
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1


@pytest.mark.parametrize("size", [1, 40_000, 6 * 1024 * 1024])
def test_read_input_takes_a_gunicorn_body_in_one_read(size):
    sender, receiver = socket.socketpair()
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    writer = threading.Thread(target=sender.sendall, args=(data,))
    writer.start()
    try:
        body = Body(LengthReader(SocketUnreader(receiver), size))
        assert read_input(body, size) == data
        assert body.read() == b""  # nothing left for gunicorn to drain
    finally:
        writer.join()
        sender.close()
        receiver.close()


def test_read_input_reads_any_other_stream_plainly():
    assert read_input(io.BytesIO(b"abcdef"), 4) == b"abcd"
