"""The one typed settings object: SageMaker's defaults, parsing, and errors that name the variable.
Pure unit tests; `serve` exiting on a bad value is covered in test_server.py.
"""
from __future__ import annotations

import pytest

from flower_classifier.environment import ConfigError, Environment


def test_defaults_follow_sagemaker():
    env = Environment.from_env({})
    assert env.port == 8080 and env.timeout == 60 and env.top_k == 5
    assert env.max_payload_mb == 6 and env.max_payload_bytes == 6 * 1024 * 1024
    assert env.model_dir == "/opt/ml/model" and env.workers == 1
    assert env.precision == "auto" and env.torch_threads >= 1
    assert env.batch_size_for("cuda") == 32 and env.lanes_for("cuda") == 1
    assert env.lanes_for("cpu") == min(2, env.torch_threads)
    assert env.batch_size_for("cpu") * env.lanes_for("cpu") == 8  # images in flight on CPU


@pytest.mark.parametrize("threads,lanes,expected", [
    ("4", "", (2, 2, 4)), ("1", "", (1, 1, 8)), ("8", "3", (3, 2, 2)), ("2", "1", (1, 2, 8)),
    ("2", "4", (2, 1, 4))])
def test_cpu_lanes_split_the_torch_threads(threads, lanes, expected):
    env = Environment.from_env({"TORCH_NUM_THREADS": threads, "INFERENCE_LANES": lanes})
    lanes = env.lanes_for("cpu")
    cpu = (lanes, env.threads_per_lane(lanes), env.batch_size_for("cpu"))
    assert cpu == expected
    explicit = Environment.from_env({"INFERENCE_LANES": "3", "MAX_BATCH_SIZE": "5"})
    assert explicit.batch_size_for("cpu") == 5
    assert env.calibration_dir.endswith("calibration")  # /opt/program/calibration in the image


def test_values_are_parsed():
    env = Environment.from_env({
        "SAGEMAKER_BIND_TO_PORT": "9000", "MODEL_SERVER_WORKERS": "2",
        "MODEL_SERVER_TIMEOUT": "30", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "2.5",
        "SM_MODEL_DIR": "/models/x", "TOP_K": "3", "MAX_BATCH_SIZE": "4",
        "MAX_BATCH_DELAY_MS": "0", "INFERENCE_PRECISION": "FP32", "LOG_LEVEL": "debug",
        "MODEL_SERVER_THREADS": "8", "MAX_IMAGE_PIXELS": "1000", "TORCH_NUM_THREADS": "1",
        "CALIBRATION_IMAGES_DIR": "/photos"})
    assert (env.port, env.workers, env.timeout, env.top_k) == (9000, 2, 30, 3)
    assert env.max_payload_bytes == int(2.5 * 1024 * 1024)
    assert env.model_dir == "/models/x" and env.max_batch_size == 4
    assert env.max_batch_delay_ms == 0 and env.precision == "fp32" and env.request_threads == 8
    assert env.calibration_dir == "/photos"
    assert Environment.from_env({"INFERENCE_PRECISION": "int8"}).precision == "int8"


def test_the_dataclass_defaults_are_the_variables_defaults():
    assert Environment() == Environment.from_env({})


def test_blank_values_mean_default():
    assert Environment.from_env({"TOP_K": "  ", "SM_MODEL_DIR": ""}) == Environment.from_env({})


@pytest.mark.parametrize("key,value", [
    ("SAGEMAKER_BIND_TO_PORT", "0"), ("SAGEMAKER_BIND_TO_PORT", "70000"),
    ("MODEL_SERVER_WORKERS", "two"), ("MODEL_SERVER_TIMEOUT", "-1"), ("TOP_K", "0"),
    ("SAGEMAKER_MAX_PAYLOAD_IN_MB", "0"), ("MAX_BATCH_SIZE", "1.5"),
    ("INFERENCE_PRECISION", "int4"), ("LOG_LEVEL", "loud"), ("MAX_BATCH_DELAY_MS", "nan"),
    ("INFERENCE_LANES", "-1"), ("INFERENCE_LANES", "65"), ("INFERENCE_LANES", "two"),
    ("PRECISION_CHECK", "later")])
def test_bad_values_name_the_variable(key, value):
    with pytest.raises(ConfigError) as error:
        Environment.from_env({key: value})
    assert key in str(error.value) and "expected" in str(error.value)


def test_one_worker_per_visible_gpu(tmp_path, monkeypatch):
    """MODEL_SERVER_WORKERS defaults to the GPU count: CUDA_VISIBLE_DEVICES when set, else the
    /dev/nvidiaN files a container is given (simulated here), else 1."""
    import flower_classifier.environment as environment

    monkeypatch.setattr(environment, "DEVICES", tmp_path)
    assert Environment.from_env({}).workers == 1
    for name in ("nvidia0", "nvidia1", "nvidia2", "nvidiactl", "nvidia-uvm"):
        (tmp_path / name).touch()
    assert Environment.from_env({}).workers == 3
    assert Environment.from_env({"CUDA_VISIBLE_DEVICES": "0,1"}).workers == 2
    assert Environment.from_env({"CUDA_VISIBLE_DEVICES": ""}).workers == 1
    assert Environment.from_env({"MODEL_SERVER_WORKERS": "1"}).workers == 1
