#!/usr/bin/env python3
"""Writes the hostile/odd-input corpus for tests/test_hostile_inputs.py: files/ plus manifest.json.
Deterministic (seeded numpy, PIL, one real photo from local_test/payloads); no downloads.
Usage: python tests/corpus/make_corpus.py [OUT_DIR]   (default: this folder)
"""
from __future__ import annotations

import base64
import io
import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PHOTO = ROOT / "local_test" / "payloads" / "rose.jpg"
PIXEL_LIMIT = "MAX_IMAGE_PIXELS"
JSON_CT = "application/json"
# Bodies too large to store (near the 6 MB payload limit) are built by the test from these recipes.
GENERATED = [
    {"name": "jpeg_padded_to_limit_minus_1", "generate": "pad_jpeg", "offset": -1,
     "content_type": "image/jpeg", "status": 200,
     "why": "one byte under SAGEMAKER_MAX_PAYLOAD_IN_MB (6*1024*1024 bytes); trailing bytes "
            "after a JPEG's EOI are ignored by decoders"},
    {"name": "jpeg_padded_to_limit", "generate": "pad_jpeg", "offset": 0,
     "content_type": "image/jpeg", "status": 200, "why": "exactly at the payload limit"},
    {"name": "jpeg_padded_to_limit_plus_1", "generate": "pad_jpeg", "offset": 1,
     "content_type": "image/jpeg", "status": 413, "error_contains": "6 MB",
     "why": "one byte over the payload limit"},
    {"name": "json_over_limit", "generate": "big_json", "offset": 1024,
     "content_type": JSON_CT, "status": 413, "error_contains": "SAGEMAKER_MAX_PAYLOAD_IN_MB",
     "why": "oversized JSON: 1 KiB over the payload limit"},
    {"name": "chunked_over_limit", "generate": "chunked_jpeg", "offset": 4096,
     "content_type": "image/jpeg", "status": 413,
     "why": "Transfer-Encoding: chunked (no Content-Length) still meets the payload limit"},
    {"name": "chunked_small_image", "generate": "chunked_jpeg", "offset": None,
     "content_type": "image/jpeg", "status": 200,
     "why": "a chunked upload of a normal image is fine"},
]


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise(width: int, height: int, channels: int = 3, seed: int = 0, dtype=np.uint8,
          high: int = 256) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (height, width, channels) if channels > 1 else (height, width)
    return rng.integers(0, high, shape, dtype=dtype)


def photo(size: int = 192) -> Image.Image:
    image = Image.open(PHOTO).convert("RGB")
    image.thumbnail((size, size))
    return image


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(width: int, height: int, bit_depth: int, color_type: int, rows: bytes) -> bytes:
    """A PNG written by hand: 16-bit RGB, or headers Pillow's encoder would never write."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(rows, 9)) + png_chunk(b"IEND", b""))


def png_rgb16(width: int = 48, height: int = 32) -> bytes:
    pixels = noise(width, height, 3, seed=16, dtype=np.uint16, high=65536).astype(">u2")
    rows = b"".join(b"\0" + pixels[y].tobytes() for y in range(height))
    return raw_png(width, height, 16, 2, rows)


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A ~110 KB PNG declaring 900 million 1-bit pixels (rows of zeros compress ~1000:1)."""
    row = b"\0" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data)
            + png_chunk(b"IEND", b""))


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small real JPEG whose SOF0 header is rewritten to declare width x height."""
    data = bytearray(encode(Image.new("RGB", (16, 16), (10, 200, 30)), "JPEG"))
    at = data.index(b"\xff\xc0") + 5  # marker, length(2), precision(1), then height, width
    data[at:at + 4] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_declaring(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("P", (8, 8)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)  # logical screen size
    return bytes(data)


def exif_rotated() -> bytes:
    image = photo(160)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    return encode(image, "JPEG", quality=85, exif=exif.tobytes())


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (64, 48), color) for color in
              ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    options = {"save_all": True, "append_images": frames[1:], "duration": 100, "loop": 0}
    if fmt == "WEBP":
        options["lossless"] = True
    return encode(frames[0], fmt, **options)


def corrupt_jpeg_header() -> bytes:
    data = bytearray(encode(photo(96), "JPEG"))
    at = data.index(b"\xff\xc4")  # first Huffman table: scramble it
    data[at + 4:at + 40] = bytes(range(200, 236))
    return bytes(data)


def corrupt_png_crc() -> bytes:
    data = bytearray(encode(photo(64), "PNG"))
    data[29] ^= 0xFF  # IHDR's CRC
    return bytes(data)


def corrupt_png_idat() -> bytes:
    data = bytearray(encode(Image.fromarray(noise(64, 64, seed=7)), "PNG"))
    at = data.index(b"IDAT") + 4
    data[at:at + 64] = noise(64, 1, 1, seed=8).tobytes()  # zlib stream garbage
    return bytes(data)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def instances(*bodies: bytes) -> bytes:
    return json.dumps({"instances": [{"b64": b64(b)} for b in bodies]}).encode()


def cases() -> list[tuple[str, bytes, dict]]:
    """(file name, bytes, manifest fields)."""
    small_jpeg = encode(photo(96), "JPEG", quality=80)
    small_png = encode(photo(64), "PNG")
    tiny_png = encode(Image.new("RGB", (1, 1), (0, 128, 0)), "PNG")
    ok = {"status": 200}
    c = []

    def add(name, data, content_type, status, why, headers=None, error_contains=None):
        fields = {"content_type": content_type, "status": status, "why": why}
        if headers:
            fields["headers"] = headers
        if error_contains:
            fields["error_contains"] = error_contains
        c.append((name, data, fields))

    # --- odd but valid images: 200 ---------------------------------------------------------
    add("rgb_1x1.png", tiny_png, "image/png", **ok, why="1x1 image is upscaled to 255x255")
    add("gray_1x1.jpg", encode(Image.new("L", (1, 1), 90), "JPEG"), "image/jpeg", **ok,
        why="1x1 grayscale JPEG")
    add("wide_4000x1.png", encode(Image.fromarray(noise(4000, 1, seed=1)), "PNG"), "image/png",
        **ok, why="extreme aspect ratio 4000:1 (resized area 1,020,000x255)")
    add("tall_1x3000.jpg", encode(Image.fromarray(noise(1, 3000, seed=2)), "JPEG"),
        "image/jpeg", **ok, why="extreme aspect ratio 1:3000")
    add("wide_100000x1.png", encode(Image.new("RGB", (100000, 1), (200, 100, 50)), "PNG"),
        "image/png", **ok,
        why="0.1 MP but Resize(255) would make it 25.5M x 255 (~20 GB): must stay bounded")
    add("wide_2000x9.png", encode(Image.fromarray(noise(2000, 9, seed=3)), "PNG"), "image/png",
        **ok, why="aspect ratio 222:1")
    add("gray16.png", encode(Image.fromarray(noise(40, 30, 1, seed=4, dtype=np.uint16,
                                                   high=65536)), "PNG"),
        "image/png", **ok, why="16-bit grayscale PNG (mode I;16)")
    add("rgb16.png", png_rgb16(), "image/png", **ok, why="16-bit-per-channel RGB PNG")
    add("palette.png", encode(photo(64).quantize(32), "PNG"), "image/png", **ok,
        why="palette (mode P) PNG")
    add("palette_transparent.png", encode(photo(64).quantize(16), "PNG", transparency=0),
        "image/png", **ok, why="palette PNG with a tRNS transparent index")
    add("rgba.png", encode(Image.fromarray(noise(50, 40, 4, seed=5)), "PNG"), "image/png", **ok,
        why="RGBA with random alpha, composited on white")
    la = Image.merge("LA", [Image.fromarray(noise(40, 40, 1, seed=6)),
                            Image.fromarray(noise(40, 40, 1, seed=9))])
    add("la.png", encode(la, "PNG"), "image/png", **ok, why="grayscale + alpha (mode LA)")
    add("bilevel.png", encode(photo(64).convert("1"), "PNG"), "image/png", **ok,
        why="1-bit black and white")
    add("gray.jpg", encode(photo(96).convert("L"), "JPEG"), "image/jpeg", **ok,
        why="grayscale JPEG")
    add("cmyk.jpg", encode(photo(96).convert("CMYK"), "JPEG"), "image/jpeg", **ok,
        why="CMYK JPEG (Adobe)")
    add("cmyk.tiff", encode(photo(48).convert("CMYK"), "TIFF"), "image/tiff", **ok,
        why="CMYK TIFF")
    add("float32.tiff", encode(Image.fromarray(noise(32, 24, 1, seed=10).astype(np.float32)),
                               "TIFF"), "image/tiff", **ok, why="32-bit float TIFF (mode F)")
    add("lzw.tiff", encode(photo(64), "TIFF", compression="tiff_lzw"), "image/tiff", **ok,
        why="LZW-compressed TIFF (libtiff)")
    add("exif_rotated.jpg", exif_rotated(), "image/jpeg", **ok,
        why="EXIF Orientation=6: transposed before preprocessing")
    add("progressive.jpg", encode(photo(160), "JPEG", progressive=True, quality=80),
        "image/jpeg", **ok, why="progressive JPEG")
    add("animated.gif", animated("GIF"), "image/gif", **ok, why="animated GIF: first frame used")
    add("animated.webp", animated("WEBP"), "image/webp", **ok,
        why="animated WebP: first frame used")
    add("lossy.webp", encode(photo(96), "WEBP", quality=60), "image/webp", **ok,
        why="lossy WebP")
    add("plain.bmp", encode(photo(48), "BMP"), "image/bmp", **ok, why="BMP")
    add("png_sent_as_jpeg.png", small_png, "image/jpeg", **ok,
        why="wrong image Content-Type: content is sniffed")
    add("jpeg_no_content_type.jpg", small_jpeg, None, **ok,
        why="missing Content-Type is treated as application/octet-stream")
    add("jpeg_ct_alias_and_params.jpg", small_jpeg, "Image/JPG; charset=binary", **ok,
        why="upper-case image/jpg alias with a parameter")
    add("jpeg_trailing_garbage.jpg", small_jpeg + noise(512, 1, 1, seed=11).tobytes(),
        "image/jpeg", **ok, why="bytes after the JPEG EOI marker are ignored")
    add("instances_odd_mix.json", instances(tiny_png, exif_rotated(), animated("GIF")),
        JSON_CT, **ok, why="JSON batch of 1x1, EXIF-rotated and animated images")
    add("instances_charset.json", instances(small_jpeg), "application/json; charset=utf-8", **ok,
        why="JSON with a charset parameter")
    add("accept_wildcard_mix.jpg", small_jpeg, "image/jpeg", **ok,
        headers={"Accept": "text/html, */*;q=0.1"}, why="Accept admits JSON through */*")
    add("top_k_max_spaced.jpg", small_jpeg, "image/jpeg", **ok,
        headers={"X-Amzn-SageMaker-Custom-Attributes": "foo=1, top_k = 102 ,bar"},
        why="top_k at num_classes, with spaces and other attributes")

    # --- bad images: 400 -------------------------------------------------------------------
    bad = {"status": 400}
    add("empty.jpg", b"", "image/jpeg", **bad, error_contains="empty", why="empty body")
    add("empty_no_content_type.bin", b"", None, **bad, error_contains="empty",
        why="empty body, no Content-Type")
    add("truncated.jpg", small_jpeg[: len(small_jpeg) * 2 // 5], "image/jpeg", **bad,
        error_contains="could not be decoded", why="JPEG cut at 40%")
    add("truncated.png", small_png[: len(small_png) // 2], "image/png", **bad,
        error_contains="could not be decoded", why="PNG cut in half")
    add("png_signature_only.png", small_png[:8], "image/png", **bad, why="8-byte PNG signature")
    add("corrupt_huffman.jpg", corrupt_jpeg_header(), "image/jpeg", **bad,
        why="JPEG with a scrambled Huffman table")
    add("corrupt_crc.png", corrupt_png_crc(), "image/png", **bad, why="PNG with a bad IHDR CRC")
    add("corrupt_idat.png", corrupt_png_idat(), "image/png", **bad,
        why="PNG whose zlib stream is garbage")
    add("random.bin", noise(4096, 1, 1, seed=12).tobytes(), "application/octet-stream", **bad,
        error_contains="not a readable image", why="4 KiB of random bytes")
    add("html.jpg", b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>",
        "image/jpeg", **bad, error_contains="not a readable image", why="HTML sent as a JPEG")
    add("text.png", b"hello, I am not a PNG\n" * 20, "image/png", **bad,
        error_contains="not a readable image", why="plain text sent as a PNG")
    add("svg.png", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        "image/png", **bad, error_contains="not a readable image", why="SVG is not accepted")
    add("eps.jpg", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
        "image/jpeg", **bad, error_contains="not a readable image",
        why="EPS is refused without reaching Ghostscript")
    add("pdf.bin", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n",
        "application/octet-stream", **bad, why="PDF is not an image format")
    add("json_as_image.jpg", instances(small_jpeg), "image/jpeg", **bad,
        error_contains="not a readable image", why="JSON body with an image Content-Type")
    add("bomb.png", png_bomb(), "image/png", **bad, error_contains=PIXEL_LIMIT,
        why="~110 KB PNG declaring 30000x30000 (900 MP): refused before decoding")
    add("bomb.jpg", jpeg_declaring(65000, 65000), "image/jpeg", **bad,
        error_contains=PIXEL_LIMIT, why="JPEG header declaring 65000x65000")
    add("bomb.gif", gif_declaring(65535, 65535), "image/gif", **bad, error_contains=PIXEL_LIMIT,
        why="GIF logical screen of 65535x65535")
    add("zero_size.png", raw_png(0, 0, 8, 2, b""), "image/png", **bad,
        why="PNG declaring 0x0")

    # --- bad JSON: 400 ---------------------------------------------------------------------
    add("malformed.json", b'{"instances": [{"b64": "abc"', JSON_CT, **bad,
        error_contains="malformed JSON", why="unterminated JSON")
    add("latin1.json", '{"instances": [{"b64": "é"}]}'.encode("latin-1"), JSON_CT, **bad,
        error_contains="UTF-8", why="non-UTF-8 JSON")
    add("utf16.json", '{"instances": []}'.encode("utf-16"), JSON_CT, **bad,
        why="UTF-16 JSON with a BOM")
    add("empty.json", b"", JSON_CT, **bad, why="empty JSON body")
    add("null.json", b"null", JSON_CT, **bad, error_contains="instances", why="JSON null")
    add("list.json", b'[{"b64": "AAAA"}]', JSON_CT, **bad, error_contains="instances",
        why="top-level list instead of an object")
    add("instances_not_list.json", b'{"instances": {"b64": "AAAA"}}', JSON_CT, **bad,
        error_contains="instances", why="instances is an object")
    add("b64_not_string.json", b'{"instances": [{"b64": 12345}]}', JSON_CT, **bad,
        error_contains="b64", why="b64 is a number")
    add("bad_base64.json", b'{"instances": [{"b64": "!!!not base64!!!"}]}', JSON_CT, **bad,
        error_contains="base64", why="characters outside the base64 alphabet")
    add("bad_padding.json", b'{"instances": [{"b64": "QUJ"}]}', JSON_CT, **bad,
        error_contains="base64", why="base64 missing its padding")
    add("b64_of_text.json", instances(b"just text"), JSON_CT, **bad,
        error_contains="instances[0]", why="valid base64 of something that is not an image")
    add("second_instance_bad.json", instances(small_jpeg, small_jpeg[:100]), JSON_CT, **bad,
        error_contains="instances[1]", why="the error names the bad instance")
    add("deep_nesting.json", b"[" * 100000 + b"]" * 100000, JSON_CT, **bad,
        error_contains="malformed JSON", why="100000-deep nesting (RecursionError)")
    add("huge_int.json", b'{"instances": ' + b"9" * 5000 + b"}", JSON_CT, **bad,
        error_contains="malformed JSON", why="5000-digit integer (Python's int limit)")
    add("too_many_instances.json", instances(*[tiny_png] * 257), JSON_CT, **bad,
        error_contains="over the limit", why="257 instances, over the 256 limit")
    add("bomb_instance.json", instances(png_bomb()), JSON_CT, **bad, error_contains=PIXEL_LIMIT,
        why="decompression bomb inside a JSON instance")

    # --- headers ---------------------------------------------------------------------------
    for name, ct in (("text_plain", "text/plain"), ("text_html", "text/html"),
                     ("multipart", "multipart/form-data; boundary=x"),
                     ("form", "application/x-www-form-urlencoded"),
                     ("svg_ct", "image/svg+xml"), ("npy", "application/x-npy")):
        add(f"ct_{name}.jpg", small_jpeg, ct, 415, error_contains="unsupported Content-Type",
            why=f"unsupported Content-Type {ct}")
    for name, accept in (("csv", "text/csv"), ("json_q0", "application/json;q=0, text/csv"),
                         ("image", "image/*")):
        add(f"accept_{name}.jpg", small_jpeg, "image/jpeg", 406, headers={"Accept": accept},
            error_contains="application/json", why=f"Accept {accept!r} excludes JSON")
    add("accept_garbage.jpg", small_jpeg, "image/jpeg", 406, headers={"Accept": ";;, ,;q=x"},
        error_contains="application/json",
        why="an unparseable Accept names no JSON: 406 with a JSON message, not a guess")
    for name, value in (("zero", "top_k=0"), ("over", "top_k=103"), ("negative", "top_k=-1"),
                        ("float", "top_k=3.0"), ("hex", "top_k=0x10"),
                        ("superscript", "top_k=\u00b2"), ("5000_digits", "top_k=" + "9" * 5000),
                        ("empty", "top_k=")):
        add(f"top_k_{name}.jpg", small_jpeg, "image/jpeg", 400, error_contains="top_k",
            headers={"X-Amzn-SageMaker-Custom-Attributes": value}, why=f"bad top_k: {value[:20]!r}")
    return c


def dedupe(files: list[tuple[str, bytes, dict]]) -> tuple[dict[str, bytes], list[dict]]:
    """Cases that share bytes share a file, keeping the corpus small."""
    stored: dict[str, bytes] = {}
    by_digest: dict[bytes, str] = {}
    manifest = []
    for name, data, fields in files:
        key = data
        if key in by_digest:
            file = by_digest[key]
        else:
            file = by_digest[key] = name
            stored[name] = data
        manifest.append({"name": name, "file": file, **fields})
    return stored, manifest


def write(out: Path) -> list[dict]:
    files_dir = out / "files"
    files_dir.mkdir(parents=True, exist_ok=True)
    stored, manifest = dedupe(cases())
    for old in files_dir.iterdir():
        if old.name not in stored:
            old.unlink()
    for name, data in stored.items():
        (files_dir / name).write_bytes(data)
    manifest += GENERATED
    names = [case["name"] for case in manifest]
    assert len(names) == len(set(names)), "case names must be unique"
    (out / "manifest.json").write_text(json.dumps(
        {"about": "Hostile and odd /invocations inputs with the status each must get. "
                  "Regenerate with python tests/corpus/make_corpus.py.",
         "cases": manifest}, indent=1, ensure_ascii=True) + "\n")
    return manifest


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    written = write(target)
    total = sum(p.stat().st_size for p in (target / "files").iterdir())
    print(f"{len(written)} cases, {total} bytes of files in {target}")
