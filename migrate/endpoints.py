"""Open the sources and sinks of the batch's principals through the registry of connectors,
and answer what a connector may ask of the batch (``connectors.registry.Context``): paths,
secrets, objects shared by every unit of the command, the users table."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

from connectors import registry
from connectors.base import ConnectError
from connectors.protocols import DocumentSink, DocumentSource, MailSink, MailSource
from connectors.registry import Account, Capabilities, Connector
from mappings.secrets import resolve_secret
from mappings.sharing import MailboxSharingSource, SharingTarget
from mappings.users import UserMap, UserMapping
from migrate.batch import MAIL, Batch

T = TypeVar("T")


class Connectors:
    """Opens sources and sinks for the batch's principals. What serves every principal (a
    Graph session with its per-mailbox caps, an application's tokens) is made once, through
    ``shared``, and closed with the command."""

    def __init__(self, batch: Batch, users: UserMap | None = None) -> None:
        self.batch = batch
        self.users = users
        self._shared: dict[Hashable, Any] = {}
        self._lock = threading.RLock()

    # What a connector may ask (connectors.registry.Context).

    def path(self, path: Path) -> Path:
        return self.batch.resolve(path)

    def secret(self, reference: str, *, users_table: bool = False) -> str:
        base = self.batch.resolve(self.batch.mapping.users).parent if users_table \
            else self.batch.base_dir
        return resolve_secret(reference, base_dir=base)

    def shared(self, key: Hashable, make: Callable[[], T]) -> T:
        with self._lock:
            if key not in self._shared:
                self._shared[key] = make()
            return self._shared[key]

    def target_address(self, address: str) -> str | None:
        """Where a source address goes on the target (attendees, organisers): the target
        login of a mapped user when it is an address, else nothing (kept as it is)."""
        user = self.users.lookup(address) if self.users is not None else None
        if user is not None and "@" in user.target:
            return user.target
        return None

    def table_sources(self) -> list[str]:
        return [user.source for user in self.users] if self.users is not None else []

    def close(self) -> None:
        with self._lock:
            shared, self._shared = list(self._shared.values()), {}
        for value in reversed(shared):
            close = getattr(value, "close", None)
            if callable(close):
                close()

    # What the engine asks.

    @property
    def source(self) -> Connector:
        return registry.connector(self.batch.source.type)

    def sink(self, workload: str) -> Connector | None:
        config = self.batch.target_of(workload)
        return registry.connector(config.type) if config is not None else None

    def sink_capabilities(self, workload: str) -> Capabilities:
        sink = self.sink(workload)
        return sink.capabilities if sink is not None else Capabilities()

    def serves(self, user: UserMapping, workload: str) -> bool:
        """Whether the principal has this workload (a SharePoint site has only files)."""
        return self.source.serves(user.source, workload)

    def account_slots(self, workload: str) -> int:
        """Work units of one account that may run at once: the smaller of both ends'."""
        configs = [self.batch.source, self.batch.target_of(workload)]
        return min(registry.connector(c.type).account_slots(c) for c in configs if c is not None)

    def source_account(self, user: UserMapping) -> Account:
        return Account(self.batch.source, user.source, user.source_secret)

    def target_account(self, user: UserMapping, workload: str) -> Account:
        config = self.batch.target_of(workload)
        if config is None:
            raise ConnectError(code="no_target")
        return Account(config, user.target, user.target_secret)

    def check_source(self, first_login: str | None) -> None:
        """Sign in once before anything moves, so that a wrong tenant, an expired secret
        or a missing admin consent stops the run at once with the reason."""
        if self.source.check is not None:
            self.source.check(self, self.batch.source, first_login)

    def open_source(self, user: UserMapping) -> MailSource:
        return self._open_source(user, MAIL)

    def open_sink(self, user: UserMapping) -> MailSink:
        return self._open_sink(user, MAIL)

    def open_document_source(self, user: UserMapping, workload: str) -> DocumentSource:
        return self._open_source(user, workload)

    def open_document_sink(self, user: UserMapping, workload: str) -> DocumentSink:
        return self._open_sink(user, workload)

    def open_sharing_target(self, user: UserMapping, workload: str) -> SharingTarget | None:
        """What applies the principal's sharing on the target, if its section asks for it."""
        account = self.target_account(user, workload)
        sink = registry.connector(account.config.type)
        if sink.open_sharing is None:
            return None
        target: SharingTarget | None = sink.open_sharing(self, account, workload)
        return target

    def open_sharing_source(self, user: UserMapping, workload: str
                            ) -> MailboxSharingSource | None:
        """Who may open the principal's mailbox and its folders, if the source can say."""
        if self.source.open_sharing_source is None:
            return None
        source: MailboxSharingSource = self.source.open_sharing_source(
            self, self.source_account(user), workload)
        return source

    def local_principals(self) -> list[str] | None:
        """The logins a source's folder holds (exports), or None for a server source."""
        if self.source.principals is None:
            return None
        return self.source.principals(self, self.batch.source)

    def _open_source(self, user: UserMapping, workload: str) -> Any:
        source = self.source
        if source.open_source is None or workload not in source.reads:
            raise ConnectError(code="no_source_for", params={"workload": workload,
                                                              "type": source.type})
        return source.open_source(self, self.source_account(user), workload)

    def _open_sink(self, user: UserMapping, workload: str) -> Any:
        account = self.target_account(user, workload)
        sink = registry.connector(account.config.type)
        if sink.open_sink is None or workload not in sink.writes:
            raise ConnectError(code="no_target")
        return sink.open_sink(self, account, workload)
