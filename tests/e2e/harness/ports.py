"""Free TCP ports on the loopback interface.

Ports are drawn from 20000-32000, below Linux's ephemeral range
(32768-60999): otherwise a port we "reserved" could be taken a moment later
by one of the many outgoing client sockets the tests open, and a sink or
Siegel would fail to bind for no reason of its own.
"""

from __future__ import annotations

import random
import socket

_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    for _ in range(1000):
        port = random.randint(20000, 32000)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port found in 20000-32000")


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> bool:
    """True once something accepts TCP connections on host:port."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.05)
    return False
