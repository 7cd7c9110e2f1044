"""Fixtures shared by every test: private servers started on loopback ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dovecot import Dovecot, start_dovecot
from tests.tls import TestCertificates, make_test_certificates

DovecotFactory = Callable[..., Dovecot]


@pytest.fixture
def dovecot_factory(tmp_path: Path) -> Iterator[DovecotFactory]:
    """Start Dovecots with ``start_dovecot``'s keyword arguments; all are stopped at teardown."""
    started: list[Dovecot] = []

    def start(users: dict[str, str], **options: Any) -> Dovecot:
        server = start_dovecot(tmp_path / f"dovecot-{len(started)}", users, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def dovecot(dovecot_factory: DovecotFactory) -> Dovecot:
    """One Dovecot with users alice and bob, ``/`` as hierarchy separator."""
    return dovecot_factory({"alice": "alice-pw", "bob": "bob-pw"})


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    """A test CA and a certificate for 127.0.0.1, trusted by naming the CA's file."""
    return make_test_certificates(tmp_path_factory.mktemp("tls"))
