"""One fixture per connector, and the parametrisation of every case over the registry.

A connector joins the suite with one fixture here, named ``harness_<type>``, answering a
``Harness`` against a real store (see ``harness.py`` and README.md). The cases take
``mail_sink``, ``document_sink``, ``mail_source``, ``document_source`` or ``file_source``
(a document source of files); each is parametrised over what the registry says the
connectors read and write, so a connector registered without its fixture fails every case
it should pass, naming the fixture to add.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import icalendar
import pytest
import requests
from imapclient import IMAPClient, imap_utf7

from connectors import registry
from tests.apache import start_apache
from tests.conformance.harness import (
    Case,
    DocumentStore,
    DocumentTarget,
    Folder,
    Harness,
    Landed,
    MailStore,
    MailTarget,
    SeedFile,
    SeedMessage,
    StoreContext,
)
from tests.conformance.items import sample_body
from tests.cyrus import Cyrus, CyrusMissing, start_cyrus
from tests.dovecot import Dovecot, start_dovecot
from tests.graph_files import FixtureFiles, running_download_server
from tests.graph_pim import seed_pim
from tests.graph_server import FixtureMailbox, FixtureTenant, running_graph_server
from tests.graph_todo import seed_todo
from tests.nextcloud import start_nextcloud
from tests.radicale import Radicale, start_radicale
from tests.sabredav import SabreDav, SabreDavMissing, start_sabredav
from tests.servers import dav_members
from tests.tls import TestCertificates
from tests.wsgidav import start_wsgidav
from tests.xandikos import Xandikos, start_xandikos

LOGIN = "amelie"
CHUNK = 8 << 20
DOVECOT_USERS = 64
"""Accounts of the one Dovecot every IMAP case shares, each case taking a fresh one."""
ROLES = {
    "mail_sink": (MailTarget, "writes mail"),
    "document_sink": (DocumentTarget, "writes {workload}"),
    "mail_source": (MailStore, "reads mail"),
    "document_source": (DocumentStore, "reads {workload}"),
    "file_source": (DocumentStore, "reads {workload}"),
}


SERVERS = {"dav": ("cyrus", "radicale", "xandikos", "sabredav"),
           "webdav": ("wsgidav", "apache", "nextcloud", "sabredav")}
"""Connectors run against several servers: their fixtures are ``harness_<type>_<server>``,
one per server, and each case runs against each."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every case taking a role runs once per connector (and workload, and server) the
    registry gives that role."""
    documents = registry.DOCUMENT_WORKLOADS
    cases = {
        "mail_sink": [(c.type, "mail") for c in registry.sinks("mail")],
        "document_sink": [(c.type, w) for w in documents for c in registry.sinks(w)],
        "mail_source": [(c.type, "mail") for c in registry.sources("mail")],
        "document_source": [(c.type, w) for w in documents for c in registry.sources(w)],
        "file_source": [(c.type, "files") for c in registry.sources("files")],
    }
    for role, pairs in cases.items():
        if role in metafunc.fixturenames:
            params = [(kind, workload, server) for kind, workload in pairs
                      for server in SERVERS.get(kind, (None,))]
            metafunc.parametrize(role, params, indirect=True, ids=[
                "-".join(filter(None, (kind, None if workload == "mail" else workload, server)))
                for kind, workload, server in params])


def _case(request: pytest.FixtureRequest, role: str) -> Case:
    kind, workload, server = request.param
    fixture = f"harness_{kind}_{server}" if server else f"harness_{kind}"
    protocol, does = ROLES[role]
    try:
        harness = request.getfixturevalue(fixture)
    except pytest.FixtureLookupError:
        harness = None
    if harness is None:
        pytest.fail(f"connector {kind!r} {does.format(workload=workload)} and has no "
                    f"conformance fixture {fixture!r}: add one (tests/conformance/README.md)",
                    pytrace=False)
    if not isinstance(harness, protocol):
        pytest.fail(f"{fixture} gives no {protocol.__name__} for connector {kind!r}, which "
                    f"{does.format(workload=workload)}", pytrace=False)
    return Case(harness, workload)


@pytest.fixture
def mail_sink(request: pytest.FixtureRequest) -> Case:
    return _case(request, "mail_sink")


@pytest.fixture
def document_sink(request: pytest.FixtureRequest) -> Case:
    return _case(request, "document_sink")


@pytest.fixture
def mail_source(request: pytest.FixtureRequest) -> Case:
    return _case(request, "mail_source")


@pytest.fixture
def document_source(request: pytest.FixtureRequest) -> Case:
    return _case(request, "document_source")


@pytest.fixture
def file_source(request: pytest.FixtureRequest) -> Case:
    """A document source of files: the one workload whose items may weigh gigabytes."""
    return _case(request, "file_source")


# --- IMAP: a private Dovecot, read and filled with imapclient ----------------------------


@pytest.fixture(scope="session")
def conformance_dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    server = start_dovecot(tmp_path_factory.mktemp("dovecot"),
                           {f"conf{n}": f"conf{n}-pw" for n in range(DOVECOT_USERS)})
    yield server
    server.stop()


_dovecot_users = itertools.count()


@dataclass
class ImapHarness(Harness):
    server: Dovecot | None = None

    def client(self) -> IMAPClient:
        assert self.server is not None
        imap = IMAPClient(self.server.host, self.server.port, ssl=False, timeout=60)
        imap.login(self.login, self.server.users[self.login])
        imap.normalise_times = False
        return imap

    def folders(self) -> list[Folder]:
        with self.client() as imap:
            return [tuple(name.split(delimiter)) if delimiter else (name,)
                    for delimiter, name in _listed(imap)]

    def messages(self, folder: Folder) -> list[Landed]:
        with self.client() as imap:
            imap.select_folder("/".join(folder), readonly=True)
            uids = imap.search("ALL")
            rows = imap.fetch(uids, ["RFC822.SIZE", "FLAGS", "INTERNALDATE"]) if uids else {}
            return [Landed(_imap_body_hash(imap, uid), row[b"RFC822.SIZE"],
                           row[b"INTERNALDATE"],
                           frozenset(f.decode() for f in row[b"FLAGS"]) - {"\\Recent"})
                    for uid, row in sorted(rows.items())]

    def delete(self, folder: Folder, fingerprint: str) -> None:
        with self.client() as imap:
            imap.select_folder("/".join(folder))
            gone = [uid for uid in imap.search("ALL")
                    if _imap_body_hash(imap, uid) == fingerprint]
            imap.add_flags(gone, [b"\\Deleted"])
            imap.expunge()

    def seed_mail(self, folders: Mapping[Folder, list[SeedMessage]]) -> None:
        with self.client() as imap:
            for folder, messages in folders.items():
                listed = {name for _delimiter, name in _listed(imap)}
                for depth in range(1, len(folder) + 1):
                    if "/".join(folder[:depth]) not in listed:
                        imap.create_folder("/".join(folder[:depth]))
                for seeded in messages:
                    imap.append("/".join(folder), seeded.raw, flags=sorted(seeded.flags),
                                msg_time=seeded.internal_date)


_LIST_LINE = re.compile(rb'\([^)]*\) (NIL|"(?:[^"\\]|\\.)*") (.*)', re.DOTALL)


def _listed(imap: IMAPClient) -> list[tuple[str | None, str]]:
    """``(delimiter, name)`` of every mailbox, LIST read here: imapclient's own reading
    fails on an unquoted name holding ``[`` (imapclient issue 583), which Dovecot sends."""
    status, lines = imap._imap.list('""', "*")
    assert status == "OK", lines
    found = []
    for line in lines:
        head, name = (line[0], line[1]) if isinstance(line, tuple) else (line, None)
        match = _LIST_LINE.fullmatch(head)
        assert match is not None, line
        delimiter = None if match[1] == b"NIL" else _unquoted(match[1])
        if name is None:
            name = _unquoted(match[2]) if match[2].startswith(b'"') else match[2]
        found.append((delimiter and delimiter.decode(), imap_utf7.decode(name)))
    return found


def _unquoted(quoted: bytes) -> bytes:
    return re.sub(rb"\\(.)", rb"\1", quoted[1:-1])


def _imap_body_hash(imap: IMAPClient, uid: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while True:
        part = imap.fetch([uid], [f"BODY.PEEK[]<{offset}.{CHUNK}>"])[uid].get(
            f"BODY[]<{offset}>".encode()) or b""
        digest.update(part)
        offset += len(part)
        if len(part) < CHUNK:
            return "sha256:" + digest.hexdigest()


@pytest.fixture
def harness_imap(conformance_dovecot: Dovecot) -> Iterator[ImapHarness]:
    number = next(_dovecot_users)
    if number >= DOVECOT_USERS:
        pytest.fail(f"the conformance Dovecot has {DOVECOT_USERS} accounts: raise "
                    "DOVECOT_USERS", pytrace=False)
    login = f"conf{number}"
    server = conformance_dovecot
    harness = ImapHarness(
        "imap", {"type": "imap", "host": server.host, "port": server.port, "security": "none"},
        login, StoreContext(server.root, {"env:IMAP_SECRET": server.users[login]}),
        fence=server.root / "mail", root=server.mail_dir(login), secret_ref="env:IMAP_SECRET",
        server=server)
    yield harness
    harness.close()


# --- Maildir: the files themselves -------------------------------------------------------

MAILDIR_LETTERS = {"D": "\\Draft", "F": "\\Flagged", "P": "$Forwarded", "R": "\\Answered",
                   "S": "\\Seen", "T": "\\Deleted"}


@dataclass
class MaildirHarness(Harness):
    """Maildir++ as Dovecot documents it: ``.Parent.Child`` folders in modified UTF-7,
    ``<unique>:2,<letters>`` files, keywords numbered in ``dovecot-keywords``."""

    def directory(self, folder: Folder) -> Path:
        if folder == ("INBOX",):
            return self.root
        return self.root / ("." + ".".join(imap_utf7.encode(s).decode() for s in folder))

    def folders(self) -> list[Folder]:
        found = [("INBOX",)] if (self.root / "cur").is_dir() else []
        if self.root.is_dir():
            found += [tuple(imap_utf7.decode(s.encode()) for s in entry.name[1:].split("."))
                      for entry in sorted(self.root.iterdir())
                      if entry.name.startswith(".") and (entry / "cur").is_dir()]
        return found

    def files(self, folder: Folder) -> list[Path]:
        return [path for sub in ("cur", "new") if (self.directory(folder) / sub).is_dir()
                for path in sorted((self.directory(folder) / sub).iterdir())
                if not path.name.startswith(".")]

    def messages(self, folder: Folder) -> list[Landed]:
        keywords_file = self.directory(folder) / "dovecot-keywords"
        keywords = dict(line.split(" ", 1) for line in keywords_file.read_text().splitlines()
                        ) if keywords_file.exists() else {}
        found = []
        for path in self.files(folder):
            letters = path.name.partition(":2,")[2]
            flags = {MAILDIR_LETTERS[c] for c in letters if c in MAILDIR_LETTERS}
            flags |= {keywords[str(ord(c) - ord("a"))] for c in letters if c.islower()}
            found.append(Landed(_file_hash(path), path.stat().st_size,
                                datetime.fromtimestamp(path.stat().st_mtime, UTC),
                                frozenset(flags)))
        return found

    def delete(self, folder: Folder, fingerprint: str) -> None:
        for path in self.files(folder):
            if _file_hash(path) == fingerprint:
                path.unlink()

    def seed_mail(self, folders: Mapping[Folder, list[SeedMessage]]) -> None:
        letter = {flag: letter for letter, flag in MAILDIR_LETTERS.items()}
        for folder, messages in folders.items():
            directory = self.directory(folder)
            for sub in ("cur", "new", "tmp"):
                (directory / sub).mkdir(parents=True, exist_ok=True)
            for n, seeded in enumerate(messages):
                letters = "".join(sorted(letter[f] for f in seeded.flags))
                path = directory / "cur" / f"1700000000.M{n}P1.conformance:2,{letters}"
                path.write_bytes(seeded.raw)
                if seeded.internal_date is not None:
                    stamp = seeded.internal_date.timestamp()
                    os.utime(path, (stamp, stamp))


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


@pytest.fixture
def harness_maildir(tmp_path: Path) -> Iterator[MaildirHarness]:
    harness = MaildirHarness("maildir", {"type": "maildir", "path": "stores"}, LOGIN,
                             StoreContext(tmp_path), fence=tmp_path,
                             root=tmp_path / "stores" / LOGIN)
    yield harness
    harness.close()


# --- mbox and .eml exports: written by hand ---------------------------------------------


@dataclass
class MboxHarness(Harness):
    """Thunderbird's layout: folder ``A/B`` is the mbox file ``A.sbd/B``."""

    def seed_mail(self, folders: Mapping[Folder, list[SeedMessage]]) -> None:
        for folder, messages in folders.items():
            path = self.root.joinpath(*(f"{name}.sbd" for name in folder[:-1]), folder[-1])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"".join(b"From - Sun Jul 14 09:30:05 2024\n" + seeded.raw + b"\n"
                                      for seeded in messages))


@pytest.fixture
def harness_mbox(tmp_path: Path) -> Iterator[MboxHarness]:
    harness = MboxHarness("mbox", {"type": "mbox", "path": "exports"}, LOGIN,
                          StoreContext(tmp_path), fence=tmp_path,
                          root=tmp_path / "exports" / LOGIN)
    yield harness
    harness.close()


@dataclass
class EmlHarness(Harness):
    """One ``.eml`` file per message; the root folder is the INBOX."""

    def seed_mail(self, folders: Mapping[Folder, list[SeedMessage]]) -> None:
        for folder, messages in folders.items():
            directory = self.root if folder == ("INBOX",) else self.root.joinpath(*folder)
            directory.mkdir(parents=True, exist_ok=True)
            for n, seeded in enumerate(messages):
                (directory / f"message-{n}.eml").write_bytes(seeded.raw)


@pytest.fixture
def harness_eml(tmp_path: Path) -> Iterator[EmlHarness]:
    harness = EmlHarness("eml", {"type": "eml", "path": "exports"}, LOGIN,
                         StoreContext(tmp_path), fence=tmp_path,
                         root=tmp_path / "exports" / LOGIN)
    yield harness
    harness.close()


# --- the local folder of calendars, contacts and files -----------------------------------


@dataclass
class FolderHarness(Harness):
    def place(self, workload: str) -> Path:
        return self.root / workload

    def containers(self, workload: str) -> list[str]:
        place = self.place(workload)
        return sorted(path.relative_to(place).as_posix() for path in place.rglob("*")
                      if path.is_dir() and not path.is_symlink())

    def landed(self, workload: str) -> dict[str, Landed]:
        place = self.place(workload)
        return {path.relative_to(place).as_posix():
                Landed(_file_hash(path), path.stat().st_size,
                       datetime.fromtimestamp(path.stat().st_mtime, UTC))
                for path in sorted(place.rglob("*")) if path.is_file() and not path.is_symlink()}

    def segments(self, workload: str, target_ref: str) -> tuple[str, ...]:
        return tuple(target_ref.split("/"))

    def delete(self, workload: str, target_ref: str) -> None:
        (self.place(workload) / target_ref).unlink()

    def replace(self, workload: str, target_ref: str, content: bytes) -> None:
        (self.place(workload) / target_ref).write_bytes(content)

    def expected_fingerprint(self, workload: str, content: bytes) -> str:
        return "sha256:" + hashlib.sha256(content).hexdigest()

    def seed_documents(self, workload: str, files: list[SeedFile]) -> list[str | None]:
        """An export as bascule writes one: calendars and address books as folders of
        ``.ics`` and ``.vcf`` (one nested), files under a drive folder with their mtimes."""
        place = self.place(workload)
        written = []
        if workload == "files":
            for seeded in files:
                path = place.joinpath("OneDrive", *seeded.folder, seeded.name)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(seeded.content)
                stamp = seeded.modified.timestamp()
                os.utime(path, (stamp, stamp))
                written.append(seeded.content)
        else:
            extension = "vcf" if workload == "contacts" else "ics"
            for folder, key in ((("Calendrier",), "reunion-1"), (("Calendrier",), "reunion-2"),
                                (("Contacts", "Élus"), "seance-3")):
                path = place.joinpath(*folder, f"{key}.{extension}")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(sample_body(workload, key))
                written.append(sample_body(workload, key))
        return ["sha256:" + hashlib.sha256(content).hexdigest() for content in written]


@pytest.fixture
def harness_folder(tmp_path: Path) -> Iterator[FolderHarness]:
    harness = FolderHarness("folder", {"type": "folder", "path": "documents"}, LOGIN,
                            StoreContext(tmp_path), fence=tmp_path,
                            root=tmp_path / "documents" / LOGIN)
    yield harness
    harness.close()


# --- Microsoft Graph: the documented test server, filled through its fixture tenant -------


@dataclass
class GraphHarness(Harness):
    tenant: FixtureTenant | None = None
    files: FixtureFiles = field(default_factory=FixtureFiles)

    @property
    def mailbox(self) -> FixtureMailbox:
        assert self.tenant is not None
        mailbox = self.tenant.mailbox(self.login)
        assert mailbox is not None
        return mailbox

    def seed_mail(self, folders: Mapping[Folder, list[SeedMessage]]) -> None:
        assert self.tenant is not None
        made = {}
        for folder, messages in folders.items():
            parent = None
            for depth in range(1, len(folder) + 1):
                path = folder[:depth]
                if path not in made:
                    inbox = path == ("INBOX",)
                    made[path] = self.tenant.add_folder(
                        self.mailbox, "Boîte de réception" if inbox else path[-1], parent,
                        well_known_name="inbox" if inbox else None)
                parent = made[path]
            for n, seeded in enumerate(messages):
                self.tenant.add_message(
                    self.mailbox, made[folder], seeded.raw, subject=f"message {n}",
                    received=seeded.internal_date or datetime(2024, 1, 1, tzinfo=UTC),
                    is_read="\\Seen" in seeded.flags)

    def seed_documents(self, workload: str, files: list[SeedFile]) -> list[str | None]:
        if workload != "files":
            # One calendar object per event (a series carries its exceptions), one vCard
            # per contact, each made by the source from the item's properties.
            pim = seed_pim(self.mailbox)  # a mailbox has calendars whatever else it has
            if workload == "tasks":
                return [None] * len(seed_todo(self.mailbox).tasks)
            return [None] * len(pim.events if workload == "calendar" else pim.contacts)
        drive = self.files.add_drive("OneDrive", "business", self.mailbox.display_name)
        self.files.user_drives[self.mailbox.id] = drive.id
        for seeded in files:
            self.files.add_file(drive, self.files.folders(drive, *seeded.folder), seeded.name,
                                seeded.content, client_modified=seeded.modified)
        return ["sha256:" + hashlib.sha256(seeded.content).hexdigest() for seeded in files]


@pytest.fixture
def harness_graph(tmp_path: Path, certificates: TestCertificates) -> Iterator[GraphHarness]:
    tenant = FixtureTenant(tenant_id="5f1c9e2a-0c0b-4c3e-9a53-3f0f4e0e8a11",
                           domain="ville-exemple.fr",
                           client_id="0b7a1f55-8d2e-4f6b-a1c3-d2e4f6a8b0c1",
                           client_secret="conformance-secret")
    tenant.add_user("amelie.lefevre", "Amélie Lefèvre")
    files = FixtureFiles()
    tenant.extras["files"] = files
    with running_graph_server(tenant, certificates) as graph, \
            running_download_server(files, certificates):
        harness = GraphHarness(
            "graph", {"type": "graph", "tenant": tenant.tenant_id,
                      "client_id": tenant.client_id, "client_secret": "env:GRAPH_SECRET",
                      "authority": graph.authority, "graph_url": graph.url,
                      "ca_file": str(certificates.ca_file)},
            "amelie.lefevre@ville-exemple.fr",
            StoreContext(tmp_path, {"env:GRAPH_SECRET": tenant.client_secret}),
            fence=tmp_path, root=tmp_path, estimated_sizes=frozenset({"mail"}), tenant=tenant,
            files=files)
        yield harness
        harness.close()


# --- Exchange Web Services: the EWS test server, filled through its organisation ---------


@dataclass
class EwsHarness(Harness):
    """The EWS test server (``tests/ews_server.py``) with one mailbox, read by the service
    account through impersonation; the server's organisation is the independent store."""

    tenant: Any = None

    def seed_mail(self, folders: Mapping[Folder, list[SeedMessage]]) -> None:
        mailbox = self.tenant.mailbox(self.login)
        for folder, messages in folders.items():
            path: Any = "inbox" if folder == ("INBOX",) else folder
            if folder != ("INBOX",):
                mailbox.add_folder(folder)
            for seeded in messages:
                mailbox.deliver(path, seeded.raw, is_read="\\Seen" in seeded.flags,
                                flagged="\\Flagged" in seeded.flags,
                                received=seeded.internal_date)

    def seed_documents(self, workload: str, files: list[SeedFile]) -> list[str | None]:
        """Items shaped as the EWS reference shows them: a series with a moved and a
        cancelled occurrence and a single event, a contact and a personal distribution list,
        a task; each calendar object or vCard made by the source from the item."""
        from tests.ews_items_xml import (
            CONTACT,
            EXCEPTION,
            GROUP,
            ROMANCE,
            TASK,
            declared,
            series_xml,
        )

        mailbox = self.tenant.mailbox(self.login)
        if workload == "calendar":
            mailbox.add_series("calendar", declared(series_xml(ROMANCE, occurrences=False)),
                               exceptions=[declared(EXCEPTION)],
                               deleted=["2025-02-03T09:00:00Z"])
            mailbox.add_item("calendar", declared(EXCEPTION.replace(
                "Exception</t:CalendarItemType>", "Single</t:CalendarItemType>").replace(
                "<t:OriginalStart>2025-01-20T09:00:00Z</t:OriginalStart>", "")))
            return [None, None]
        if workload == "contacts":
            contact = mailbox.add_item("contacts", declared(CONTACT))
            mailbox.add_item("contacts", declared(GROUP.replace("AAMkContact=", contact)))
            return [None, None]
        mailbox.add_item("tasks", declared(TASK))
        return [None]


@pytest.fixture
def harness_ews(tmp_path: Path, certificates: TestCertificates) -> Iterator[EwsHarness]:
    from tests.ews_server import EwsServer, EwsTenant

    tenant = EwsTenant()
    tenant.add_mailbox("amelie.lefevre@ville-exemple.fr", "Amélie Lefèvre")
    tenant.service_account("svc-bascule@ville-exemple.fr", "conformance-secret")
    with EwsServer(tenant, certificates=certificates) as server:
        harness = EwsHarness(
            "ews", {"type": "ews", "service_endpoint": server.url, "auth": "ntlm",
                    "ca_file": str(server.ca_file),
                    "service_account": {"login": "svc-bascule@ville-exemple.fr",
                                        "secret": "env:EWS_SECRET"}},
            "amelie.lefevre@ville-exemple.fr",
            StoreContext(tmp_path, {"env:EWS_SECRET": "conformance-secret"}),
            fence=tmp_path, root=tmp_path, estimated_sizes=frozenset({"mail"}), tenant=tenant)
        yield harness
        harness.close()


# --- CalDAV and CardDAV: a private Cyrus, Radicale, Xandikos and SabreDAV, read with plain
# HTTP and icalendar


@pytest.fixture(scope="session")
def conformance_cyrus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cyrus]:
    try:
        server = start_cyrus(tmp_path_factory.mktemp("cyrus"), {})
    except CyrusMissing as missing:
        pytest.fail(str(missing), pytrace=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def conformance_radicale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Radicale]:
    server = start_radicale(tmp_path_factory.mktemp("radicale"), {})
    yield server
    server.stop()


@pytest.fixture(scope="session")
def conformance_xandikos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Xandikos]:
    server = start_xandikos(tmp_path_factory.mktemp("xandikos"), {})
    yield server
    server.stop()


@pytest.fixture(scope="session")
def conformance_sabredav(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SabreDav]:
    try:
        server = start_sabredav(tmp_path_factory.mktemp("sabredav"), {})
    except SabreDavMissing as missing:
        pytest.fail(str(missing), pytrace=False)
    yield server
    server.stop()


_dav_users = itertools.count()
DAV_HOMES = {
    "cyrus": {"calendar": "/dav/calendars/user/{login}/",
              "tasks": "/dav/calendars/user/{login}/",
              "contacts": "/dav/addressbooks/user/{login}/"},
    "radicale": {"calendar": "/{login}/", "tasks": "/{login}/", "contacts": "/{login}/"},
    "xandikos": {"calendar": "/{login}/calendars/", "tasks": "/{login}/calendars/",
                 "contacts": "/{login}/contacts/"},
    "sabredav": {"calendar": "/remote.php/dav/calendars/{login}/",
                 "tasks": "/remote.php/dav/calendars/{login}/",
                 "contacts": "/remote.php/dav/addressbooks/{login}/"},
}
"""Where each server keeps a user's calendars and address books (their documented layouts)."""
DAV_KINDS = {"calendar": "{urn:ietf:params:xml:ns:caldav}calendar",
             "tasks": "{urn:ietf:params:xml:ns:caldav}calendar",
             "contacts": "{urn:ietf:params:xml:ns:carddav}addressbook"}
DAV_COMPONENTS = {"calendar": "VEVENT", "tasks": "VTODO"}


@dataclass
class DavHarness(Harness):
    server: Cyrus | Radicale | Xandikos | SabreDav | None = None
    homes: dict[str, str] = field(default_factory=dict)
    password: str = ""
    before: dict[str, set[str]] = field(default_factory=dict)
    """The collections the server made itself (a default calendar, scheduling boxes)."""

    def _url(self, path: str) -> str:
        assert self.server is not None
        return self.server.base_url + urllib.parse.quote(path, safe="/@")

    def _request(self, method: str, path: str, **options: Any) -> requests.Response:
        return requests.request(method, self._url(path), auth=(self.login, self.password),
                                timeout=60, **options)

    def _members(self, path: str) -> list[tuple[str, set[str], str]]:
        """(path, resource types, display name) of what a collection holds."""
        return dav_members(self._request, path)

    def home(self, workload: str) -> str:
        return self.homes[workload]

    def containers(self, workload: str) -> list[str]:
        """The collections made for this workload: of its kind and, for calendars and task
        lists, taking its component (RFC 4791 ``supported-calendar-component-set``)."""
        return sorted(path for path, kinds, _ in self._members(self.home(workload))
                      if DAV_KINDS[workload] in kinds and path not in self.before[workload]
                      and DAV_COMPONENTS.get(workload) in self._components(path)
                      | {None})

    def _components(self, path: str) -> set[str | None]:
        answer = self._request("PROPFIND", path, headers={
            "Depth": "0", "Content-Type": "application/xml"}, data=(
            b'<?xml version="1.0"?><propfind xmlns="DAV:" '
            b'xmlns:C="urn:ietf:params:xml:ns:caldav"><prop>'
            b"<C:supported-calendar-component-set/></prop></propfind>"))
        assert answer.status_code == 207, (answer.status_code, answer.text)
        return {comp.get("name") for comp in ElementTree.fromstring(answer.content).iter(
            "{urn:ietf:params:xml:ns:caldav}comp")}

    def landed(self, workload: str) -> dict[str, Landed]:
        found = {}
        for container in self.containers(workload):
            for path, kinds, _ in self._members(container):
                if "{DAV:}collection" not in kinds:
                    body = self._request("GET", path).content
                    found[path] = Landed(self.expected_fingerprint(workload, body), len(body))
        return found

    def segments(self, workload: str, target_ref: str) -> tuple[str, ...]:
        container, _, name = target_ref.rpartition("/")
        shown = {path: name for path, _, name in self._members(self.home(workload))}
        return shown[container + "/"], name

    def delete(self, workload: str, target_ref: str) -> None:
        assert self._request("DELETE", target_ref).status_code in (200, 204)

    def replace(self, workload: str, target_ref: str, content: bytes) -> None:
        kind = "text/vcard" if workload == "contacts" else "text/calendar"
        answer = self._request("PUT", target_ref, data=content,
                               headers={"Content-Type": f"{kind}; charset=utf-8"})
        assert answer.status_code in (200, 201, 204), (answer.status_code, answer.text)

    def seed_documents(self, workload: str, files: list[SeedFile]) -> list[str | None]:
        """Two calendars or address books (one with an accented name) made with MKCALENDAR
        or an extended MKCOL, their objects written with plain PUTs; each must be fetched
        as the server then serves it (servers rewrite what they store)."""
        extension = "ics" if workload == "calendar" else "vcf"
        served = []
        for shown, key in (("Calendrier", "reunion-1"), ("Calendrier", "reunion-2"),
                           ("Élus", "seance-3")):
            place = f"{self.home(workload)}{hashlib.sha1(shown.encode()).hexdigest()[:8]}/"
            if not any(path == place for path, _, _ in self._members(self.home(workload))):
                method, body = _making(workload, shown)
                answer = self._request(method, place, data=body,
                                       headers={"Content-Type": "application/xml"})
                assert answer.status_code in (200, 201), (answer.status_code, answer.text)
            self.replace(workload, f"{place}{key}.{extension}", sample_body(workload, key))
            body = self._request("GET", f"{place}{key}.{extension}").content
            served.append("sha256:" + hashlib.sha256(body).hexdigest())
        return served

    def expected_fingerprint(self, workload: str, content: bytes) -> str:
        """What an object means, as icalendar's parser reads it: every component with its
        properties, parameters and values, in no order; each CATEGORIES value apart; the
        scheduling parameters a server adds or a client sets left out."""
        component = icalendar.Component.from_ical(content.removeprefix(b"\xef\xbb\xbf"))
        return "meaning:" + hashlib.sha256(repr(_meaning(component)).encode()).hexdigest()


def _making(workload: str, shown: str) -> tuple[str, bytes]:
    """The method and body that make a calendar (RFC 4791, 5.3.1) or an address book
    (RFC 5689) with a display name."""
    name = f"<D:displayname>{shown}</D:displayname>"
    if workload == "calendar":
        return "MKCALENDAR", (
            '<?xml version="1.0" encoding="utf-8"?><C:mkcalendar xmlns:D="DAV:" '
            f'xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set><D:prop>{name}</D:prop></D:set>'
            "</C:mkcalendar>").encode()
    return "MKCOL", (
        '<?xml version="1.0" encoding="utf-8"?><D:mkcol xmlns:D="DAV:" '
        'xmlns:A="urn:ietf:params:xml:ns:carddav"><D:set><D:prop><D:resourcetype>'
        f"<D:collection/><A:addressbook/></D:resourcetype>{name}</D:prop></D:set></D:mkcol>"
    ).encode()


def _meaning(component: Any) -> tuple[Any, ...]:
    properties = []
    for name, value in component.property_items(recursive=False, sorted=False):
        if name in ("BEGIN", "END"):
            continue
        parameters = tuple(sorted((key.upper(), str(given)) for key, given in
                                  getattr(value, "params", {}).items()
                                  if not key.upper().startswith("SCHEDULE-")))
        text = value.to_ical() if hasattr(value, "to_ical") else str(value).encode()
        for item in (text.split(b",") if name == "CATEGORIES" else [text]):
            properties.append((name, parameters, item))
    children = sorted(repr(_meaning(child)) for child in component.subcomponents)
    return component.name, tuple(sorted(properties)), tuple(children)


@pytest.fixture
def harness_dav_cyrus(conformance_cyrus: Cyrus, tmp_path: Path) -> Iterator[DavHarness]:
    login = f"conf{next(_dav_users)}@ville-exemple.fr"
    conformance_cyrus.create_inbox(login)
    # Cyrus keeps everything in files named by ids, not by user: there is nothing to fence.
    spool = conformance_cyrus.root / "spool"
    yield from _dav_harness(conformance_cyrus, "cyrus", login, tmp_path, spool, spool)


@pytest.fixture
def harness_dav_radicale(conformance_radicale: Radicale, tmp_path: Path
                         ) -> Iterator[DavHarness]:
    login = f"conf{next(_dav_users)}@ville-exemple.fr"
    conformance_radicale.add_user(login, "dav-pw")
    storage = conformance_radicale.storage
    yield from _dav_harness(conformance_radicale, "radicale", login, tmp_path, storage,
                            storage / "collection-root" / login, max_item_size=1 << 20)


@pytest.fixture
def harness_dav_xandikos(conformance_xandikos: Xandikos, tmp_path: Path
                         ) -> Iterator[DavHarness]:
    login = f"conf{next(_dav_users)}@ville-exemple.fr"
    conformance_xandikos.add_user(login, "dav-pw")
    storage = conformance_xandikos.root / "storage"
    # Xandikos mails attendees whatever SCHEDULE-AGENT says: a batch must leave them out.
    yield from _dav_harness(conformance_xandikos, "xandikos", login, tmp_path, storage,
                            storage / login, profile="xandikos", scheduling="drop_attendees",
                            max_item_size=1 << 20)


@pytest.fixture
def harness_dav_sabredav(conformance_sabredav: SabreDav, tmp_path: Path
                         ) -> Iterator[DavHarness]:
    login = f"conf{next(_dav_users)}@ville-exemple.fr"
    conformance_sabredav.add_user(login, "dav-pw")
    # One SQLite database holds every account: there is nothing to fence.
    root = conformance_sabredav.root
    # SabreDAV parses a whole object in PHP's memory to validate it, as Cyrus does in C: the
    # sink's streaming of a 64 MiB object is proven against Cyrus; here, the refusal of what
    # the batch says is too big, without a byte sent, and the largest that fits.
    yield from _dav_harness(conformance_sabredav, "sabredav", login, tmp_path, root, root,
                            max_item_size=1 << 20)


def _dav_harness(server: Cyrus | Radicale | Xandikos | SabreDav, name: str, login: str, tmp_path: Path,
                 fence: Path, root: Path, **section: Any) -> Iterator[DavHarness]:
    harness = DavHarness("dav", {"type": "dav", "url": server.base_url + "/", **section},
                         login, StoreContext(tmp_path, {"env:DAV_SECRET": "dav-pw"}),
                         fence=fence, root=root, secret_ref="env:DAV_SECRET", server=server,
                         homes={workload: home.format(login=login)
                                for workload, home in DAV_HOMES[name].items()},
                         password="dav-pw")
    for workload in harness.homes:
        # The first request makes the home and what the server puts in it by itself.
        harness.before[workload] = {path for path, _, _ in
                                    harness._members(harness.home(workload))}
    yield harness
    harness.close()


# --- WebDAV file stores: a private WsgiDAV, read back as the files of its share ----------


SERVER_FILES = {".sabredav"}
"""Files a server keeps beside an account's files for itself: SabreDAV's FSExt writes the
properties and locks of a folder's files into ``.sabredav`` there, and never lists it."""


@dataclass
class WebDavHarness(Harness):
    """The account's share is a folder of the server's own: its files are read and changed
    there, as a user of the server's machine would, without WebDAV."""

    def containers(self, workload: str) -> list[str]:
        return sorted(path.relative_to(self.root).as_posix() for path in self.root.rglob("*")
                      if path.is_dir() and not path.is_symlink())

    def landed(self, workload: str) -> dict[str, Landed]:
        return {path.relative_to(self.root).as_posix():
                Landed(_file_hash(path), path.stat().st_size,
                       datetime.fromtimestamp(path.stat().st_mtime, UTC))
                for path in sorted(self.root.rglob("*"))
                if path.is_file() and path.name not in SERVER_FILES}

    def segments(self, workload: str, target_ref: str) -> tuple[str, ...]:
        return tuple(target_ref.split("/"))

    def delete(self, workload: str, target_ref: str) -> None:
        (self.root / target_ref).unlink()

    def replace(self, workload: str, target_ref: str, content: bytes) -> None:
        (self.root / target_ref).write_bytes(content)

    def expected_fingerprint(self, workload: str, content: bytes) -> str:
        return "sha256:" + hashlib.sha256(content).hexdigest()

    def seed_documents(self, workload: str, files: list[SeedFile]) -> list[str | None]:
        """Files put into the share's folder on the server's disk, under a drive folder,
        with their mtimes, as a user of the server's machine would (the server serves
        them as they are)."""
        for seeded in files:
            path = self.root.joinpath("OneDrive", *seeded.folder, seeded.name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(seeded.content)
            stamp = seeded.modified.timestamp()
            os.utime(path, (stamp, stamp))
        return ["sha256:" + hashlib.sha256(seeded.content).hexdigest() for seeded in files]


@pytest.fixture
def harness_webdav_wsgidav(tmp_path: Path) -> Iterator[WebDavHarness]:
    server = start_wsgidav(tmp_path / "wsgidav", {LOGIN: "webdav-pw"})
    harness = WebDavHarness("webdav", {"type": "webdav", "url": server.space_url()}, LOGIN,
                            StoreContext(tmp_path, {"env:WEBDAV_SECRET": "webdav-pw"}),
                            fence=server.root, root=server.space(LOGIN),
                            secret_ref="env:WEBDAV_SECRET")
    yield harness
    harness.close()
    server.stop()


@pytest.fixture
def harness_webdav_apache(tmp_path: Path) -> Iterator[WebDavHarness]:
    server = start_apache(tmp_path / "apache", {LOGIN: "webdav-pw"})
    # With its profile: files PUT straight to their names, no modification time asked.
    harness = WebDavHarness("webdav", {"type": "webdav", "url": server.space_url(),
                                       "profile": "apache"}, LOGIN,
                            StoreContext(tmp_path, {"env:WEBDAV_SECRET": "webdav-pw"}),
                            fence=server.root / "spaces", root=server.space(LOGIN),
                            secret_ref="env:WEBDAV_SECRET")
    yield harness
    harness.close()
    server.stop()


@pytest.fixture
def harness_webdav_sabredav(conformance_sabredav: SabreDav, tmp_path: Path
                            ) -> Iterator[WebDavHarness]:
    # SabreDAV's own file tree (FSExt), laid out as Nextcloud's; no profile: what bascule
    # knows of a server it does not know.
    login = f"fichiers{next(_dav_users)}"
    conformance_sabredav.add_user(login, "webdav-pw")
    harness = WebDavHarness("webdav", {"type": "webdav", "url": conformance_sabredav.space_url()},
                            login, StoreContext(tmp_path, {"env:WEBDAV_SECRET": "webdav-pw"}),
                            fence=conformance_sabredav.root / "files",
                            root=conformance_sabredav.space(login),
                            secret_ref="env:WEBDAV_SECRET")
    yield harness
    harness.close()


@pytest.fixture
def harness_webdav_nextcloud(tmp_path: Path) -> Iterator[WebDavHarness]:
    # With its profile: small files PUT with X-OC-Mtime and OC-Checksum, the 64 MiB one
    # sent in chunks of 10 MiB and assembled by a MOVE (a PUT of it would be refused, 413).
    server = start_nextcloud(tmp_path / "nextcloud", {LOGIN: "webdav-pw"}, put_cap=16 << 20)
    harness = WebDavHarness("webdav", {"type": "webdav", "url": server.space_url(),
                                       "profile": "nextcloud"}, LOGIN,
                            StoreContext(tmp_path, {"env:WEBDAV_SECRET": "webdav-pw"}),
                            fence=server.root / "spaces", root=server.space(LOGIN),
                            secret_ref="env:WEBDAV_SECRET")
    yield harness
    harness.close()
    assert list(server.uploads(LOGIN).iterdir()) == [], "an upload folder was left behind"
    server.stop()
