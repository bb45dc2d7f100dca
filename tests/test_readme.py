"""Copy-checks the README: every script it tells a user to run exists, is executable, and accepts
every --option the README passes to it (checked against the script's own --help).
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def commands() -> list[list[str]]:
    """Shell commands in the README's bash blocks, continuation lines joined."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                found.append(line)
    return found


def invocations() -> list[tuple[str, list[str]]]:
    """(script path, options) for each call of a repository script in the README."""
    calls = []
    for line in commands():
        for part in re.split(r"&&|\||\$\(|\)", line):
            try:
                words = shlex.split(part)
            except ValueError:
                continue
            words = [w for w in words if "=" not in w.split("/")[0] or w.startswith("-")]
            for i, word in enumerate(words):
                path = word.removeprefix("./")
                if (ROOT / path).is_file() and (path.endswith((".sh", ".py")) or
                                                path.startswith("container/")):
                    options = [w.split("=")[0] for w in words[i + 1:] if w.startswith("--")]
                    calls.append((path, options))
                    break
    return calls


CALLS = invocations()


def test_readme_names_the_two_setup_commands():
    quick = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "./local_test/serve_local.sh" in quick and "./run_tests.sh" in quick
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./run_tests.sh" in ci  # CI runs exactly the README's test command


def test_readme_calls_scripts():
    scripts = {path for path, _ in CALLS}
    for expected in ("local_test/serve_local.sh", "run_tests.sh", "local_test/predict.sh",
                     "build_and_push.sh", "iam/create_role.sh", "endpoint/deploy.sh",
                     "endpoint/invoke.sh", "endpoint/delete.sh", "train/train.py",
                     "train/predict.py", "train/evaluate.py", "bench/run.py", "bench/soak.py"):
        assert expected in scripts, expected


@pytest.mark.parametrize("path,options", CALLS, ids=[f"{p} {' '.join(o)}" for p, o in CALLS])
def test_readme_command_exists_and_accepts_its_options(path, options):
    script = ROOT / path
    if path.endswith(".py"):
        argv = [sys.executable, str(script), "--help"]
    else:
        assert script.stat().st_mode & 0o111, f"{path} is not executable"
        if path.startswith("container/"):
            return  # entrypoints take no options; they are configured by environment
        argv = [str(script), "--help"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    for option in options:
        assert option in result.stdout + result.stderr, f"{path} does not document {option}"
