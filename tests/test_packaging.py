"""`pip install .` (not editable) gives a package that imports from where it was installed and
console scripts that run: the pyproject's [project] table, its package data and entry points.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

COMMANDS = ("flower-train", "flower-predict", "flower-evaluate", "flower-inspect",
            "flower-package")


def test_pip_install_gives_working_commands(tmp_path: Path) -> None:
    target = tmp_path / "site"
    source = tmp_path / "source"  # what the build reads; it writes build/ and egg-info there
    for name in ("pyproject.toml", "README.md", "requirements.txt"):
        source.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "container", source / "container", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(source)],
                   check=True, timeout=600, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    found = subprocess.run([sys.executable, "-c",
                            "import flower_classifier, sys; print(flower_classifier.__file__)"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert found.stdout.strip().startswith(str(target)), found.stdout  # not the checkout's
    assert (target / "flower_classifier" / "serving" / "page.html").is_file()  # package data
    for command in COMMANDS:
        result = subprocess.run([str(target / "bin" / command), "--help"], env=env,
                                cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and "usage:" in result.stdout, (command, result.stderr)
    assert (target / "bin" / "serve").is_file() and (target / "bin" / "train").is_file()
