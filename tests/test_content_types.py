"""Content-Type, Accept and custom-attribute parsing for /invocations.
Unit tests; the same rules are exercised over HTTP in test_app.py.
"""
from __future__ import annotations

import pytest
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

from flower_classifier.errors import BadRequest, NotAcceptable, UnsupportedMediaType
from flower_classifier.serving.content_types import (
    check_accept,
    media_type,
    request_kind,
    top_k_from,
)


@pytest.mark.parametrize("header,expected", [
    ("image/jpeg", "image/jpeg"), ("Image/PNG; charset=binary", "image/png"),
    (None, "application/octet-stream"), ("", "application/octet-stream"),
    (" application/json ;q=1", "application/json")])
def test_media_type(header, expected):
    assert media_type(header) == expected


@pytest.mark.parametrize("header,kind", [
    ("image/jpeg", "image"), ("application/x-image", "image"), (None, "image"),
    ("application/octet-stream", "image"), ("image/webp", "image"),
    ("application/json; charset=utf-8", "json")])
def test_request_kind(header, kind):
    assert request_kind(header) == kind


@pytest.mark.parametrize("header", ["text/csv", "text/plain", "application/jsonlines",
                                    "multipart/form-data; boundary=x", "image/svg+xml"])
def test_unsupported_is_415_listing_what_is_accepted(header):
    with pytest.raises(UnsupportedMediaType, match="image/jpeg"):
        request_kind(header)


@pytest.mark.parametrize("accept", ["application/json", "*/*", "application/*",
                                    "text/html, application/json;q=0.5"])
def test_acceptable(accept):
    check_accept(parse_accept_header(accept, MIMEAccept))


@pytest.mark.parametrize("accept", ["text/csv", "image/*", "application/json;q=0"])
def test_not_acceptable(accept):
    with pytest.raises(NotAcceptable):
        check_accept(parse_accept_header(accept, MIMEAccept))


@pytest.mark.parametrize("value,expected", [
    (None, 5), ("", 5), ("top_k=2", 2), ("a=1,top_k=7,b=2", 7), ("Top_K = 3", 3),
    ("top_k_extra=9", 5)])
def test_top_k(value, expected):
    assert top_k_from(value, 5, 102) == expected


def test_default_top_k_is_capped_by_class_count():
    assert top_k_from(None, 5, 3) == 3


@pytest.mark.parametrize("value", ["top_k=0", "top_k=103", "top_k=x", "top_k=-2", "top_k="])
def test_bad_top_k(value):
    with pytest.raises(BadRequest, match="top_k"):
        top_k_from(value, 5, 102)
