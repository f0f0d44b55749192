"""Unit tests never reach a server: every outgoing connection fails loudly."""

from __future__ import annotations

import socket
from typing import Any, NoReturn

import pytest


class NetworkDisabledError(RuntimeError):
    """A unit test tried to open a network connection."""


def _refuse(*args: Any, **kwargs: Any) -> NoReturn:
    raise NetworkDisabledError(
        "Unit tests run with sockets disabled: use the in-memory fakes (tests/unit/fakes.py)."
    )


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", _refuse)
    monkeypatch.setattr(socket, "create_connection", _refuse)
