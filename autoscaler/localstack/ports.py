"""A free TCP port on loopback for local components.

The port is released before the caller binds it, so another process may take it in between; callers that
start servers should treat "address already in use" as a reason to retry with a new port.
"""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
