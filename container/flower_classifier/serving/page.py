"""The page to try the classifier: one HTML file, page.html, that both the container (GET /) and
`endpoint/client.py page` serve, and the gallery of sample photos it offers. Standard library
only, so the client imports it without torch.
"""
from __future__ import annotations

import json
from pathlib import Path

PAGE_FILE = Path(__file__).with_name("page.html")
SAMPLE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
                ".webp": "image/webp", ".gif": "image/gif"}
MAX_SAMPLES = 12
HTML = "text/html; charset=utf-8"
JSON = "application/json"
# The page is one file that talks to its own origin only: nothing else may load or be called.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
                               "style-src 'unsafe-inline'; img-src 'self' blob:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def samples(folder: str | Path) -> list[Path]:
    """Up to MAX_SAMPLES photos in `folder`, by name; none when it does not exist."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = sorted(p for p in folder.iterdir()
                   if p.suffix.lower() in SAMPLE_TYPES and p.is_file())
    return found[:MAX_SAMPLES]


def answer(path: str, samples_dir: str | Path, info: dict) -> tuple[int, str, bytes] | None:
    """(status, content type, body) for a GET of the page's own paths; None for any other
    path. `path` is already percent-decoded; a sample is found by name among the listed ones,
    never by joining the path onto the folder."""
    if path == "/":
        return 200, HTML, PAGE_FILE.read_bytes()
    if path == "/model-info":
        return 200, JSON, json.dumps(info).encode()
    if path == "/samples":
        return 200, JSON, json.dumps({"samples": [p.name for p in samples(samples_dir)]}).encode()
    name = path.removeprefix("/samples/")
    if name != path:
        for photo in samples(samples_dir):
            if photo.name == name:
                return 200, SAMPLE_TYPES[photo.suffix.lower()], photo.read_bytes()
        message = f"no sample photo {name[:100]!r}; GET /samples lists them"
        return 404, JSON, json.dumps({"error": message}).encode()
    return None
