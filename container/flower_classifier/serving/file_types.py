"""The content type a client sends for a file, by its name: the one table that endpoint/client.py,
lib/common.sh (a transform job's one type) and local_test/predict.sh use; any other name goes as
application/x-image, which the server sniffs. Standard library only: the client loads it as a
file without torch, and the scripts run it, `python3 file_types.py < NAMES` (one name a line).
"""
from __future__ import annotations

import sys
from collections.abc import Iterable

X_IMAGE = "application/x-image"
NAME_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


def type_of_name(name: str) -> str | None:
    """image/jpeg or image/png by the name's ending (any case); None for any other name."""
    lower = name.lower()
    return next((kind for ending, kind in NAME_TYPES.items() if lower.endswith(ending)), None)


def type_of_names(names: Iterable[str]) -> str:
    """The one type a transform job sends for these files: theirs when they all agree, else
    application/x-image (also for no files)."""
    kinds = {type_of_name(name) or X_IMAGE for name in names}
    return kinds.pop() if len(kinds) == 1 else X_IMAGE


if __name__ == "__main__":
    print(type_of_names(sys.stdin.read().splitlines()))
