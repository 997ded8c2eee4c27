"""Serving the dashboard: the socket bound first (so the address, port 0's included, is known and said before the
first request), then uvicorn on it until Ctrl-C."""

from __future__ import annotations

import ipaddress
import secrets
import socket
import threading

import uvicorn

from orchard.errors import UsageError
from orchard.web.app import Site, make_app


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address or `localhost` (anything else needs a token)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_urlsafe(24)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (UsageError naming the address when it cannot be had)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"orchard web: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(64)
    return sock


def serve(site: Site, sock: socket.socket) -> None:
    """Serve until interrupted."""
    config = uvicorn.Config(make_app(site), log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


class Background:
    """The dashboard served from a thread beside a run (`orchard run --web`): it ends when the run's command does."""

    def __init__(self, site: Site, sock: socket.socket) -> None:
        config = uvicorn.Config(make_app(site), log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)  # not the main thread: it leaves the signals to the run
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True,
                                       name="orchard-web")
        self.thread.start()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
