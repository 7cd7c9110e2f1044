"""The batch file: what to move, from where, to where. TOML, validated by pydantic."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from mappings.secrets import reference_problem, resolve_secret, secret_warning
from reports.i18n import Text

SECRET_REFERENCE_HINT = 'a reference such as "env:NAME" or "file:path/to/secret"'


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AdminLogin(_Strict):
    """Log in to every mailbox with one administrator account.

    ``style = "master"`` is Dovecot's master user: ``LOGIN user*admin``. ``style = "proxy"``
    is SASL PLAIN proxy authorisation (Cyrus, Dovecot): authenticate as the admin, act as the
    user.
    """

    login: str
    secret: str = Field(description=SECRET_REFERENCE_HINT)
    style: Literal["master", "proxy"] = "master"
    separator: str = Field("*", description="Between user and admin for style = master.")

    @field_validator("secret")
    @classmethod
    def _reference(cls, value: str) -> str:
        return _check_reference(value)


class LocalEndpointConfig(_Strict):
    type: Literal["maildir", "mbox", "eml"]
    path: Path = Field(
        description="Folder holding one store per user, named by the user's login in users.csv."
    )
    max_message_size: int | None = Field(
        None, gt=0, description="As a target: the largest message to write, in bytes."
    )


class AppCredentials(_Strict):
    """An application registered in the tenant's Entra ID, signing in as itself (OAuth 2.0
    client credentials) with a client secret or a certificate."""

    tenant: str = Field(description="Tenant id or primary domain, e.g. ville.onmicrosoft.com.")
    client_id: str = Field(description="Application (client) id of the registered app.")
    client_secret: str | None = Field(None, description=SECRET_REFERENCE_HINT)
    certificate: Path | None = Field(
        None, description="PEM file holding the app certificate's private key."
    )
    certificate_thumbprint: str | None = Field(
        None, description="SHA-1 thumbprint of that certificate, as Entra ID shows it."
    )
    authority: str = Field(
        "https://login.microsoftonline.com",
        description="Sign-in host (national clouds: login.microsoftonline.us, "
        "login.partner.microsoftonline.cn...).",
    )

    @field_validator("client_secret")
    @classmethod
    def _secret_reference(cls, value: str | None) -> str | None:
        return None if value is None else _check_reference(value)

    @field_validator("authority")
    @classmethod
    def _https_authority(cls, value: str) -> str:
        return _https(value)

    @model_validator(mode="after")
    def _one_credential(self) -> AppCredentials:
        if (self.client_secret is None) == (self.certificate is None):
            raise ValueError("give client_secret or certificate (one of them)")
        if self.certificate is not None and not self.certificate_thumbprint:
            raise ValueError("certificate_thumbprint is needed with certificate")
        return self


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


class ImapEndpointConfig(_Strict):
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
        description="Parallelism per account: connections/2 folders at once, each appending "
        "over connections/2 connections besides its control connection. Lower it for servers "
        "that cap connections per user (Dovecot: mail_max_userip_connections, 10 by default).",
    )
    timeout: float = Field(60.0, gt=0)
    max_message_size: int | None = Field(
        None, gt=0,
        description="As a target: the largest message it accepts, in bytes, when the server "
        "does not advertise it (APPENDLIMIT). Larger ones are listed by the plan.",
    )

    @model_validator(mode="after")
    def _one_login(self) -> ImapEndpointConfig:
        if self.admin is not None and self.oauth is not None:
            raise ValueError("give admin or oauth (one of them)")
        return self


class GraphEndpointConfig(AppCredentials):
    """Microsoft 365 through Microsoft Graph, signed in as an application (client
    credentials) registered in the tenant's Entra ID."""

    type: Literal["graph"]
    graph_url: str = Field("https://graph.microsoft.com", description="Graph endpoint.")
    ca_file: Path | None = Field(
        None, description="A CA to trust (test servers, TLS-inspecting proxies). TLS is "
        "always verified."
    )
    per_mailbox: int = Field(
        4, ge=1, le=16, description="Concurrent Graph requests per mailbox (Outlook allows 4)."
    )

    @field_validator("graph_url")
    @classmethod
    def _https_graph(cls, value: str) -> str:
        return _https(value)


Endpoint = Annotated[
    ImapEndpointConfig | LocalEndpointConfig | GraphEndpointConfig, Field(discriminator="type")
]


class MappingConfig(_Strict):
    users: Path = Field(
        Path("users.csv"), description="CSV with columns source,target,source_secret,target_secret."
    )


class MailConfig(_Strict):
    exclude: list[str] = Field(
        default_factory=list, description='Folder patterns to leave out, e.g. "Sync Issues*".'
    )
    renames: dict[str, str] = Field(
        default_factory=dict, description='Source folder -> target folder, e.g. "Old" = "Archives/Old".'
    )
    include_non_mail: bool = Field(
        False, description="Also copy Calendar, Contacts, Tasks... folders Exchange shows over IMAP."
    )


class DocumentsConfig(_Strict):
    path: Path = Field(
        Path("documents"),
        description="Local folder receiving calendars (.ics), contacts (.vcf) and files, one "
        "sub-folder per target user and workload; relative to the batch file.",
    )


class RunConfig(_Strict):
    work_dir: Path = Field(
        Path("bascule-work"), description="Ledger and reports; relative to the batch file."
    )
    workers: int = Field(4, ge=1, le=64, description="Work units running at once.")
    ledger: str | None = Field(
        None, description="SQLAlchemy URL of the ledger, without its password; default: "
        "SQLite in work_dir."
    )
    ledger_secret: str | None = Field(
        None, description="The ledger database's password: " + SECRET_REFERENCE_HINT + "."
    )

    @field_validator("ledger")
    @classmethod
    def _no_password_in_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            address = make_url(value)
        except ArgumentError as error:
            raise ValueError(f"not a database URL ({error})") from None
        if address.password:
            raise ValueError("the URL holds a password: write it without, and give "
                             'ledger_secret = "env:NAME" (the password is not repeated here)')
        return value

    @field_validator("ledger_secret")
    @classmethod
    def _ledger_secret_reference(cls, value: str | None) -> str | None:
        return None if value is None else _check_reference(value)


class Batch(_Strict):
    name: str = Field(pattern=r"^[\w.-]+$", description="Short name of the batch, e.g. lot-1.")
    source: Endpoint
    target: Endpoint | None = Field(
        None, description="Where mail goes; needed by plan, run and verify, not by audit."
    )
    mapping: MappingConfig = MappingConfig()
    workloads: list[Literal["mail", "calendar", "contacts", "files"]] = Field(
        default_factory=lambda: ["mail"],
        description="What to move. calendar, contacts and files need a graph source.",
    )
    mail: MailConfig = MailConfig()
    documents: DocumentsConfig = DocumentsConfig()
    run: RunConfig = RunConfig()
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    @property
    def base_dir(self) -> Path:
        """The batch file's folder: relative paths in the batch start there."""
        return self._base_dir

    @model_validator(mode="after")
    def _target_kind(self) -> Batch:
        if self.target is not None and self.target.type not in ("imap", "maildir"):
            raise ValueError("target.type must be imap or maildir")
        others = [w for w in self.workloads if w != "mail"]
        if others and self.source.type != "graph":
            raise ValueError(f"workloads {', '.join(others)} need a graph source")
        return self

    def resolve(self, path: Path) -> Path:
        """A path from the batch, relative to the batch file's folder."""
        return path if path.is_absolute() else self.base_dir / path

    def ledger_password(self) -> str | None:
        """The ledger database's password, read from its reference (``SecretError``)."""
        if self.run.ledger_secret is None:
            return None
        return resolve_secret(self.run.ledger_secret, base_dir=self.base_dir)

    @property
    def work_dir(self) -> Path:
        return self.resolve(self.run.work_dir)


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def batch_warnings(batch: Batch) -> list[Text]:
    """What in the batch works but deserves a word: mail in clear over a network, secrets
    or private keys that other users of the machine may read."""
    warnings = []
    for side, endpoint in ((Text.of("side_source"), batch.source),
                           (Text.of("side_target"), batch.target)):
        if (isinstance(endpoint, ImapEndpointConfig) and endpoint.security == "none"
                and endpoint.host.lower() not in LOOPBACK_HOSTS
                and not endpoint.host.startswith("127.")):
            warnings.append(Text.of("cleartext_to_network", side=side, host=endpoint.host))
    references = [batch.run.ledger_secret]
    keys: list[Path] = []
    for endpoint in (batch.source, batch.target):
        if isinstance(endpoint, ImapEndpointConfig):
            references.append(endpoint.admin.secret if endpoint.admin else None)
            credentials: AppCredentials | None = endpoint.oauth
        else:
            credentials = endpoint if isinstance(endpoint, GraphEndpointConfig) else None
        if credentials is not None:
            references.append(credentials.client_secret)
            if credentials.certificate is not None:
                keys.append(batch.resolve(credentials.certificate))
    for reference in filter(None, references):
        warning = secret_warning(reference, base_dir=batch.base_dir)
        if warning is not None:
            warnings.append(Text.of(warning.code, **warning.params))
    for key in keys:
        warning = secret_warning(f"file:{key}", base_dir=batch.base_dir)
        if warning is not None:
            warnings.append(Text.of(warning.code, **warning.params))
    return warnings


def _https(value: str) -> str:
    if not value.startswith("https://"):
        raise ValueError("must start with https://")
    return value.rstrip("/")


def _check_reference(value: str) -> str:
    if reference_problem(value) is not None:
        raise ValueError(f"must be {SECRET_REFERENCE_HINT}, never the secret itself")
    return value


class BatchError(Exception):
    """A batch file that cannot be used; ``problems`` lists each one, in both languages."""

    def __init__(self, path: Path, problems: list[Text]) -> None:
        super().__init__(f"{path}: " + "; ".join(p.en for p in problems))
        self.path = path
        self.problems = problems


def load_batch(path: Path) -> Batch:
    """Read and validate a batch file; raise ``BatchError`` naming the file and each key."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise BatchError(path, [Text.of("batch_unreadable", reason=error.strerror or str(error))])
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise BatchError(path, [Text.of("batch_not_toml", reason=str(error))])
    try:
        batch = Batch.model_validate(data)
    except ValidationError as error:
        raise BatchError(path, [_explain(e) for e in error.errors()])
    batch._base_dir = path.resolve().parent
    return batch


def _explain(error: dict) -> Text:
    location = ".".join(str(part) for part in error["loc"]
                        if str(part) not in ("imap", "maildir", "mbox", "eml", "graph"))
    kind = error["type"]
    if kind == "missing":
        return Text.of("batch_key_missing", key=location)
    if kind == "extra_forbidden":
        return Text.of("batch_key_unknown", key=location)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return Text.of("batch_bad_type", key=location, expected="imap, maildir, mbox, eml, graph")
    expected = error["msg"].removeprefix("Value error, ")
    return Text.of("batch_bad_value", key=location, expected=expected)


def json_schema() -> str:
    return json.dumps(Batch.model_json_schema(), indent=2, ensure_ascii=False)


EXAMPLE = """\
# bascule batch file / fichier de lot bascule
# Every secret is a reference: env:NAME (environment variable) or file:PATH (a file
# readable by the migration account only). Never write a password here.
# Chaque secret est une référence : env:NOM ou file:CHEMIN. Jamais de mot de passe ici.

name = "lot-1"

[source]                      # imap | maildir | mbox | eml | graph
type = "imap"
host = "outlook.office365.com"
port = 993
security = "tls"              # tls | starttls | none
# ca_file = "ca-interne.pem"  # a CA to trust besides the system's / une AC à approuver
connections = 4               # per account / par compte
# Exchange Online: log in with the Entra ID application's token, no password per user.
# Exchange Online : connexion avec le jeton de l'application Entra ID, sans mot de passe.
# [source.oauth]
# tenant = "ville.onmicrosoft.com"
# client_id = "00000000-0000-0000-0000-000000000000"
# client_secret = "env:BASCULE_APP_SECRET"   # or certificate + certificate_thumbprint

[target]                      # imap | maildir
type = "imap"
host = "imap.ville.example"
port = 993
security = "tls"
# Log in to every mailbox with one admin account (Dovecot master user or SASL proxy):
# [target.admin]
# login = "migration"
# secret = "env:BASCULE_ADMIN_SECRET"
# style = "master"            # master (LOGIN user*admin) | proxy (AUTHENTICATE PLAIN)

[mapping]
users = "users.csv"           # source,target,source_secret,target_secret

[mail]
exclude = ["Sync Issues*"]
# renames = { "Ancien/Projets" = "Archives/Projets" }
# include_non_mail = false    # Calendar, Contacts, Tasks folders seen over IMAP

[run]
work_dir = "bascule-work"     # ledger and reports / registre et rapports
workers = 4
"""

EXAMPLE_USERS = """\
source,target,source_secret,target_secret
alice@ville.example,alice,env:ALICE_SOURCE_SECRET,env:ALICE_TARGET_SECRET
"""
