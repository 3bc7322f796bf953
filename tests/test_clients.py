"""Client address and scheme behind proxies: X-Forwarded-* only from TRUSTED_PROXIES."""

from __future__ import annotations

from ipaddress import ip_network

import pytest
from starlette.requests import HTTPConnection

from app.api.clients import client_address, is_https

PROXIES = [ip_network("10.0.0.0/8"), ip_network("fd00::/8")]


def _connection(peer: str | None, headers: dict[str, str], scheme: str = "http") -> HTTPConnection:
    return HTTPConnection(
        {
            "type": "http",
            "scheme": scheme,
            "server": ("127.0.0.1", 8000),
            "path": "/",
            "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
            "client": (peer, 50000) if peer else None,
        }
    )


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        ("203.0.113.5", None, "203.0.113.5"),
        ("203.0.113.5", "198.51.100.1", "203.0.113.5"),  # an untrusted peer cannot claim another
        ("10.0.0.2", None, "10.0.0.2"),
        ("10.0.0.2", "198.51.100.1", "198.51.100.1"),
        ("10.0.0.2", "6.6.6.6, 198.51.100.1, 10.0.0.9", "198.51.100.1"),
        ("10.0.0.2", "10.0.0.7, 10.0.0.9", "10.0.0.2"),
        ("10.0.0.2", "198.51.100.1, not-an-address", "10.0.0.2"),
        ("fd00::1", "2001:db8::7", "2001:db8::7"),
        (None, None, "unknown"),
    ],
)
def test_client_address(peer: str | None, forwarded_for: str | None, expected: str) -> None:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}

    assert client_address(_connection(peer, headers), PROXIES) == expected


@pytest.mark.parametrize(
    ("peer", "scheme", "proto", "expected"),
    [
        ("203.0.113.5", "https", None, True),
        ("203.0.113.5", "http", "https", False),
        ("10.0.0.2", "http", "https", True),
        ("10.0.0.2", "http", "HTTPS, http", True),
        ("10.0.0.2", "http", "http", False),
        ("10.0.0.2", "http", None, False),
    ],
)
def test_is_https(peer: str, scheme: str, proto: str | None, expected: bool) -> None:
    headers = {"X-Forwarded-Proto": proto} if proto else {}

    assert is_https(_connection(peer, headers, scheme), PROXIES) is expected
