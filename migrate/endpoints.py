"""Open the source and the sink of one principal from the batch: the one place where the
engine names connectors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from connectors.base import ConnectError, MailSink, MailSource
from mappings.secrets import resolve_secret
from mappings.users import UserMapping
from migrate.batch import Batch, ImapEndpointConfig, LocalEndpointConfig


@dataclass(frozen=True)
class Account:
    """One side of a principal: the batch's endpoint and the login on it."""

    config: ImapEndpointConfig | LocalEndpointConfig
    login: str
    secret_ref: str | None

    @property
    def key(self) -> str:
        """Identifies the account for per-account limits."""
        if isinstance(self.config, ImapEndpointConfig):
            return f"imap://{self.login}@{self.config.host}:{self.config.port}"
        return f"{self.config.type}:{self.config.path}/{self.login}"


def accounts(batch: Batch, user: UserMapping) -> tuple[Account, Account]:
    return (
        Account(batch.source, user.source, user.source_secret),
        Account(batch.target, user.target, user.target_secret),
    )


def local_store(batch: Batch, account: Account) -> Path:
    """Where a local store of this account lives; the login never escapes the root."""
    assert isinstance(account.config, LocalEndpointConfig)
    root = batch.resolve(account.config.path).resolve()
    store = (root / account.login).resolve()
    if store.parent != root:
        raise ConnectError(f"{account.login!r} is not a plain name under {root}", code="unreachable")
    return store


def _imap_parts(batch: Batch, account: Account):
    from connectors.imap.session import ImapCredentials, ImapEndpoint

    config = account.config
    assert isinstance(config, ImapEndpointConfig)
    endpoint = ImapEndpoint(
        host=config.host, port=config.port, security=config.security,
        ca_file=str(batch.resolve(config.ca_file)) if config.ca_file else None,
        timeout=config.timeout,
    )
    admin = config.admin
    if admin is None:
        if not account.secret_ref:
            raise ConnectError(f"no secret for {account.login} in the users table", code="auth_failed")
        credentials = ImapCredentials(
            login=account.login, password=resolve_secret(account.secret_ref, base_dir=_users_folder(batch))
        )
    else:
        password = resolve_secret(admin.secret, base_dir=batch.base_dir)
        if admin.style == "master":
            credentials = ImapCredentials(
                login=f"{account.login}{admin.separator}{admin.login}", password=password
            )
        else:
            credentials = ImapCredentials(login=admin.login, password=password, authzid=account.login)
    return endpoint, credentials


def _users_folder(batch: Batch) -> Path:
    """``file:`` references in the users table are relative to the table's folder."""
    return batch.resolve(batch.mapping.users).parent


def open_source(batch: Batch, account: Account) -> MailSource:
    config = account.config
    if isinstance(config, ImapEndpointConfig):
        from connectors.imap.source import ImapSource

        return ImapSource(*_imap_parts(batch, account))
    store = local_store(batch, account)
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


def open_sink(batch: Batch, account: Account) -> MailSink:
    config = account.config
    if isinstance(config, ImapEndpointConfig):
        from connectors.imap.sink import ImapSink

        # Half the account's connections append for one unit: a server's APPEND is bound by
        # its fsync per connection, and the big folder of a mailbox often runs alone at the end.
        return ImapSink(*_imap_parts(batch, account), connections=max(1, config.connections // 2))
    from connectors.local.maildir import MaildirSink

    return MaildirSink(local_store(batch, account))


def _require(store: Path, account: Account) -> None:
    if not store.exists():
        raise ConnectError(f"no store for {account.login} at {store}", code="unreachable")


def local_principals(batch: Batch) -> list[str] | None:
    """The stores present under a local source's folder, or None for a server source."""
    config = batch.source
    if not isinstance(config, LocalEndpointConfig):
        return None
    root = batch.resolve(config.path)
    if not root.is_dir():
        return []
    names = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        names.append(entry.name.removesuffix(".mbox") if entry.is_file() else entry.name)
    return names
