"""IMAP servers as a source and as a target of mail: its batch section and its registration."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from connectors.base import ConnectError
from connectors.config import SecretReference, Section, is_loopback, refused
from connectors.graph.connector import AppCredentials, app_tokens
from connectors.imap.session import ImapCredentials, ImapEndpoint, ImapSession
from connectors.registry import Account, Capabilities, Connector, Context, register

NAME_RULES = (
    "the server's separator and refused characters replaced; collisions numbered",
    "séparateur et caractères refusés par le serveur remplacés ; collisions numérotées",
)
GREETING_TIMEOUT = 10.0
"""An IMAP server greets at once: ten seconds of silence mean something else listens."""


class AdminLogin(Section):
    """Log in to every mailbox with one administrator account.

    ``style = "master"`` is Dovecot's master user: ``LOGIN user*admin``. ``style = "proxy"``
    is SASL PLAIN proxy authorisation (Cyrus, Dovecot): authenticate as the admin, act as the
    user.
    """

    login: str
    secret: SecretReference
    style: Literal["master", "proxy"] = "master"
    separator: str = Field("*", description="Between user and admin for style = master.")


class ImapOAuth(AppCredentials):
    """Log in to every mailbox with the application's token (SASL XOAUTH2), as Exchange
    Online allows once the app holds ``IMAP.AccessAsApp`` and access to the mailboxes."""

    scope: str = Field(
        "https://outlook.office365.com/.default",
        description="Resource the token is asked for (client credentials: <resource>/.default).",
    )
    ca_file: Path | None = Field(
        None, description="A CA to trust for the sign-in host (test servers, TLS-inspecting "
        "proxies). TLS is always verified."
    )


class ImapEndpointConfig(Section):
    type: Literal["imap"]
    host: str
    port: int = Field(993, ge=1, le=65535)
    security: Literal["tls", "starttls", "none"] = "tls"
    ca_file: Path | None = Field(
        None, description="A CA to trust besides the system's (internal CA). TLS is always verified."
    )
    admin: AdminLogin | None = None
    oauth: ImapOAuth | None = Field(
        None, description="Log in with an Entra ID application's token (Exchange Online) "
        "instead of a password per user."
    )
    connections: int = Field(
        4, ge=1, le=32,
        description="Parallelism per account: that many folders at once, each with "
        "connections/4 (at least one) appending and a control connection when it needs one "
        "(flag changes, recovery lookups, verify), and connections/4 more lent to a folder "
        "of many messages: up to 9 connections to the target for 4. "
        "Lower it for servers that cap connections per user (Dovecot: "
        "mail_max_userip_connections, 10 by default).",
    )
    timeout: float = Field(60.0, gt=0)
    multiappend: bool = Field(
        True, description="As a target: send messages in batches, many in one APPEND, where "
        "the server has MULTIAPPEND (RFC 3502); false sends them one APPEND each.",
    )
    max_message_size: int | None = Field(
        None, gt=0,
        description="As a target: the largest message it accepts, in bytes, when the server "
        "does not advertise it (APPENDLIMIT). Larger ones are listed by the plan.",
    )
    acl_mailboxes: list[str] = Field(
        default_factory=list,
        description="As a target: the logins (the users table's target column) of shared "
        "mailboxes whose folder permissions at the source are set on their folders with "
        "SETACL (RFC 4314) after each run, from the CSV of work/permissions/; the server "
        "must have ACL (Dovecot: the acl and imap_acl plugins).",
    )

    @model_validator(mode="after")
    def _one_login(self) -> ImapEndpointConfig:
        if self.admin is not None and self.oauth is not None:
            raise refused("batch_admin_or_oauth")
        return self


def imap_parts(context: Context, account: Account) -> tuple[ImapEndpoint, ImapCredentials]:
    """Where the account's server is and who logs in there."""
    config: ImapEndpointConfig = account.config
    endpoint = ImapEndpoint(
        host=config.host, port=config.port, security=config.security,
        ca_file=str(context.path(config.ca_file)) if config.ca_file else None,
        timeout=config.timeout, greeting_timeout=min(GREETING_TIMEOUT, config.timeout),
        multiappend=config.multiappend,
    )
    if config.oauth is not None:
        tokens = app_tokens(context, config.oauth, ca_file=config.oauth.ca_file,
                            scope=config.oauth.scope)
        return endpoint, ImapCredentials(login=account.login, password="", token=tokens)
    admin = config.admin
    if admin is None:
        if not account.secret_ref:
            raise ConnectError(code="no_secret", params={"login": account.login})
        password = context.secret(account.secret_ref, users_table=True)
        return endpoint, ImapCredentials(login=account.login, password=password)
    password = context.secret(admin.secret)
    if admin.style == "master":
        return endpoint, ImapCredentials(login=f"{account.login}{admin.separator}{admin.login}",
                                         password=password)
    return endpoint, ImapCredentials(login=admin.login, password=password, authzid=account.login)


def _open_source(context: Context, account: Account, workload: str) -> Any:
    from connectors.imap.source import ImapSource

    return ImapSource(*imap_parts(context, account))


def _open_sink(context: Context, account: Account, workload: str) -> Any:
    from connectors.imap.sink import AccountFolders, AppendAllowance, ImapSink

    # As many folders at once as connections, each appending over a quarter of them: most
    # folders are small, and what a small one costs is round trips, which only more folders
    # in flight hide; a big one batches many messages per APPEND (MULTIAPPEND) and borrows
    # what the account's other folders leave of its allowance while it sends (up to
    # `connections` in all for a folder alone, as the raw copier's four lanes; a quarter
    # more when every slot is busy), and gives one back as soon as another folder of the
    # account needs its own: the most an account opens for APPENDs is
    # connections + connections/4.
    config = account.config
    share = max(1, config.connections // 4)
    allowance = context.shared(
        ("imap-append-allowance", config.host, config.port, account.login),
        lambda: AppendAllowance(config.connections + share, widest=config.connections))
    # The account's folder list is read once for all its sinks: the others open no
    # control connection unless they need one.
    folders = context.shared(("imap-account-folders", config.host, config.port, account.login),
                             AccountFolders)
    return ImapSink(*imap_parts(context, account), connections=share, allowance=allowance,
                    account=folders)


def _open_sharing(context: Context, account: Account, workload: str) -> Any:
    from connectors.imap.acl import ImapAclTarget

    config: ImapEndpointConfig = account.config
    wanted = {login.casefold() for login in config.acl_mailboxes}
    if workload != "mail" or account.login.casefold() not in wanted:
        return None
    return ImapAclTarget(ImapSession(*imap_parts(context, account)))


def _check(context: Context, config: ImapEndpointConfig, first_login: str | None) -> None:
    if config.oauth is not None:
        app_tokens(context, config.oauth, ca_file=config.oauth.ca_file,
                   scope=config.oauth.scope)()


def _warnings(config: ImapEndpointConfig, side: str) -> list[tuple[str, dict[str, Any]]]:
    if config.security == "none" and not is_loopback(config.host):
        return [("cleartext_to_network", {"side": side, "host": config.host})]
    return []


def _references(config: ImapEndpointConfig) -> list[str]:
    found = [config.admin.secret] if config.admin else []
    return found + (config.oauth.references() if config.oauth else [])


register(Connector(
    type="imap", config=ImapEndpointConfig,
    summary=("An IMAP server (Exchange, Dovecot, Cyrus, BlueMind...)",
             "Un serveur IMAP (Exchange, Dovecot, Cyrus, BlueMind...)"),
    reads=frozenset({"mail"}), writes=frozenset({"mail"}),
    open_source=_open_source, open_sink=_open_sink, open_sharing=_open_sharing,
    # Dovecot keeps an internal date as a count of seconds and answers it in UTC, as the
    # conformance suite shows: the offset the source gave is not kept, and the plan says so.
    capabilities=Capabilities(keeps_bytes=True, keeps_internal_date_offset=False,
                              name_rules=NAME_RULES, delta=True, flag_changes=True),
    example='''host = "imap.ville.example"
port = 993
security = "tls"              # tls | starttls | none
# ca_file = "ca-interne.pem"  # a CA to trust besides the system's / une AC à approuver
connections = 4               # per account / par compte
# Log in to every mailbox with one admin account (Dovecot master user or SASL proxy):
# Connexion à chaque boîte avec un compte d'administration :
# [<side>.admin]
# login = "migration"
# secret = "env:BASCULE_ADMIN_SECRET"
# style = "master"            # master (LOGIN user*admin) | proxy (AUTHENTICATE PLAIN)
# Exchange Online: the Entra ID application's token, no password per user.
# [<side>.oauth]
# tenant = "ville.onmicrosoft.com"
# client_id = "00000000-0000-0000-0000-000000000000"
# client_secret = "env:BASCULE_APP_SECRET"   # or certificate + certificate_thumbprint
# Shared mailboxes whose folder permissions are set with SETACL (RFC 4314):
# Boîtes partagées dont les autorisations de dossiers sont posées par SETACL :
# acl_mailboxes = ["accueil"]
''',
    account_slots=lambda config: config.connections,
    largest_item=lambda config: config.max_message_size,
    check=_check,
    warnings=_warnings,
    target_logins=lambda config: [("acl_mailboxes", login) for login in config.acl_mailboxes],
    secret_references=_references,
))
