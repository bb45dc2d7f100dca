"""Container tests: lint the Dockerfile and scripts, build the CPU image, run `train` in the
container on tiny generated data, then `serve` that output and call it over HTTP like SageMaker.

Tests of the built image and the local_test/ harness (needs a Docker engine).
"""

import io
import json
import os
import pathlib
import signal
import subprocess
import time
import uuid

import pytest
from PIL import Image

from helpers.docker_env import (
    CPU_IMAGE_TAG,
    IMAGE_TAG,
    REPO,
    build_args_env,
    build_image,
    free_port,
    http,
    image_id,
    logs,
    remove,
    require_docker,
    run,
    tool,
    torch_index_url,
    wait_exit,
    wait_http,
)

CLASSES = {"1": (220, 40, 40), "2": (40, 200, 60), "3": (40, 60, 220)}
TINY_HPARAMS = {
    "arch": "mobilenet_v3_small",  # a torchvision model this project never had a table entry for
    "weights": "none",
    "epochs": "1",
    "hidden_units": "16",
    "batch_size": "4",
}
PAYLOADS = REPO / "local_test" / "payloads"


def jpeg(rgb, seed: int, size=(64, 48)) -> bytes:
    """A solid colour image with a little deterministic noise, as JPEG bytes."""
    img = Image.new("RGB", size, rgb)
    px = img.load()
    for i in range(0, size[0] * size[1], 7):
        x, y = i % size[0], i // size[0]
        px[x, y] = tuple((c + seed * 13 + i) % 256 for c in rgb)
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    return buf.getvalue()


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 180, 20)).save(buf, "PNG")
    return buf.getvalue()


def make_ml_dir(root: pathlib.Path, hparams: dict) -> pathlib.Path:
    """The /opt/ml layout: input/config/hyperparameters.json, input/data/{train,valid}/<class>."""
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hparams))
    for split, count in (("train", 4), ("valid", 2)):
        for cls, rgb in CLASSES.items():
            d = root / "input" / "data" / split / cls
            d.mkdir(parents=True)
            for i in range(count):
                (d / f"{split}_{i}.jpg").write_bytes(jpeg(rgb, i))
    (root / "model").mkdir()
    (root / "output").mkdir()
    return root


# ---------- static checks (no engine needed) ----------


def test_hadolint_dockerfile():
    proc = run([tool("hadolint"), str(REPO / "Dockerfile")], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shellcheck_scripts():
    scripts = sorted(
        p
        for p in REPO.rglob("*.sh")
        if not any(
            part.startswith(".") or part in ("node_modules", "venv")
            for part in p.relative_to(REPO).parts
        )
    )
    assert scripts, "no shell scripts found"
    proc = run([tool("shellcheck"), *map(str, scripts)], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_declares_build_args():
    text = (REPO / "Dockerfile").read_text()
    for needle in (
        "ARG BASE_IMAGE=",
        "ARG VARIANT=gpu",
        "ARG TORCH_INDEX_URL",
        "download.pytorch.org/whl/cpu",
        "accept-bind-to-port=true",
        "PYTHONUNBUFFERED=1",
    ):
        assert needle in text, needle
    assert "buildx" not in text and "--mount" not in text  # classic-builder compatible


# ---------- the image ----------


@pytest.fixture(scope="session")
def image() -> str:
    return build_image(IMAGE_TAG, "gpu")


def docker_sh(image: str, script: str) -> str:
    return run(["docker", "run", "--rm", "--entrypoint", "sh", image, "-c", script]).stdout


@pytest.mark.docker
def test_image_metadata(image):
    info = json.loads(run(["docker", "image", "inspect", image]).stdout)[0]
    cfg = info["Config"]
    assert info["Architecture"] == "amd64"
    assert cfg["Labels"]["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"
    assert "PYTHONUNBUFFERED=1" in cfg["Env"]
    assert cfg["Cmd"] == ["serve"]
    assert not [e for e in cfg["Env"] if e.startswith("AWS_") or "SECRET" in e or "TOKEN" in e]


@pytest.mark.docker
def test_serve_and_train_on_path_and_executable(image):
    out = docker_sh(
        image,
        "command -v serve; command -v train; test -x /opt/program/serve "
        "&& test -x /opt/program/train && echo ok",
    )
    assert out.split() == ["/opt/program/serve", "/opt/program/train", "ok"]


TORCH_VERSIONS = ("python -c 'import torch, torchvision, torchvision.ops; "
                  "print(torch.__version__, torch.version.cuda, torchvision.__version__)'")


OPENVINO_AVAILABLE = ("python -c 'from flower_classifier.model import openvino_backend; "
                      "print(openvino_backend.available())'")


def pinned(name: str, requirements: str = "requirements.txt") -> str:
    return next(line.split("==")[1].strip() for line in
                (REPO / requirements).read_text().splitlines()
                if line.startswith(f"{name}=="))


@pytest.mark.docker
def test_default_image_is_the_cuda_13_build_and_serves_on_cpu(image, server):
    version, cuda, vision = docker_sh(image, TORCH_VERSIONS).split()
    assert (version.split("+")[0], vision.split("+")[0]) == (pinned("torch"), pinned("torchvision"))
    assert cuda.startswith("13."), cuda  # PyPI's default torch 2.14 wheels: CUDA 13.0
    log = logs(server["name"])
    assert f"torch {version} (CUDA {cuda} build)" in log
    assert "no NVIDIA GPU is visible: serving on the CPU" in log
    # OpenVINO is the cpu variant's: here INFERENCE_BACKEND=auto means torch
    assert docker_sh(image, OPENVINO_AVAILABLE).strip() == "False"
    assert "backend torch" in log


@pytest.fixture(scope="session")
def cpu_image() -> str:
    return build_image(CPU_IMAGE_TAG, "cpu")


@pytest.mark.docker
def test_cpu_variant_builds_and_serves(cpu_image, trained):
    """VARIANT=cpu installs PyTorch's CPU wheels of the pinned versions. In CI, where that
    index cannot be reached, it installs the stand-in's local files (the CUDA build) instead:
    then this checks the same pins and that the CPU variant serves."""
    version, cuda, vision = docker_sh(cpu_image, TORCH_VERSIONS).split()
    assert version.split("+")[0] == pinned("torch") and vision.split("+")[0] == pinned(
        "torchvision")
    if torch_index_url("cpu") is None:  # built from download.pytorch.org/whl/cpu
        assert version.endswith("+cpu") and cuda == "None"
    name = f"flower-cpu-{os.getpid()}"
    port = free_port()
    try:
        run(["docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8080",
             "-v", f"{trained / 'model'}:/opt/ml/model:ro", cpu_image, "serve"])
        wait_http(f"http://127.0.0.1:{port}/ping", 180, name)
        photo = next(PAYLOADS.glob("*.jpg")).read_bytes()
        check_predictions(*http("POST", f"http://127.0.0.1:{port}/invocations", photo,
                                {"Content-Type": "image/jpeg"})[::2])
        # it carries the pinned OpenVINO and NNCF, and "auto" checked OpenVINO's candidates
        assert docker_sh(cpu_image, OPENVINO_AVAILABLE).strip() == "True"
        installed = docker_sh(cpu_image, "pip list --format=freeze 2>/dev/null").split()
        for package in ("openvino", "nncf"):
            assert f"{package}=={pinned(package, 'requirements-cpu.txt')}" in installed
        for _ in range(360):  # the check runs once /ping answers (bounded: 180 s)
            if "from now on" in logs(name):
                break
            time.sleep(0.5)
        checked = logs(name).split("precision check on")[1].splitlines()[0]
        assert "openvino " in checked, checked
    finally:
        remove(name)


@pytest.mark.docker
def test_no_build_tools_caches_or_repo_files(image):
    out = docker_sh(
        image,
        "for t in gcc cc make g++ git; do command -v $t; done; "
        "ls -d /root/.cache /root/.aws /tmp/*requirements* "
        "/opt/program/tests /opt/program/.git 2>/dev/null; true",
    )
    assert out.strip() == ""


# ---------- train in the container, then serve its output ----------


@pytest.fixture(scope="module")
def trained(image, tmp_path_factory) -> pathlib.Path:
    """Run local_test/train_local.sh (docker run -v DIR:/opt/ml IMAGE train) on tiny data."""
    ml = make_ml_dir(tmp_path_factory.mktemp("ml"), TINY_HPARAMS)
    proc = run(
        [str(REPO / "local_test" / "train_local.sh"), image],
        timeout=900,
        check=False,
        env={**os.environ, "TEST_DIR": str(ml)},
    )
    failure = ml / "output" / "failure"
    assert proc.returncode == 0, (
        proc.stdout[-3000:],
        proc.stderr[-3000:],
        failure.read_text() if failure.exists() else "",
    )
    return ml


@pytest.mark.docker
def test_train_writes_checkpoint(trained):
    model = trained / "model"
    assert (model / "checkpoint.pth").stat().st_size > 0
    assert not (trained / "output" / "failure").exists()


@pytest.mark.docker
def test_train_failure_contract(image, tmp_path):
    ml = make_ml_dir(tmp_path / "ml", {**TINY_HPARAMS, "arch": "no-such-arch"})
    name = f"flower-train-fail-{uuid.uuid4().hex[:8]}"
    try:
        proc = run(
            ["docker", "run", "--name", name, "-v", f"{ml}:/opt/ml", image, "train"],
            timeout=300,
            check=False,
        )
        assert proc.returncode != 0
        failure = ml / "output" / "failure"
        assert failure.exists() and failure.read_text().strip(), proc.stderr[-2000:]
    finally:
        remove(name)


@pytest.fixture(scope="module")
def server(image, trained):
    """`docker run IMAGE serve` on the trained model, published on a loopback port."""
    port = free_port()
    name = f"flower-serve-{uuid.uuid4().hex[:8]}"
    run(
        [
            "docker",
            "run",
            "-d",
            "--name",
            name,
            "-p",
            f"127.0.0.1:{port}:8080",
            "-v",
            f"{trained / 'model'}:/opt/ml/model:ro",
            image,
            "serve",
        ]
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", timeout=180, container=name)
        yield {"url": f"http://127.0.0.1:{port}", "name": name}
    finally:
        remove(name)


@pytest.mark.docker
def test_ping(server):
    status, _, body = http("GET", server["url"] + "/ping")
    assert status == 200 and body == b""


@pytest.mark.docker
def test_image_ships_the_calibration_photos(image):
    shipped = docker_sh(image, "ls /opt/program/calibration").split()
    assert shipped == sorted(p.name for p in PAYLOADS.iterdir())


@pytest.mark.docker
def test_serve_checks_precision_on_the_shipped_photos(server):
    text = logs(server["name"])
    count = len(list(PAYLOADS.iterdir()))
    assert f"{count} calibration photos from /opt/program/calibration" in text
    assert "; backend torch, precision " in text and "VNNI" in text  # no OpenVINO here


def check_predictions(status, body):
    assert status == 200, body[:500]
    preds = json.loads(body)["predictions"]
    assert preds and all({"class", "label", "probability"} <= set(p) for p in preds)
    probs = [p["probability"] for p in preds]
    assert all(0 <= p <= 1 for p in probs) and sum(probs) <= 1 + 1e-4
    assert probs == sorted(probs, reverse=True)
    assert {p["class"] for p in preds} <= set(CLASSES)
    return preds


@pytest.mark.docker
@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_invocations(server, kind):
    body, ctype = (
        (jpeg(CLASSES["1"], 1), "image/jpeg") if kind == "jpeg" else (png_bytes(), "image/png")
    )
    status, _, out = http("POST", server["url"] + "/invocations", body, {"Content-Type": ctype})
    check_predictions(status, out)


@pytest.mark.docker
def test_invocations_real_photo(server):
    photos = sorted(PAYLOADS.glob("*.jpg"))
    if not photos:
        pytest.skip("no sample photos in local_test/payloads yet")
    status, _, out = http(
        "POST",
        server["url"] + "/invocations",
        photos[0].read_bytes(),
        {"Content-Type": "image/jpeg"},
    )
    check_predictions(status, out)


@pytest.mark.docker
@pytest.mark.parametrize("body,ctype", [(b"not an image", "image/jpeg"), (b"{}", "text/csv")])
def test_invocations_bad_input_is_4xx(server, body, ctype):
    status, _, _ = http("POST", server["url"] + "/invocations", body, {"Content-Type": ctype})
    assert 400 <= status < 500
    assert http("GET", server["url"] + "/ping")[0] == 200  # still healthy


@pytest.mark.docker
def test_predict_script(server, tmp_path):
    port = server["url"].rsplit(":", 1)[1]
    photo = tmp_path / "flower.JPG"  # upper-case extension: still image/jpeg
    photo.write_bytes(jpeg(CLASSES["3"], 2))
    proc = run(
        [str(REPO / "local_test" / "predict.sh"), str(photo)],
        env={**os.environ, "PORT": port, "TOP_K": "2"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    preds = check_predictions(200, proc.stdout.encode())
    assert len(preds) <= 2  # TOP_K header honoured (or at least not exceeded)


@pytest.mark.docker
def test_bind_to_port(image, trained):
    port, name = free_port(), f"flower-bind-{uuid.uuid4().hex[:8]}"
    try:
        run(
            [
                "docker",
                "run",
                "-d",
                "--name",
                name,
                "-e",
                "SAGEMAKER_BIND_TO_PORT=9090",
                "-p",
                f"127.0.0.1:{port}:9090",
                "-v",
                f"{trained / 'model'}:/opt/ml/model:ro",
                image,
                "serve",
            ]
        )
        wait_http(f"http://127.0.0.1:{port}/ping", timeout=180, container=name)
        start = time.monotonic()
        run(["docker", "stop", "-t", "30", name], timeout=60)
        assert time.monotonic() - start < 25, "serve did not stop on SIGTERM"
    finally:
        remove(name)


@pytest.mark.docker
@pytest.mark.parametrize("content", [None, b"this is not a checkpoint"])
def test_serve_bad_model_exits_nonzero(image, tmp_path, content):
    model = tmp_path / "model"
    model.mkdir()
    if content is not None:
        (model / "checkpoint.pth").write_bytes(content)
    name = f"flower-badmodel-{uuid.uuid4().hex[:8]}"
    try:
        run(
            [
                "docker",
                "run",
                "-d",
                "--name",
                name,
                "-v",
                f"{model}:/opt/ml/model:ro",
                image,
                "serve",
            ]
        )
        assert wait_exit(name, timeout=120) != 0
        assert "checkpoint" in logs(name).lower()
    finally:
        remove(name)


@pytest.mark.docker
def test_serve_local_script(image, cpu_image, trained, tmp_path):
    """local_test/serve_local.sh with no IMAGE builds the default image from this checkout even
    when one by that name exists, so a stale build is never served, then serves TEST_DIR/model on
    localhost:PORT until interrupted. The stale stand-in is the other variant's image; the
    rebuild is the CPU variant, all from cache (cpu_image was built with the same arguments)."""
    default = "flower-classifier:latest"  # lib/common.sh's $DEFAULT_REPOSITORY:latest
    before = image_id(default)
    run(["docker", "tag", image, default])
    port, log = free_port(), tmp_path / "serve_local.log"
    with open(log, "w") as out:  # a file, not a pipe that the server's log could fill
        proc = subprocess.Popen(
            [str(REPO / "local_test" / "serve_local.sh")],
            env={**os.environ, "PORT": str(port), "TEST_DIR": str(trained),
                 "BUILD_ARGS": build_args_env("cpu")},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", timeout=180)
        assert image_id(default) == image_id(cpu_image) != image_id(image)
        photo = jpeg(CLASSES["2"], 3)
        check_predictions(
            *http(
                "POST",
                f"http://127.0.0.1:{port}/invocations",
                photo,
                {"Content-Type": "image/jpeg"},
            )[::2]
        )
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            proc.kill()
        left = run(["docker", "ps", "-q", "--filter", f"publish={port}"]).stdout.split()
        for cid in left:
            remove(cid)
        run(["docker", "tag", before, default] if before else ["docker", "rmi", default],
            check=False)
    output = log.read_text()
    assert "building flower-classifier:latest from this checkout" in output, output[-3000:]
    assert not left, "serve_local.sh left its container running after Ctrl-C"


@pytest.mark.docker
def test_require_docker_passes():
    require_docker()


@pytest.mark.docker
def test_local_batch_transform_runs_the_real_container(cpu_image, trained, tmp_path):
    """local_test/batch_transform.sh without --url: it starts the image with SAGEMAKER_BATCH,
    reads /execution-parameters and writes one <file>.out per input, as a transform job does.
    The --image it is given is missing, so it builds it first (the CPU variant, all from cache:
    cpu_image was built with the same arguments), as serve_local.sh does."""
    missing = "flower-classifier-transform:missing"
    run(["docker", "rmi", missing], check=False)
    source = tmp_path / "in"
    (source / "sub").mkdir(parents=True)
    photos = sorted(PAYLOADS.glob("*.jpg"))[:3]
    for photo in photos[:2]:
        (source / photo.name).write_bytes(photo.read_bytes())
    (source / "sub" / photos[2].name).write_bytes(photos[2].read_bytes())
    out = tmp_path / "out"
    try:
        proc = run([str(REPO / "local_test" / "batch_transform.sh"), str(source), str(out),
                    "--model-dir", str(trained / "model"), "--image", missing], timeout=600,
                   env={**os.environ, "BUILD_ARGS": build_args_env("cpu")})
        assert image_id(missing) == image_id(cpu_image)
    finally:
        run(["docker", "rmi", missing], check=False)
    assert f"image {missing} not found locally; building it (cpu variant)" in proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.out"))
    assert written == sorted([f"{photos[0].name}.out", f"{photos[1].name}.out",
                              f"sub/{photos[2].name}.out"])
    for answer in out.rglob("*.out"):
        check_predictions(200, answer.read_bytes())
    assert "MaxConcurrentTransforms" in proc.stderr
