"""The connectors bascule knows, as data: each one registers, from its own package, its
``type``, the model of its batch section, the workloads it reads and writes, how to open it
and what it can do. The batch's schema, its validation, ``bascule init`` and the planner's
warnings are read from here; the engine never names a connector.

A connector joins with one ``Connector(...)`` value given to ``register`` by a module of its
own package, and one line in ``BUILT_IN`` (or, for a connector shipped apart, an entry point
in the ``bascule.connectors`` group naming that module).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

WORKLOADS = ("mail", "calendar", "contacts", "tasks", "files")
"""What a batch can move. ``mail`` speaks the mail protocols (``MailSource``, ``MailSink``),
the others the document protocols (``DocumentSource``, ``DocumentSink``)."""
DOCUMENT_WORKLOADS = ("calendar", "contacts", "tasks", "files")

BUILT_IN = (
    "connectors.imap.connector",
    "connectors.local.connector",
    "connectors.graph.connector",
    "connectors.ews.connector",
    "connectors.dav.connector",
    "connectors.webdav.connector",
)
"""Modules that register the connectors shipped with bascule, in the order shown to users."""
ENTRY_POINTS = "bascule.connectors"

T = TypeVar("T")


@dataclass(frozen=True)
class Account:
    """One side of a principal: its connector's batch section, and the login on it."""

    config: Any
    login: str
    secret_ref: str | None = None
    """The users table's secret reference for this login, if the table gives one."""


class Context(Protocol):
    """What a connector may ask of the batch it serves, and nothing more."""

    def path(self, path: Path) -> Path:
        """A path from the batch, relative to the batch file's folder."""

    def secret(self, reference: str, *, users_table: bool = False) -> str:
        """The secret a reference names (``env:NAME``, ``file:PATH``); a ``file:`` path is
        relative to the batch file, or to the users table with ``users_table``."""

    def shared(self, key: Hashable, make: Callable[[], T]) -> T:
        """One object per key for the whole command (a connection pool, a token cache),
        made on first use; closed with the command if it has a ``close`` method."""

    def target_address(self, address: str) -> str | None:
        """Where a source address goes on the target (attendees, organisers), if mapped."""

    def table_sources(self) -> list[str]:
        """The source of every line of the users table, whatever ``--users`` selected: a
        source checks a line against the others (two lines copying one library)."""


@dataclass(frozen=True)
class Capabilities:
    """What a connector can do, as the planner and the documentation read it."""

    keeps_bytes: bool = True
    """As a sink: stores each item's bytes as given (a mail's MIME, a file's content)."""
    keeps_mtime: bool = False
    """As a sink: keeps a file's modification time."""
    keeps_internal_date_offset: bool = True
    """As a mail sink: keeps the time-zone offset of a message's internal date."""
    name_rules: tuple[str, str] = ("", "")
    """How names the target refuses are changed, in a few words (the report names each)."""
    deletes: bool = False
    """As a sink: can remove an item it wrote (a document renamed or moved at the source)."""
    delta: bool = False
    """As a source: lists only what changed since a cursor."""
    flag_changes: bool = False
    """As a mail source: a delta listing carries flag changes (IMAP CONDSTORE, Graph)."""
    versions: bool = False
    """As a document sink: answers each write with a version and takes conditional writes."""


def _every_login(login: str, workload: str) -> bool:
    return True


def _no_warnings(config: Any, side: str) -> list[tuple[str, dict[str, Any]]]:
    return []


def _no_secrets(config: Any) -> list[str]:
    return []


@dataclass(frozen=True)
class Connector:
    """One connector, as data. ``open_source(context, account, workload)`` answers a
    ``MailSource`` for ``mail`` and a ``DocumentSource`` otherwise; ``open_sink`` likewise
    a ``MailSink`` or a ``DocumentSink``. Both may raise ``ConnectError``."""

    type: str
    config: type[BaseModel]
    """Its batch section; a ``type: Literal["<type>"]`` field tells sections apart."""
    summary: tuple[str, str]
    """What it is, in English and French, for ``bascule connectors`` and the docs."""
    reads: frozenset[str] = frozenset()
    writes: frozenset[str] = frozenset()
    open_source: Callable[[Context, Account, str], Any] | None = None
    open_sink: Callable[[Context, Account, str], Any] | None = None
    open_sharing: Callable[[Context, Account, str], Any] | None = None
    """As a sink: a ``mappings.sharing.SharingTarget`` that applies a space's sharing on
    the target, or ``None`` when its section does not ask for it (or it cannot)."""
    open_sharing_source: Callable[[Context, Account, str], Any] | None = None
    """As a mail source: a ``mappings.sharing.MailboxSharingSource``, who may open the
    account's mailbox and its folders, kept by the source apart from its items."""
    capabilities: Capabilities = Capabilities()
    example: str = ""
    """Its section's lines for ``bascule init``, after the ``[source]``/``[target]`` line."""
    largest_item: Callable[[Any], int | None] = lambda config: None
    """As a sink: the largest item its section allows, in bytes (``max_message_size``);
    ``None`` when only the target can say (IMAP's APPENDLIMIT, read when a sink opens)."""
    account_slots: Callable[[Any], int] = lambda config: 2
    """How many work units of one account may run at once against it."""
    check: Callable[[Context, Any, str | None], None] | None = None
    """Sign in once before anything moves, with the first principal's login (a wrong
    tenant, an expired secret, a missing consent stop the command at once)."""
    principals: Callable[[Context, Any], list[str]] | None = None
    """As a source: the logins present (a folder of exports), to name unmapped ones."""
    serves: Callable[[str, str], bool] = _every_login
    """As a source: whether a login has this workload (a SharePoint site has only files)."""
    warnings: Callable[[Any, str], list[tuple[str, dict[str, Any]]]] = _no_warnings
    """What in its section works but deserves a word: ``(code, params)`` for the catalogue;
    the second argument is ``source`` or ``target``."""
    advised_items: Callable[[Any, str], tuple[int, str] | None] = lambda config, workload: None
    """As a sink: the most items of a workload one container should hold for the target's
    clients to handle it well, and whose figure it is (a server's name); ``audit`` warns
    about a source container holding more."""
    refusals: Callable[[Any, str], list[tuple[str, dict[str, Any]]]] = _no_warnings
    """As a sink: why its section cannot take a workload (the second argument) as the batch
    asks, ``(code, params)`` for the catalogue; ``plan`` reports them and ``run`` stops
    before anything moves."""
    secret_references: Callable[[Any], list[str]] = _no_secrets
    """The secret references (and ``file:`` key files) its section names, checked for
    files other users may read."""
    target_logins: Callable[[Any], list[tuple[str, str]]] = lambda config: []
    """The target logins its section names, as ``(key, login)``: each must be a target of
    the users table, or the section names nobody (a warning names it)."""


_registered: dict[str, Connector] = {}
_lock = threading.RLock()
_loaded = False
_generation = 0


def register(connector: Connector) -> None:
    """Make a connector known; one registered again under its type replaces the former."""
    global _generation
    with _lock:
        _registered[connector.type] = connector
        _generation += 1


def unregister(kind: str) -> None:
    """Forget a connector (tests that register their own)."""
    global _generation
    with _lock:
        _load()
        _registered.pop(kind, None)
        _generation += 1


def generation() -> int:
    """Changes whenever the set of connectors does: models built from it are rebuilt."""
    with _lock:
        _load()
        return _generation


def connectors() -> list[Connector]:
    with _lock:
        _load()
        return list(_registered.values())


def connector(kind: str) -> Connector:
    """The connector registered under ``kind``; ``KeyError`` if none is."""
    with _lock:
        _load()
        return _registered[kind]


def sources(workload: str | None = None) -> list[Connector]:
    """Connectors that read ``workload`` (any workload when ``None``)."""
    return [c for c in connectors() if (workload in c.reads if workload else c.reads)]


def sinks(workload: str | None = None) -> list[Connector]:
    """Connectors that write ``workload`` (any workload when ``None``)."""
    return [c for c in connectors() if (workload in c.writes if workload else c.writes)]


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILT_IN:
        importlib.import_module(module)
    for point in entry_points(group=ENTRY_POINTS):
        importlib.import_module(point.value)
