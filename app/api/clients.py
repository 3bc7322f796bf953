"""Client address and scheme of a request, from X-Forwarded-* only when a trusted proxy sent it."""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from starlette.requests import HTTPConnection

Network = IPv4Network | IPv6Network


def _parse_address(text: str) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(text.strip())
    except ValueError:
        return None


def _is_trusted(address: IPv4Address | IPv6Address | None, trusted: Sequence[Network]) -> bool:
    return address is not None and any(address in network for network in trusted)


def client_address(connection: HTTPConnection, trusted_proxies: Sequence[Network]) -> str:
    """Return the address of the client that sent the request.

    When the peer is a trusted proxy, walk X-Forwarded-For from the right and return the first
    address that is not a trusted proxy: entries left of it may be forged by the client.
    Returns "unknown" when the server has no peer address (as in some test transports).
    """
    peer_text = connection.client.host if connection.client else ""
    peer = _parse_address(peer_text)
    if not _is_trusted(peer, trusted_proxies):
        return peer_text or "unknown"
    forwarded = [
        part.strip()
        for header in connection.headers.getlist("x-forwarded-for")
        for part in header.split(",")
        if part.strip()
    ]
    for hop in reversed(forwarded):
        address = _parse_address(hop)
        if address is None:
            break  # a malformed hop: stop believing anything further left
        if not _is_trusted(address, trusted_proxies):
            return str(address)
    return peer_text


def is_https(connection: HTTPConnection, trusted_proxies: Sequence[Network]) -> bool:
    """Tell whether the client reached us over HTTPS, by X-Forwarded-Proto from a trusted proxy."""
    if connection.url.scheme == "https":
        return True
    peer = _parse_address(connection.client.host) if connection.client else None
    if not _is_trusted(peer, trusted_proxies):
        return False
    proto = connection.headers.get("x-forwarded-proto", "")
    return proto.split(",")[0].strip().lower() == "https"
