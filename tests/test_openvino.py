"""The OpenVINO backend: same answers as torch fp32 on real photos, NNCF's int8 under the same
answer check, the decision between backends and its cache, and the settings' errors."""
from __future__ import annotations

import contextlib
import logging

import pytest
import requests
import torch

from conftest import SHARED_FLOWERS, keeps_answers, photo_batch
from flower_classifier.environment import Environment
from flower_classifier.errors import ConfigError, ModelLoadError
from flower_classifier.model import openvino_backend
from flower_classifier.model.calibration import with_flips
from flower_classifier.model.checkpoint import load_classifier
from flower_classifier.model.openvino_backend import OpenVinoModel
from flower_classifier.model.precision import DecisionCache, Verdict, decision_key
from flower_classifier.model.predictor import Predictor
from flower_classifier.serving.server import check_backend

CPU = torch.device("cpu")


def held_out(photos) -> list:
    """Photos calibration never saw: ../shared/flowers/valid when present, else the samples."""
    return sorted(SHARED_FLOWERS.glob("valid/*/*.jpg"))[::80] or photos


def test_openvino_fp32_answers_as_torch_fp32_on_real_photos(small_model_dir, photos):
    classifier = load_classifier(small_model_dir)
    batch = photo_batch(photos, classifier.preprocessing)
    others = photo_batch(held_out(photos), classifier.preprocessing)
    reference = Predictor(load_classifier(small_model_dir), CPU, "fp32")
    predictor = Predictor(classifier, CPU, "fp32", backend="openvino")
    predictor.warm_up((1, 4), batch)
    assert (predictor.backend, predictor.precision) == ("openvino", "fp32")
    assert isinstance(predictor.model, OpenVinoModel)
    assert predictor.model is classifier.model  # the torch weights are no longer held
    for inputs in (with_flips(batch), others):
        exact, served = reference.answers(inputs), predictor.answers(inputs)
        assert keeps_answers(exact, served)
        assert torch.allclose(exact, served, atol=1e-4)  # f32 is the same arithmetic
    assert predictor.forward(batch[:3]).shape == (3, len(classifier.classes))


def test_nncf_int8_is_served_only_where_it_keeps_answers(small_model_dir, photos, caplog):
    classifier = load_classifier(small_model_dir)
    batch = photo_batch(photos, classifier.preprocessing)
    reference = Predictor(load_classifier(small_model_dir), CPU, "fp32")
    exact = reference.answers(with_flips(batch))
    predictor = Predictor(classifier, CPU, "int8", backend="openvino")
    with caplog.at_level(logging.INFO):
        predictor.warm_up((1,), batch)
    assert "openvino int8 " in caplog.text  # checked, with its verdict in the log
    assert predictor.backend == "openvino"
    quantized = openvino_backend.compile_model(
        openvino_backend.quantize(openvino_backend.convert(reference.model, (3, 224, 224)),
                                  batch), "int8", 2)
    kept = keeps_answers(exact, reference.answers(with_flips(batch), quantized))
    assert predictor.precision == ("int8" if kept else "fp32")
    if kept:  # served: it must also hold on photos calibration never saw
        others = photo_batch(held_out(photos), classifier.preprocessing)
        assert keeps_answers(reference.answers(others), predictor.answers(others))


def test_auto_decides_between_backends_and_a_new_worker_reuses_the_ir(
        small_model_dir, photos, tmp_path, caplog):
    classifier = load_classifier(small_model_dir)
    batch = photo_batch(photos, classifier.preprocessing)
    exact = Predictor(load_classifier(small_model_dir), CPU, "fp32").answers(with_flips(batch))
    predictor = Predictor(classifier, CPU, "fp32", backend="auto", lanes=2)
    assert predictor.candidates() == [("openvino", "fp32")]
    auto_cache = DecisionCache(decision_key([], predictor.decision_terms(), "cpu"), tmp_path)
    with caplog.at_level(logging.INFO):
        predictor.warm_up((1,), batch, auto_cache)
    checked = caplog.text.split("precision check on 18 inputs:")[1]
    assert "fp32 keeps answers" in checked and "openvino fp32 " in checked
    assert keeps_answers(exact, predictor.answers(with_flips(batch)))
    saved = auto_cache.load()
    assert (saved["backend"], saved["precision"]) == (predictor.backend, "fp32")

    # INFERENCE_BACKEND=openvino times the same candidates but chooses among OpenVINO's only:
    # its own key, so auto's choice (torch fp32 where torch was faster) is never served for it
    choice = Predictor(load_classifier(small_model_dir), CPU, "fp32", backend="openvino",
                       lanes=2)
    assert choice.candidates() == predictor.candidates()
    cache = DecisionCache(decision_key([], choice.decision_terms(), "cpu"), tmp_path)
    assert cache.path != auto_cache.path
    with caplog.at_level(logging.INFO):
        choice.warm_up((1,), batch, cache)
    assert choice.backend == "openvino"
    ir = cache.artifact("openvino")
    assert ir.is_file() and ir.with_suffix(".bin").stat().st_size > 40_000_000  # resnet18 f32
    caplog.clear()
    again = Predictor(load_classifier(small_model_dir), CPU, "fp32", backend="openvino",
                      lanes=2)
    with caplog.at_level(logging.INFO):
        again.warm_up((1,), batch, cache)
    assert "from the decision cached" in caplog.text and "precision check on" not in caplog.text
    assert isinstance(again.model, OpenVinoModel)
    assert keeps_answers(exact, again.answers(with_flips(batch)))


def test_a_check_for_another_process_leaves_the_compile_for_the_lanes_to_it(
        small_model_dir, photos, tmp_path):
    """check_here() (the checker's child) caches OpenVINO's graph and keeps the one-stream
    model it timed; the worker that applies its decision compiles that graph for two lanes."""
    batch = photo_batch(photos, load_classifier(small_model_dir).preprocessing)
    cache = DecisionCache("openvino-elsewhere", tmp_path)
    worker, child = (Predictor(load_classifier(small_model_dir), CPU, "fp32",
                               backend="openvino", lanes=2) for _ in range(2))
    for predictor in (worker, child):
        predictor.warm_up((1,), batch, cache, defer=True)
    decisions = []

    def elsewhere() -> dict:
        decisions.append(child.check_here(contextlib.nullcontext))
        return decisions[-1]

    assert worker.decide(elsewhere=elsewhere)
    assert decisions == [{"backend": "openvino", "precision": "fp32", "fp32_layers": []}]
    assert int(child.model.compiled.get_property("NUM_STREAMS")) == 1  # as it was timed
    assert cache.artifact("openvino").is_file()
    assert worker.backend == "openvino"
    assert int(worker.model.compiled.get_property("NUM_STREAMS")) == 2
    exact = Predictor(load_classifier(small_model_dir), CPU, "fp32").answers(with_flips(batch))
    assert keeps_answers(exact, worker.answers(with_flips(batch)))


def test_candidates_follow_the_settings():
    auto = Predictor.__new__(Predictor)  # candidates() reads only these settings
    auto.device, auto.requested_precision = CPU, "auto"
    auto.requested_backend = "auto"
    pairs = auto.candidates()
    assert ("torch", "int8") in pairs and ("openvino", "int8") in pairs
    assert ("openvino", "fp32") in pairs
    assert pairs.index(("torch", "int8")) < pairs.index(("openvino", "int8"))  # NNCF's last
    auto.requested_backend = "torch"
    assert all(backend == "torch" for backend, _ in auto.candidates())
    auto.requested_backend, auto.requested_precision = "openvino", "bf16"
    assert auto.candidates() == [("openvino", "bf16" if ("openvino", "bf16") in pairs
                                  else "fp32")]
    terms = Predictor.decision_terms(auto)
    assert terms[:2] == ["backend=openvino", "precision=bf16"]
    assert terms[2].startswith(f"openvino{openvino_backend.version()}:")


def test_forced_openvino_serves_openvino_even_when_torch_is_faster():
    predictor = Predictor.__new__(Predictor)
    predictor.requested_precision, predictor.requested_backend = "auto", "openvino"
    predictor.classifier = type("C", (), {"arch": "resnet18"})()
    torch_fp32 = Verdict("fp32", 50.0)
    ov_fp32 = Verdict("fp32", 10.0, True, 1e-6, backend="openvino")
    ov_int8 = Verdict("int8", 80.0, True, 0.05, backend="openvino")  # moves a probability
    assert predictor._pick([torch_fp32, ov_fp32, ov_int8]) is ov_fp32
    predictor.requested_backend = "auto"
    assert predictor._pick([torch_fp32, ov_fp32, ov_int8]) is torch_fp32
    changed = Verdict("fp32", 99.0, False, 0.0, backend="openvino")  # OpenVINO fp32 is checked
    assert predictor._pick([torch_fp32, changed]) is torch_fp32
    predictor.requested_backend = "openvino"
    assert predictor._pick([torch_fp32, changed]) is torch_fp32  # nothing of OpenVINO keeps


def test_the_backend_setting_and_its_errors():
    assert Environment.from_env({}).backend == "auto"
    assert Environment.from_env({"INFERENCE_BACKEND": "OpenVINO"}).backend == "openvino"
    with pytest.raises(ConfigError, match="INFERENCE_BACKEND='onnx' is invalid: expected one "
                                          "of auto, torch, openvino"):
        Environment.from_env({"INFERENCE_BACKEND": "onnx"})
    check_backend("openvino", CPU)
    check_backend("auto", torch.device("cuda", 0))
    with pytest.raises(ModelLoadError, match="runs the model on the CPU"):
        check_backend("openvino", torch.device("cuda", 0))


def test_a_server_on_openvino_answers_concurrent_requests_as_torch_does(
        small_model_dir, small_server, photos):
    """A real gunicorn server with INFERENCE_BACKEND=openvino: two lanes, each with its own
    infer request, batch concurrent requests; answers match the torch server's."""
    from concurrent.futures import ThreadPoolExecutor

    from helpers.serving import ServerProcess

    def answers(server) -> list[list[dict]]:
        def one(photo):
            kind = "image/png" if photo.suffix == ".png" else "image/jpeg"
            response = server.post(photo.read_bytes(), kind)
            assert response.status_code == 200, response.text
            return response.json()["predictions"]
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(one, photos * 2))

    env = {"INFERENCE_BACKEND": "openvino", "INFERENCE_PRECISION": "fp32",
           "TORCH_NUM_THREADS": "2", "INFERENCE_LANES": "2"}
    with ServerProcess(small_model_dir, env) as server:
        server.wait_ready(timeout=300)
        assert server.wait_decided() is not None  # torch fp32 answers until then
        served = answers(server)
        assert "serving openvino fp32 from now on" in server.log
        info = requests.get(server.url + "/model-info", timeout=10).json()
        assert (info["backend"], info["precision"]) == ("openvino", "fp32")  # what the page shows
    for ours, theirs in zip(served, answers(small_server), strict=True):
        assert [p["label"] for p in ours][:1] == [p["label"] for p in theirs][:1]
        assert abs(ours[0]["probability"] - theirs[0]["probability"]) <= 1e-3
