"""The /docs URL the server logs once it listens."""

from __future__ import annotations

import pytest

from serving.urls import docs_url


@pytest.mark.parametrize(
    ("bind", "url"),
    [
        ("127.0.0.1:8000", "http://127.0.0.1:8000/docs"),
        ("0.0.0.0:8000", "http://127.0.0.1:8000/docs"),
        ("[::]:9000", "http://[::1]:9000/docs"),
        ("[::1]:9000", "http://[::1]:9000/docs"),
        ("example.org:80", "http://example.org:80/docs"),
        ("unix:/run/dlqr.sock", None),
    ],
)
def test_docs_url_from_the_bind(bind, url):
    assert docs_url(bind) == url
