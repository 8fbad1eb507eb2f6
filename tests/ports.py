"""Ports for servers a test starts on 127.0.0.1 and later restarts on the same port.

``bind(("127.0.0.1", 0))`` hands out a port from the kernel's ephemeral range, the range
it also takes the local port of every outgoing connection from. Between a server's stop
and its restart on the same port, any client connection of the test run (to the
database, to Temporal, over HTTP) may be given that port, and the restart fails with
"address already in use": a CI run lost a Keycloak restart that way. A port below the
ephemeral range is never given to an outgoing connection, only to a server that asks for
it, so a server can come back on it. A server started once takes any free port
(`deploy.keycloak.server.free_port`).
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_DEFAULT_EPHEMERAL_LOW = 32768  # Linux's default when the file cannot be read
_SPAN = 10_000
_COMPANION_OFFSET = 1000  # servers that derive a second port as port + 1000 (Temporal's HTTP)
_handed_out: set[int] = set()


def ephemeral_low() -> int:
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _DEFAULT_EPHEMERAL_LOW


def restartable_port() -> int:
    """A free port below the ephemeral range, not handed out before in this process."""
    high = ephemeral_low() - 1 - _COMPANION_OFFSET
    low = max(1024, high - _SPAN)
    candidates = [port for port in range(low, high + 1) if port not in _handed_out]
    random.shuffle(candidates)
    for port in candidates[:500]:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port between {low} and {high} on 127.0.0.1")
