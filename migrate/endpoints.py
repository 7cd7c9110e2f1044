"""Open the source and the sink of one principal from the batch: the one place where the
engine names connectors."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from connectors.base import ConnectError
from connectors.local.documents import FolderSink
from connectors.protocols import (
    DocumentSource,
    MailSink,
    MailSource,
)
from mappings.secrets import resolve_secret
from mappings.users import UserMap, UserMapping
from migrate.batch import (
    AppCredentials,
    Batch,
    GraphEndpointConfig,
    ImapEndpointConfig,
    ImapOAuth,
    LocalEndpointConfig,
)
from reports.i18n import Text

if TYPE_CHECKING:
    from connectors.graph.auth import MsalTokenProvider
    from connectors.graph.session import GraphSession
    from connectors.imap.session import ImapCredentials, ImapEndpoint


@dataclass(frozen=True)
class Account:
    """One side of a principal: the batch's endpoint and the login on it."""

    config: ImapEndpointConfig | LocalEndpointConfig | GraphEndpointConfig
    login: str
    secret_ref: str | None


class Connectors:
    """Opens sources and sinks for the batch's principals. Sessions that serve every
    principal (Graph: one connection pool, one token, per-mailbox caps that must hold across
    work units) are made once and shared."""

    def __init__(self, batch: Batch, users: UserMap | None = None) -> None:
        self.batch = batch
        self.users = users
        self._graph: GraphSession | None = None
        self._imap_tokens: dict[ImapOAuth, MsalTokenProvider] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        if self._graph is not None:
            self._graph.close()
            self._graph = None
        for tokens in self._imap_tokens.values():
            tokens.close()
        self._imap_tokens.clear()

    def accounts(self, user: UserMapping) -> tuple[Account, Account]:
        if self.batch.target is None:
            raise ConnectError(code="no_target")
        return (
            Account(self.batch.source, user.source, user.source_secret),
            Account(self.batch.target, user.target, user.target_secret),
        )

    def source_account(self, user: UserMapping) -> Account:
        return Account(self.batch.source, user.source, user.source_secret)

    def check_source(self, first_user: str | None) -> None:
        """Sign in once before anything moves, so that a wrong tenant, an expired secret
        or a missing admin consent stops the run at once with the reason."""
        source = self.batch.source
        if isinstance(source, GraphEndpointConfig) and first_user:
            from connectors.graph.mail import check_access

            check_access(self.graph_session(), first_user)
        if isinstance(source, ImapEndpointConfig) and source.oauth is not None:
            self.imap_tokens(source.oauth)()

    def open_source(self, account: Account) -> MailSource:
        config = account.config
        if isinstance(config, ImapEndpointConfig):
            from connectors.imap.source import ImapSource

            return ImapSource(*self._imap_parts(account))
        if isinstance(config, GraphEndpointConfig):
            from connectors.graph.mail import GraphMailSource

            return GraphMailSource(self.graph_session(), account.login)
        store = self.local_store(account)
        if config.type == "maildir":
            from connectors.local.maildir import MaildirSource

            _require(store, account)
            return MaildirSource(store)
        if config.type == "mbox":
            from connectors.local.mbox import MboxSource

            if not store.exists() and store.with_suffix(".mbox").is_file():
                store = store.with_suffix(".mbox")
            _require(store, account)
            return MboxSource(store)
        from connectors.local.eml import EmlSource

        _require(store, account)
        return EmlSource(store)

    def open_sink(self, account: Account) -> MailSink:
        config = account.config
        if isinstance(config, ImapEndpointConfig):
            from connectors.imap.sink import ImapSink

            # Half the account's connections append for one unit: a server's APPEND is
            # bound by its fsync per connection, and the big folder of a mailbox often runs
            # alone at the end.
            return ImapSink(*self._imap_parts(account),
                            connections=max(1, config.connections // 2))
        from connectors.local.maildir import MaildirSink

        return MaildirSink(self.local_store(account))

    def open_document_source(self, account: Account, workload: str) -> DocumentSource:
        """Calendars and contacts, or drives, of a principal (a graph source only: the batch
        refuses other workloads for other sources)."""
        assert isinstance(account.config, GraphEndpointConfig)
        if workload == "files":
            from connectors.graph.files import GraphFileSource, GraphSiteFiles

            site = site_of(account.login)
            if site is not None:
                return GraphSiteFiles(self.graph_session(), site)
            return GraphFileSource(self.graph_session(), account.login)
        from connectors.graph.pim import GraphPimSource

        return GraphPimSource(self.graph_session(), account.login, user_map=self.target_address)

    def open_document_sink(self, account: Account, workload: str) -> FolderSink:
        """The target user's folder for this workload, under the batch's documents path."""
        root = self.batch.resolve(self.batch.documents.path).resolve()
        folder = (root / account.login).resolve()
        if folder.parent != root:
            raise ConnectError(code="unsafe_name", params={"name": account.login,
                                                            "root": str(root)})
        return FolderSink(folder / workload)

    def target_address(self, address: str) -> str | None:
        """Where a source address goes on the target (attendees, organisers): the target
        login of a mapped user when it is an address, else nothing (kept as it is)."""
        user = self.users.lookup(address) if self.users is not None else None
        if user is not None and "@" in user.target:
            return user.target
        return None

    def graph_session(self) -> GraphSession:
        config = self.batch.source
        assert isinstance(config, GraphEndpointConfig)
        with self._lock:
            if self._graph is None:
                from connectors.graph.session import GraphSession

                ca_file = self._ca_file(config.ca_file)
                url = config.graph_url
                if not url.endswith(("/v1.0", "/beta")):
                    url += "/v1.0"
                self._graph = GraphSession(url, self._app_tokens(config, ca_file=ca_file),
                                           ca_file=ca_file, per_mailbox=config.per_mailbox)
            return self._graph

    def imap_tokens(self, oauth: ImapOAuth) -> MsalTokenProvider:
        """The application's tokens for IMAP logins (XOAUTH2): one msal cache for every
        mailbox and connection, so that a run asks the sign-in service once an hour."""
        with self._lock:
            if oauth not in self._imap_tokens:
                self._imap_tokens[oauth] = self._app_tokens(
                    oauth, ca_file=self._ca_file(oauth.ca_file), scope=oauth.scope)
            return self._imap_tokens[oauth]

    def _app_tokens(self, config: AppCredentials, *, ca_file: str | None,
                    scope: str | None = None) -> MsalTokenProvider:
        from connectors.graph.auth import (
            GRAPH_SCOPE,
            ClientCertificate,
            GraphCredentials,
            token_provider,
        )

        credentials = GraphCredentials(
            tenant=config.tenant, client_id=config.client_id,
            client_secret=resolve_secret(config.client_secret, base_dir=self.batch.base_dir)
            if config.client_secret else None,
            certificate=ClientCertificate(self.batch.resolve(config.certificate),
                                          config.certificate_thumbprint or "")
            if config.certificate else None,
        )
        return token_provider(credentials, authority=config.authority, ca_file=ca_file,
                              scope=scope or GRAPH_SCOPE)

    def _ca_file(self, path: Path | None) -> str | None:
        return str(self.batch.resolve(path)) if path else None

    def local_store(self, account: Account) -> Path:
        """Where a local store of this account lives; the login never escapes the root."""
        assert isinstance(account.config, LocalEndpointConfig)
        root = self.batch.resolve(account.config.path).resolve()
        # Not resolved: a store that is a link (to another user's store, say) must reach the
        # source as a link, which refuses it.
        store = root / account.login
        if account.login in ("", ".", "..") or store.parent != root:
            raise ConnectError(code="unsafe_name", params={"name": account.login,
                                                            "root": str(root)})
        return store

    def local_principals(self) -> list[str] | None:
        """The stores present under a local source's folder, or None for a server source."""
        config = self.batch.source
        if not isinstance(config, LocalEndpointConfig):
            return None
        root = self.batch.resolve(config.path)
        if not root.is_dir():
            return []
        names = []
        for entry in sorted(root.iterdir()):
            if entry.name.startswith("."):
                continue
            names.append(entry.name.removesuffix(".mbox") if entry.is_file() else entry.name)
        return names

    def _users_folder(self) -> Path:
        """``file:`` references in the users table are relative to the table's folder."""
        return self.batch.resolve(self.batch.mapping.users).parent

    def _imap_parts(self, account: Account) -> tuple[ImapEndpoint, ImapCredentials]:
        from connectors.imap.session import ImapCredentials, ImapEndpoint

        config = account.config
        assert isinstance(config, ImapEndpointConfig)
        endpoint = ImapEndpoint(
            host=config.host, port=config.port, security=config.security,
            ca_file=self._ca_file(config.ca_file), timeout=config.timeout,
            greeting_timeout=min(GREETING_TIMEOUT, config.timeout),
        )
        if config.oauth is not None:
            return endpoint, ImapCredentials(login=account.login, password="",
                                             token=self.imap_tokens(config.oauth))
        admin = config.admin
        if admin is None:
            if not account.secret_ref:
                raise ConnectError(code="auth_failed", params={
                    "detail": Text.of("no_secret", login=account.login)})
            password = resolve_secret(account.secret_ref, base_dir=self._users_folder())
            return endpoint, ImapCredentials(login=account.login, password=password)
        password = resolve_secret(admin.secret, base_dir=self.batch.base_dir)
        if admin.style == "master":
            login = f"{account.login}{admin.separator}{admin.login}"
            return endpoint, ImapCredentials(login=login, password=password)
        return endpoint, ImapCredentials(login=admin.login, password=password,
                                         authzid=account.login)


GREETING_TIMEOUT = 10.0
"""An IMAP server greets at once: ten seconds of silence mean something else listens."""

SITE_PREFIX = "site:"
"""A users-table source written ``site:<name>`` is a SharePoint site: its libraries go to
the target named beside it, as the ``files`` workload."""


def site_of(principal: str) -> str | None:
    """The site a principal names, or None for a user or shared mailbox."""
    return principal[len(SITE_PREFIX):] if principal.lower().startswith(SITE_PREFIX) else None


def _require(store: Path, account: Account) -> None:
    if not os.path.lexists(store):
        raise ConnectError(code="no_store", params={"login": account.login, "path": str(store)})
