"""Starts gunicorn (one gthread worker by default) around the Flask app, as SageMaker's `serve`.
The worker loads and warms the model before it accepts a request; a bad model exits non-zero.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from functools import partial
from pathlib import Path

from gunicorn.app.base import BaseApplication

from ..environment import GRACEFUL_TIMEOUT_S, ConfigError, Environment, cpu_count
from .checker import check_elsewhere
from .memory import trim_heap, tune_malloc

log = logging.getLogger("flower_classifier")
GIL_SWITCH_S = 0.001  # a /ping waits for the GIL behind decoders and lanes: hand it over sooner
WORKER_BOOT_ERROR = 3  # gunicorn halts the whole server when a worker exits with this code
ACCESS_LOG_FORMAT = '%(h)s "%(r)s" %(s)s %(M)sms in=%({content-length}i)s out=%(B)s'


def configure_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr, level=level.upper(), force=True,
        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")


def load_model(env: Environment, slot: int = 0):
    """Load, place and warm the model exactly as a worker does (the benchmark reuses this).
    Returns (classifier, predictor); raises ModelLoadError for a model it cannot serve and
    DeviceError for a GPU that is present but unusable."""
    import torch

    from ..errors import DeviceError
    from ..model.calibration import find_photos, load_photos
    from ..model.checkpoint import load_classifier
    from ..model.device import (
        choose_precision,
        describe,
        runtime_summary,
        select_device,
        unusable_gpu,
    )
    from ..model.precision import DecisionCache, decision_key
    from ..model.predictor import Predictor

    torch.set_num_threads(env.torch_threads)
    log.info("%s", runtime_summary())
    problem = unusable_gpu()
    if problem:
        raise DeviceError(problem)
    device = select_device(slot)
    if device.type == "cpu" and torch.version.cuda:
        log.info("no NVIDIA GPU is visible: serving on the CPU (this torch is a CUDA %s build)",
                 torch.version.cuda)
    check_backend(env.backend, device)
    started = time.perf_counter()
    tune_malloc(serving=False)
    classifier = load_classifier(env.model_dir)
    predictor = Predictor(classifier, device, choose_precision(env.precision, device),
                          env.backend, env.lanes_for(device.type))
    tune_malloc(serving=True)  # the fp32 weights are mappings of their own: freed, they go back
    photos = find_photos(env.model_dir, env.calibration_dir)
    log.info("%d calibration photos from %s", len(photos),
             photos[0].parent if photos else f"nowhere ({env.calibration_dir} has none)")
    # CUDA kernels are picked per batch shape, so warm both; oneDNN on CPU needs one forward
    sizes = (1, env.batch_size_for("cuda")) if device.type == "cuda" else (1,)
    cache = None
    if predictor.measures:
        model_files = [f for f in Path(env.model_dir).rglob("*") if f.is_file()]
        cache = DecisionCache(decision_key([*model_files, *photos], predictor.decision_terms(),
                                           str(device)))
    warm = predictor.warm_up(sizes, load_photos(photos, classifier.preprocessing,
                                                env.max_image_pixels), cache,
                             defer=env.precision_check == "background")
    trim_heap()  # the warm-up's fp32 activations are bigger than int8 serving's
    log.info("model: %s (%s format), %d classes, %s from %s", classifier.arch,
             classifier.source_format, len(classifier.classes),
             "with names" if classifier.labels else "no cat_to_name.json", env.model_dir)
    log.info("device: %s; backend %s, precision %s; loaded in %.1f s, warmed up in %.1f s%s",
             describe(device), predictor.backend, predictor.precision,
             time.perf_counter() - started - warm, warm,
             "; the precision check runs once /ping answers" if predictor.deferred else "")
    return classifier, predictor


def start_precision_check(predictor, gate, torch_threads: int) -> threading.Thread | None:
    """Run the check load_model deferred in a thread of its own, on `torch_threads` threads,
    each timed forward holding the CPU gate alone (no lane or decoder shares the cores with
    it, so the candidates are timed alike under any traffic). On a CPU the candidates are
    built and timed in a child process (checker.py), which this thread lends the gate to:
    their memory leaves with it (vgg16: 200-300 MiB the worker kept). A GPU's candidates are
    the same model under autocast, checked here. The heap is trimmed after it. None when no
    check is pending."""
    if predictor.deferred is None:
        return None
    elsewhere = partial(check_elsewhere, gate.alone) if predictor.device.type == "cpu" else None

    def check() -> None:
        import torch

        torch.set_num_threads(torch_threads)
        predictor.decide(gate.alone, elsewhere)
        trim_heap()

    thread = threading.Thread(target=check, name="precision-check", daemon=True)
    thread.start()
    return thread


def check_backend(backend: str, device) -> None:
    """INFERENCE_BACKEND=openvino needs a CPU worker and OpenVINO installed (the cpu image)."""
    from ..environment import INFERENCE_BACKEND
    from ..errors import ModelLoadError
    from ..model import openvino_backend

    if backend != openvino_backend.BACKEND:
        return
    if device.type != "cpu":
        raise ModelLoadError(f"{INFERENCE_BACKEND}=openvino runs the model on the CPU, and this "
                             f"worker has {device}: set {INFERENCE_BACKEND}=torch (or auto)")
    if not openvino_backend.available():
        raise ModelLoadError(f"{INFERENCE_BACKEND}=openvino, but OpenVINO and NNCF are not "
                             f"installed in this image (the cpu variant carries them: "
                             f"build_and_push.sh --cpu)")


def build_app(env: Environment):
    """Load and warm the model, start the batcher; runs once in each worker."""
    from ..errors import DeviceError, ModelLoadError
    from .app import create_app
    from .batcher import Batcher
    from .gate import CpuGate
    from .handler import Handler

    sys.setswitchinterval(GIL_SWITCH_S)
    log.info("worker slot %d of %d", WORKER_SLOT, env.workers)
    try:
        classifier, predictor = load_model(env, WORKER_SLOT)
    except ModelLoadError as error:
        log.error("cannot serve the model in %s: %s", env.model_dir, error)
        sys.exit(WORKER_BOOT_ERROR)
    except DeviceError as error:
        log.error("GPU present but unusable, not serving: %s", error)
        sys.exit(WORKER_BOOT_ERROR)
    kind = predictor.device.type
    batch_size, lanes = env.batch_size_for(kind), env.lanes_for(kind)
    torch_threads = env.threads_per_lane(lanes) if kind == "cpu" else None
    log.info("batching up to %d images, waiting at most %g ms, in %d lane%s%s; %d request "
             "threads; payload limit %g MB", batch_size, env.max_batch_delay_ms, lanes,
             "s" if lanes > 1 else "",
             f" of {torch_threads} torch threads" if torch_threads else "",
             env.request_threads, env.max_payload_mb)
    # one lane's forward gets the cores to itself; lanes share them, so the gate then only
    # bounds the decoders
    gate = CpuGate(cpu_count(), exclusive=kind == "cpu" and lanes == 1)
    batcher = Batcher(predictor, batch_size, env.max_batch_delay_ms, gate, lanes, torch_threads)
    app = create_app(Handler(classifier, batcher, env), env)
    start_precision_check(predictor, gate, env.torch_threads)
    return app


WORKER_SLOT = 0  # this worker's slot, set after fork: worker N uses GPU N


def free_slot(taken: set[int]) -> int:
    """The lowest slot no live worker holds: workers 0..N-1 take GPUs 0..N-1, and a worker
    that replaces a dead one takes the GPU it left."""
    return next(slot for slot in range(len(taken) + 1) if slot not in taken)


def _assign_slot(server, worker) -> None:
    """gunicorn's pre_fork hook (in the master): give the new worker a free slot."""
    worker.slot = free_slot({getattr(w, "slot", -1) for w in server.WORKERS.values()})


def _after_fork(server, worker) -> threading.Thread:
    """gunicorn's post_fork hook (in the worker): note the slot, start the boot heartbeat."""
    global WORKER_SLOT
    WORKER_SLOT = getattr(worker, "slot", 0)
    return _heartbeat_while_booting(server, worker)


def _heartbeat_while_booting(server, worker) -> threading.Thread:
    """Keep gunicorn's timeout from killing a worker whose model is still loading."""
    def beat() -> None:
        while not worker.booted and worker.alive:
            try:
                worker.notify()
            except (OSError, ValueError):
                return  # a worker that failed to boot closed its heartbeat file on the way out
            time.sleep(1.0)
    thread = threading.Thread(target=beat, name="boot-heartbeat", daemon=True)
    thread.start()
    return thread


class Server(BaseApplication):
    def __init__(self, env: Environment) -> None:
        self.env = env
        super().__init__()

    def load_config(self) -> None:
        env = self.env
        options = {
            "bind": f"0.0.0.0:{env.port}",
            "workers": env.workers,
            "worker_class": "gthread",
            "threads": env.request_threads,
            "timeout": env.timeout,
            "graceful_timeout": GRACEFUL_TIMEOUT_S,
            "keepalive": 75,
            "accesslog": "-",
            "access_log_format": ACCESS_LOG_FORMAT,
            "errorlog": "-",
            "loglevel": env.log_level,
            "pre_fork": _assign_slot,
            "post_fork": _after_fork,
            "worker_tmp_dir": "/dev/shm" if os.path.isdir("/dev/shm") else None,
        }
        for key, value in options.items():
            if value is not None:
                self.cfg.set(key, value)

    def load(self):
        return build_app(self.env)


def main() -> None:
    try:
        env = Environment.from_env()
    except ConfigError as error:
        configure_logging("info")
        log.error("invalid configuration: %s", error)
        sys.exit(2)
    configure_logging(env.log_level)
    tune_malloc(serving=False)
    Server(env).run()
