"""The sandbox stays on loopback: where it binds, and who may use its control API."""

import ipaddress
import socket


def is_loopback_address(text):
    """True for a loopback IP address, IPv4-mapped and scoped IPv6 included."""
    try:
        address = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def is_loopback(host):
    """True when every address ``host`` names is a loopback address."""
    if is_loopback_address(host):
        return True
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    return bool(infos) and all(is_loopback_address(info[4][0]) for info in infos)
