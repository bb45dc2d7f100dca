"""The hostile/odd-input corpus (tests/corpus/manifest.json) against a real `serve` process.
Each case must get its stated status with a JSON body; none may give a 5xx, leak a traceback
or kill a worker. Regenerate the corpus with `python tests/corpus/make_corpus.py`.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import psutil
import pytest
import requests

from flower_classifier.harness.payloads import generated_body

CORPUS = Path(__file__).resolve().parent / "corpus"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())["cases"]
LIMIT = 6 * 1024 * 1024  # SAGEMAKER_MAX_PAYLOAD_IN_MB=6, the default small_server runs with
LEAKS = ("Traceback", 'File "', "site-packages", "/work/", "/opt/program")


def worker_pids(process) -> set[int]:
    """PIDs of the gunicorn workers: the children of the master process."""
    return {child.pid for child in psutil.Process(process.pid).children()}


def send(server, case: dict) -> requests.Response:
    headers = dict(case.get("headers") or {})
    if case["content_type"] is not None:
        headers["Content-Type"] = case["content_type"]
    if "generate" in case:
        body = generated_body(case, LIMIT)
        if case["generate"] == "chunked_jpeg":
            chunks = (body[i:i + 65536] for i in range(0, len(body), 65536))
            return requests.post(server.url + "/invocations", data=chunks, headers=headers,
                                 timeout=60)
    else:
        body = (CORPUS / "files" / case["file"]).read_bytes()
    if case["content_type"] is None:
        # requests adds no Content-Type for bytes; make sure nothing else does either
        assert "Content-Type" not in headers
    return requests.post(server.url + "/invocations", data=body, headers=headers, timeout=60)


def check_response(case: dict, response: requests.Response) -> None:
    text = response.text
    for leak in LEAKS:
        assert leak not in text, f"{case['name']}: body leaks {leak!r}: {text[:300]}"
    assert response.status_code == case["status"], (
        f"{case['name']} ({case['why']}): got {response.status_code}, "
        f"expected {case['status']}: {text[:300]}")
    assert response.headers.get("Content-Type", "").startswith("application/json")
    document = response.json()
    if case["status"] == 200:
        predictions = document["predictions"]
        assert predictions and isinstance(predictions, list)
    else:
        assert isinstance(document.get("error"), str) and document["error"]
        if case.get("error_contains"):
            assert case["error_contains"] in document["error"], document["error"]


@pytest.fixture(scope="module")
def baseline(small_server, photos):
    """Worker PIDs, the log offset and a good answer before the corpus runs."""
    good = photos[0].read_bytes()
    answer = small_server.post(good, "image/jpeg")
    assert answer.status_code == 200
    return {"pids": worker_pids(small_server.process), "log_at": len(small_server.log),
            "good": good, "answer": answer.json()}


def test_corpus_is_large_enough_and_complete():
    assert len(MANIFEST) >= 30
    statuses = {case["status"] for case in MANIFEST}
    assert {200, 400, 406, 413, 415} <= statuses
    for case in MANIFEST:
        assert case["why"] and isinstance(case["status"], int)
        if "generate" not in case:
            assert (CORPUS / "files" / case["file"]).is_file(), case["file"]
    stored = sum(p.stat().st_size for p in (CORPUS / "files").iterdir())
    assert stored < 2 * 1024 * 1024


def test_generator_reproduces_the_manifest(tmp_path):
    spec = importlib.util.spec_from_file_location("make_corpus", CORPUS / "make_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.write(tmp_path) == MANIFEST


@pytest.mark.parametrize("case", MANIFEST, ids=[case["name"] for case in MANIFEST])
def test_corpus_case(small_server, baseline, case):
    check_response(case, send(small_server, case))


def test_server_is_intact_after_the_corpus(small_server, baseline):
    assert requests.get(small_server.url + "/ping", timeout=2).status_code == 200
    answer = small_server.post(baseline["good"], "image/jpeg")
    assert answer.status_code == 200
    assert answer.json() == baseline["answer"]
    assert worker_pids(small_server.process) == baseline["pids"], "a worker died or was replaced"
    assert small_server.process.poll() is None
    log = small_server.log[baseline["log_at"]:]
    assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]
    assert '" 500 ' not in log and '" 502 ' not in log and '" 503 ' not in log
