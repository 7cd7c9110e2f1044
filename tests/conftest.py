"""Fixtures shared by every test: private servers started on loopback ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cyrus import Cyrus, CyrusMissing, start_cyrus
from tests.dovecot import Dovecot, start_dovecot
from tests.faults import FaultProxy, MountRefused, mount_tmpfs, unmount
from tests.radicale import Radicale, start_radicale
from tests.sabredav import SabreDav, SabreDavMissing, start_sabredav
from tests.tls import TestCertificates, make_test_certificates
from tests.xandikos import Xandikos, start_xandikos

CyrusFactory = Callable[[dict[str, str]], Cyrus]
DovecotFactory = Callable[..., Dovecot]
FaultProxyFactory = Callable[[Dovecot | tuple[str, int]], FaultProxy]
TmpfsFactory = Callable[[int], Path]


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


@pytest.fixture
def cyrus_factory(tmp_path: Path) -> Iterator[CyrusFactory]:
    """Start Cyruses with CalDAV and CardDAV for the given users (logins ``name@domain``,
    any password accepted), their scheduling mail captured; all are stopped at teardown.
    Where Cyrus is not unpacked (tests/run.sh does it), the test fails saying so: a
    missing server is never a green skip."""
    started: list[Cyrus] = []

    def start(users: dict[str, str]) -> Cyrus:
        try:
            server = start_cyrus(tmp_path / f"cyrus-{len(started)}", users)
        except CyrusMissing as missing:
            pytest.fail(str(missing), pytrace=False)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def cyrus(cyrus_factory: CyrusFactory) -> Cyrus:
    """One Cyrus with users alice@example.org and bob@example.org."""
    return cyrus_factory({"alice@example.org": "alice-pw", "bob@example.org": "bob-pw"})


@pytest.fixture
def radicale(tmp_path: Path) -> Iterator[Radicale]:
    """One Radicale with no user yet (``Radicale.add_user``)."""
    server = start_radicale(tmp_path / "radicale", {})
    yield server
    server.stop()


@pytest.fixture
def xandikos(tmp_path: Path) -> Iterator[Xandikos]:
    """One Xandikos with users alice and bob (``alice@xandikos.test``...), its scheduling
    mail captured (``Xandikos.captured``)."""
    server = start_xandikos(tmp_path / "xandikos", {"alice": "alice-pw", "bob": "bob-pw"})
    yield server
    server.stop()


@pytest.fixture
def sabredav(tmp_path: Path) -> Iterator[SabreDav]:
    """One SabreDAV with no user yet (``SabreDav.add_user``)."""
    try:
        server = start_sabredav(tmp_path / "sabredav", {})
    except SabreDavMissing as missing:
        pytest.fail(str(missing), pytrace=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    """A test CA and a certificate for 127.0.0.1, trusted by naming the CA's file."""
    return make_test_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def fault_proxy() -> Iterator[FaultProxyFactory]:
    """Start ``FaultProxy``s in front of a server (a ``Dovecot`` or a (host, port)); all are
    closed at teardown."""
    started: list[FaultProxy] = []

    def start(upstream: Dovecot | tuple[str, int]) -> FaultProxy:
        host, port = upstream if isinstance(upstream, tuple) else (upstream.host, upstream.port)
        proxy = FaultProxy(host, port).start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.close()


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[TmpfsFactory]:
    """Mount tmpfs file systems of a given size in bytes (rounded up to whole pages) on
    fresh folders, unmounted at teardown; the test is skipped, saying why, where this
    process may not mount."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        try:
            folder = mount_tmpfs(tmp_path / f"tmpfs-{len(mounted)}", size)
        except MountRefused as refused:
            pytest.skip(str(refused))
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        unmount(folder)


@pytest.fixture
def ews_server(certificates: TestCertificates) -> Iterator[Any]:
    """An EWS test server (``tests.ews_server.EwsServer``) on the seeded French organisation,
    with the service account ``svc-bascule@ville.fr`` holding ApplicationImpersonation, its
    password in ``server.service_password``; stopped at teardown."""
    import secrets

    from tests.ews_seed import SERVICE_LOGIN
    from tests.ews_server import EwsServer, EwsTenant, seed_french_tenant

    tenant = EwsTenant()
    seed_french_tenant(tenant)
    password = secrets.token_urlsafe(18)
    tenant.service_account(SERVICE_LOGIN, password)
    server = EwsServer(tenant, certificates=certificates)
    server.service_password = password
    with server:
        yield server
