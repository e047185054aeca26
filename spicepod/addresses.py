"""HOST:PORT addresses, parsed and written one way for the spicepod, the CLI and the runtime."""

from __future__ import annotations

import re

HOST_PORT = re.compile(r"^(?P<host>[A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:]+\]):(?P<port>\d{1,5})$")
MAX_PORT = 65535


def parse_host_port(value: str) -> tuple[str, int]:
    """`127.0.0.1:3000` -> ("127.0.0.1", 3000), `[::1]:0` -> ("::1", 0); ValueError when it is not one."""
    match = HOST_PORT.match(value)
    if not match or int(match["port"]) > MAX_PORT:
        raise ValueError(f"expected HOST:PORT with a port from 0 to {MAX_PORT}, got {value!r}")
    return match["host"].strip("[]"), int(match["port"])


def join_host_port(host: str, port: int) -> str:
    """The inverse of parse_host_port: IPv6 hosts in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
