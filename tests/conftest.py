"""Fixtures shared by every test: private servers started on loopback ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.dovecot import Dovecot, start_dovecot

DovecotFactory = Callable[..., Dovecot]


@pytest.fixture
def dovecot_factory(tmp_path: Path) -> Iterator[DovecotFactory]:
    """Start Dovecots with ``start_dovecot``'s keyword arguments; all are stopped at teardown."""
    started: list[Dovecot] = []

    def start(
        users: dict[str, str],
        *,
        separator: str = "/",
        capability: str | None = None,
        master: tuple[str, str] | None = None,
        max_mail_size: int | None = None,
    ) -> Dovecot:
        server = start_dovecot(
            tmp_path / f"dovecot-{len(started)}",
            users,
            separator=separator,
            capability=capability,
            master=master,
            max_mail_size=max_mail_size,
        )
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def dovecot(dovecot_factory: DovecotFactory) -> Dovecot:
    """One Dovecot with users alice and bob, ``/`` as hierarchy separator."""
    return dovecot_factory({"alice": "alice-pw", "bob": "bob-pw"})
