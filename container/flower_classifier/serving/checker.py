"""The precision check in a process of its own: a CPU worker's candidates (int8, OpenVINO) are
built, timed and dropped there, so none of their memory stays in the worker, which then builds
only the chosen model. The child asks the worker's CPU gate for each timed forward over a pipe.
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ALONE, GO, DONE, DECISION = b"alone\n", b"go\n", b"done\n", b"decision "
log = logging.getLogger("flower_classifier")
PR_SET_PDEATHSIG = 1  # prctl: the child is killed when the worker's checking thread ends


class CheckFailed(RuntimeError):
    """The child ended without a decision."""


def check_elsewhere(alone) -> dict:
    """Run the check in a child process with this worker's environment, holding `alone()` (the
    worker's CPU gate) whenever the child times a forward. Returns its decision as the decision
    cache stores it ({"backend", "precision", "fp32_layers"}); raises CheckFailed."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [package_root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    child_in, to_child = os.pipe()
    from_child, child_out = os.pipe()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "flower_classifier.serving.checker", str(child_in),
             str(child_out), str(os.getpid())], env=env, pass_fds=(child_in, child_out))
    finally:
        os.close(child_in)
        os.close(child_out)
    decision = None
    with os.fdopen(from_child, "rb") as inbox, os.fdopen(to_child, "wb", buffering=0) as outbox, \
            contextlib.ExitStack() as held:
        for line in inbox:  # ends when the child exits
            if line == ALONE:
                held.enter_context(alone())
                outbox.write(GO)
            elif line == DONE:
                held.close()
            elif line.startswith(DECISION):
                decision = json.loads(line[len(DECISION):])
    code = process.wait()
    if code != 0 or not isinstance(decision, dict):
        raise CheckFailed(f"the precision check's process exited with {code} "
                          f"{'and no decision' if decision is None else ''}".strip())
    return decision


def _die_with(worker: int) -> None:
    """Be killed when the worker's checking thread ends (a worker stopped mid-check)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != worker:
        sys.exit(1)  # the worker ended before prctl took effect


def main(argv: list[str] | None = None) -> int:
    """The child: load the model as the worker did, check every candidate, send the choice."""
    inbox_fd, outbox_fd, worker = (int(arg) for arg in (argv or sys.argv[1:]))
    _die_with(worker)
    from ..environment import Environment
    from .server import configure_logging, load_model

    env = Environment.from_env()
    configure_logging(env.log_level)
    inbox = os.fdopen(inbox_fd, "rb")
    outbox = os.fdopen(outbox_fd, "wb", buffering=0)

    @contextlib.contextmanager
    def alone() -> Iterator[None]:
        outbox.write(ALONE)
        if inbox.readline() != GO:
            raise CheckFailed("the worker stopped answering")
        try:
            yield
        finally:
            outbox.write(DONE)

    try:
        _, predictor = load_model(env)  # PRECISION_CHECK=background, as the worker's
        decision = predictor.check_here(alone)
    except Exception as error:  # noqa: BLE001 - the worker checks in-process instead
        log.error("the precision check's process failed: %s: %s", type(error).__name__,
                  (str(error).splitlines() or [""])[0][:300])
        return 1
    outbox.write(DECISION + json.dumps(decision).encode() + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
