"""What the conformance cases ask of a connector: a harness, one per connector.

A harness opens its connector the way a batch does (its batch section, an ``Account``, the
registry's ``open_source``/``open_sink``) against a real store started for the test, and
reads that store back **independently**: through a client library or the files themselves,
never through the connector's own code. Which cases it runs comes from the registry (the
workloads the connector reads and writes); which readers and writers it offers, from the
small protocols below, discovered with ``isinstance``:

- ``MailTarget`` for a mail sink: the folders and messages the target holds;
- ``DocumentTarget`` for a document sink: the containers and items it holds;
- ``MailStore`` for a mail source: a way to put messages there first;
- ``DocumentStore`` for a document source: a way to put calendars, contacts or files there.

``fence`` and ``root`` are folders of the store's own storage on this machine (a Dovecot's
mail folder, a WebDAV server's share, the target folder itself): whatever the connector
writes for this account must stay inside ``root``; anything new elsewhere under ``fence``
escaped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from connectors import registry
from connectors.registry import Account, Capabilities, Connector

T = TypeVar("T")
Folder = tuple[str, ...]


@dataclass(frozen=True)
class Landed:
    """One item as an independent reader finds it in a store."""

    fingerprint: str
    size: int
    modified: datetime | None = None
    """A message's internal date as the store keeps it (with its offset, if it keeps one);
    a document's modification time."""
    flags: frozenset[str] = frozenset()


@dataclass(frozen=True)
class SeedMessage:
    """A message a test puts into a source store before reading it through the connector."""

    raw: bytes
    flags: frozenset[str] = frozenset()
    internal_date: datetime | None = None


@dataclass(frozen=True)
class SeedFile:
    """A file a test puts into a document source's store."""

    folder: Folder
    name: str
    content: bytes
    modified: datetime


class StoreContext:
    """What a batch gives a connector (``connectors.registry.Context``), for one test."""

    def __init__(self, base: Path, secrets: Mapping[str, str] | None = None) -> None:
        self.base = base
        self.secrets = dict(secrets or {})
        self._shared: dict[Hashable, Any] = {}

    def path(self, path: Path) -> Path:
        return path if path.is_absolute() else self.base / path

    def secret(self, reference: str, *, users_table: bool = False) -> str:
        return self.secrets[reference]

    def shared(self, key: Hashable, make: Callable[[], T]) -> T:
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]

    def target_address(self, address: str) -> str | None:
        return None

    def table_sources(self) -> list[str]:
        return []

    def close(self) -> None:
        shared, self._shared = list(self._shared.values()), {}
        for value in reversed(shared):
            close = getattr(value, "close", None)
            if callable(close):
                close()


@dataclass
class Harness:
    """One connector against its real store: its batch section, the login used, and where
    on this machine the store keeps what it is given."""

    type: str
    section: dict[str, Any]
    login: str
    context: StoreContext
    fence: Path
    root: Path
    secret_ref: str | None = None
    estimated_sizes: frozenset[str] = frozenset()
    """As a source: the workloads whose listings give sizes that are the store's estimate,
    not the fetched bytes' (as the store's documentation says)."""
    _opened: list[Any] = field(default_factory=list)

    @property
    def connector(self) -> Connector:
        return registry.connector(self.type)

    @property
    def capabilities(self) -> Capabilities:
        return self.connector.capabilities

    def account(self) -> Account:
        return Account(self.connector.config.model_validate(self.section), self.login,
                       self.secret_ref)

    def open_sink(self, workload: str) -> Any:
        """A new sink object, as a new run would open it; closed at teardown."""
        assert self.connector.open_sink is not None, f"{self.type} is no sink"
        sink = self.connector.open_sink(self.context, self.account(), workload)
        self._opened.append(sink)
        return sink

    def open_source(self, workload: str) -> Any:
        assert self.connector.open_source is not None, f"{self.type} is no source"
        source = self.connector.open_source(self.context, self.account(), workload)
        self._opened.append(source)
        return source

    def snapshot(self) -> set[Path]:
        """Everything under ``fence`` now, links not followed."""
        return set(_walk(self.fence))

    def escaped(self, before: set[Path]) -> list[str]:
        """What appeared under ``fence`` since ``before`` outside ``root`` (and the folders
        on the way to it)."""
        return sorted(str(path.relative_to(self.fence)) for path in _walk(self.fence)
                      if path not in before and path != self.root
                      and self.root not in path.parents and path not in self.root.parents)

    def close(self) -> None:
        opened, self._opened = self._opened, []
        for connection in reversed(opened):
            connection.close()
        self.context.close()


@dataclass
class Case:
    """One connector in one role for one workload: its harness, and what the cases open."""

    harness: Harness
    workload: str

    def open_sink(self) -> Any:
        """A ``MailSink`` or a ``DocumentSink``, as a new run would open it."""
        return self.harness.open_sink(self.workload)

    def open_source(self) -> Any:
        """A ``MailSource`` or a ``DocumentSource``."""
        return self.harness.open_source(self.workload)


@runtime_checkable
class MailTarget(Protocol):
    """An independent reader of a mail sink's store."""

    def folders(self) -> list[Folder]:
        """Every folder of the account, as paths, once each as the store lists it."""

    def messages(self, folder: Folder) -> list[Landed]:
        """Every message of a folder, bodies hashed in bounded memory; ``modified`` is the
        internal date, ``flags`` the flags and keywords."""

    def delete(self, folder: Folder, fingerprint: str) -> None:
        """Delete, as a user of the target would, the messages with these bytes."""


@runtime_checkable
class DocumentTarget(Protocol):
    """An independent reader of a document sink's store."""

    def containers(self, workload: str) -> list[str]:
        """The native name of every container and sub-folder the workload's root holds."""

    def landed(self, workload: str) -> dict[str, Landed]:
        """Every item under the workload's root, by the target_ref the sink answers for it;
        ``modified`` is its modification time."""

    def segments(self, workload: str, target_ref: str) -> tuple[str, ...]:
        """The names a user of the target sees on the way to an item, its own last."""

    def replace(self, workload: str, target_ref: str, content: bytes) -> None:
        """Change an item's content as a user of the target would."""

    def delete(self, workload: str, target_ref: str) -> None:
        """Delete an item as a user of the target would."""

    def expected_fingerprint(self, workload: str, content: bytes) -> str:
        """The fingerprint ``landed`` gives an item sent with this content and kept as the
        target keeps it: the content's own where the target keeps bytes, that of its
        meaning (read by a parser of the reader's own) where the target rewrites them."""


@runtime_checkable
class MailStore(Protocol):
    """Puts messages into a mail source's store, without the connector."""

    def seed_mail(self, folders: Mapping[Folder, list[SeedMessage]]) -> None:
        """Create the folders (``("INBOX",)`` is the inbox) holding these messages."""


@runtime_checkable
class DocumentStore(Protocol):
    """Puts calendars, contacts or files into a document source's store."""

    def seed_documents(self, workload: str, files: list[SeedFile]) -> list[str | None]:
        """Fill the account's store for ``workload``; answer the fingerprint each item
        must have once fetched, ``None`` for an item the source makes from other data
        (a calendar object from an event's properties). ``files`` is what to put for
        the ``files`` workload."""


def _walk(top: Path) -> list[Path]:
    found = []
    for folder, folders, files in os.walk(top):
        found += [Path(folder, name) for name in (*folders, *files)]
    return found
