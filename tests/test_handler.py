"""The request thread's share of the path: decode and preprocess, then stack for the batcher.
None of it may start an OpenMP team: those threads would compete with the model's forward.
"""
from __future__ import annotations

import os
import threading

import torch

from conftest import photo_batch
from flower_classifier.model.images import decode_image
from flower_classifier.model.preprocess import preprocess
from flower_classifier.serving.handler import stack


def threads_while(work) -> tuple[int, int]:
    """This process's thread count before `work` runs in a new thread, and just after it ran
    there (the thread still alive, so any OpenMP team it started is still counted)."""
    done, release = threading.Event(), threading.Event()

    def run() -> None:
        work()
        done.set()
        release.wait(30)

    before = len(os.listdir("/proc/self/task"))
    thread = threading.Thread(target=run)
    thread.start()
    done.wait(30)
    during = len(os.listdir("/proc/self/task"))
    release.set()
    thread.join()
    return before, during


def test_stack_keeps_order_and_values(photos):
    images = [preprocess(decode_image(p.read_bytes(), 10**8)) for p in photos[:3]]
    batch = stack(images)
    assert torch.equal(batch, torch.stack(images))
    assert torch.equal(batch, photo_batch(photos[:3]))
    assert stack(images[:1]).shape == (1, *images[0].shape)


PROBE = """
import sys
import torch
from test_handler import threads_while
from flower_classifier.model.images import decode_image
from flower_classifier.serving.handler import stack
from flower_classifier.model.preprocess import preprocess
torch.set_num_threads(2)
bodies = [open(p, "rb").read() for p in sys.argv[3:]]

def work():
    stack([preprocess(decode_image(body, 10**8)) for body in bodies])
    stack([preprocess(decode_image(bodies[0], 10**8))])

probe = work if bodies else lambda: torch.stack([torch.zeros(3, 224, 224)] * 3)
print(*threads_while(probe))
"""


def test_request_thread_work_starts_no_openmp_threads(photos):
    # In a fresh process: threads other tests left behind (ending, or a reused OpenMP pool)
    # would blur the counts in this one.
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).parent

    def probe(*files: Path) -> tuple[int, int]:  # one fresh process per probe
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(  # test_handler, and the package
            [str(here), str(here.parent / "container"), os.environ.get("PYTHONPATH", "")])}
        out = subprocess.run([sys.executable, "-c", PROBE, "-", "-", *map(str, files)],
                             capture_output=True, text=True, timeout=120, check=True,
                             env=env).stdout
        before, during = map(int, out.split())
        return before, during

    before, during = probe(*photos[:3])
    assert during == before + 1  # the request thread itself, nothing more
    before, during = probe()
    assert during > before + 1  # the check can see a team: torch's own stack starts one
