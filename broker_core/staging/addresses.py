"""Which IP addresses a download may reach: globally routable ones, and the site's exceptions.

A URL's host is checked by the addresses it resolves to, never by its name, so ``localhost``,
``2130706433`` (127.0.0.1 in decimal) and a name that resolves to 169.254.169.254 are caught
alike. IPv6 addresses that carry an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, 6to4, Teredo,
NAT64 ``64:ff9b::/96``) are checked by that IPv4 address too.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

NAT64 = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: for local use only


def parse_address(text: str) -> IPAddress | None:
    """``text`` as an IP address, in any form the resolver would read as one (``127.1``,
    ``0x7f000001`` and ``2130706433`` are 127.0.0.1); None for a host name."""
    host = text.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefxABCDEFX." for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo, NAT64), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def category(address: IPAddress) -> str | None:
    """What makes an address unreachable for staging (``loopback``, ``link-local``, ...), or
    None for a globally routable unicast address."""
    inner = embedded_ipv4(address)
    if inner is not None:
        found = category(inner)
        if found is not None:
            return f"{found} (IPv4 {inner} inside)"
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return None  # connects to the IPv4 address, which is public
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        return "link-local"
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_reserved:
        return "reserved"
    if address.is_private or address in NAT64_LOCAL:
        return "private"
    if not address.is_global:
        return "non-global"
    return None


def refused_category(address: IPAddress, allowed: Iterable[IPNetwork]) -> str | None:
    """Why staging may not reach ``address`` given the site's allowed networks; None if it may.
    An address is allowed when it, or the IPv4 address it carries, is in an allowed network."""
    allowed = list(allowed)
    inner = embedded_ipv4(address)
    for candidate in (address, inner):
        if candidate is not None and any(candidate in network for network in allowed):
            return None
    return category(address)
