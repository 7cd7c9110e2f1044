"""A Microsoft identity platform and Microsoft Graph test server, served over TLS on loopback.

It behaves as Microsoft's published documentation says for the endpoints bascule uses; each
behaviour cites its page. The data is a ``FixtureTenant`` held in memory, which tests change
between two passes (new, changed and deleted messages) to exercise delta queries.

Switches a test may turn: ``throttle`` (a storm of 429 with ``Retry-After``),
``per_mailbox_limit`` (the Outlook concurrency limit, answered with 429), ``latency`` (a
fixed delay per Graph request, for benchmarks), ``no_consent`` (tokens without application
permissions), ``secret_expired`` and ``expire_tokens()``. ``stats`` counts what was served.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import itertools
import json
import random
import re
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.tls import TestCertificates, TlsHTTPServer

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
EXCHANGE_SCOPE = "https://outlook.office365.com/.default"
"""The scope of app-only tokens for IMAP (how-to-authenticate-an-imap-pop-smtp-application-by-
using-oauth page, "Use client credentials grant flow to authenticate IMAP and POP connections")."""
EXCHANGE_AUDIENCE = "https://outlook.office365.com"
EXCHANGE_ROLE = "IMAP.AccessAsApp"
DELTA_PAGE_SIZE = 10
"""Messages per delta page when the client states no preference (message-delta page)."""
LIST_PAGE_SIZE = 10
"""Default page size of mailFolders and messages lists (mailfolder/message list pages)."""
USERS_PAGE_SIZE = 100
"""Default page size of ``/users`` (user-list page: 100, at most 999 with ``$top``)."""
TOKEN_LIFETIME = 3599
JSON_TYPE = ("application/json;odata.metadata=minimal;odata.streaming=true;"
             "IEEE754Compatible=false;charset=utf-8")
CHUNK = 64 * 1024
ALL_MAILBOXES = "*"
OUTLOOK_SEGMENTS = frozenset({"mailFolders", "messages", "calendars", "calendar", "events",
                              "calendarView", "contacts", "contactFolders", "mailboxSettings"})
"""Resources under ``/users/{id}/`` that the Outlook service serves, and so counts per mailbox
(throttling-limits page, "Outlook service resources")."""


# --- the fixture tenant -------------------------------------------------------------------


@dataclass
class FixtureMessage:
    """One message: its MIME and the properties Graph gives beside it (message resource page)."""

    id: str
    folder_id: str
    mime: bytes
    subject: str
    received: datetime
    is_read: bool = False
    is_draft: bool = False
    flag_status: str = "notFlagged"
    categories: list[str] = field(default_factory=list)
    mime_refusal: tuple[int, str] | None = None
    """Status and error code ``$value`` answers for an item whose MIME Exchange cannot make."""
    version: int = 0
    """The tenant's change sequence when this message last changed (drives delta)."""

    def resource(self) -> dict[str, Any]:
        stamp = self.received.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "@odata.etag": f'W/"{self.version}"',
            "id": self.id,
            "subject": self.subject,
            "receivedDateTime": stamp,
            "lastModifiedDateTime": stamp,
            "isRead": self.is_read,
            "isDraft": self.is_draft,
            "flag": {"flagStatus": self.flag_status},
            "categories": list(self.categories),
            "parentFolderId": self.folder_id,
            "changeKey": str(self.version),
        }


@dataclass
class FixtureFolder:
    """One mail folder (mailfolder resource page)."""

    id: str
    display_name: str
    parent_id: str
    well_known_name: str | None = None
    hidden: bool = False
    search: bool = False
    """A mail search folder: a virtual folder (mailsearchfolder resource page)."""


@dataclass
class FixtureMailbox:
    """A user (or shared mailbox) and their mail."""

    id: str
    user_principal_name: str
    display_name: str
    folders: dict[str, FixtureFolder] = field(default_factory=dict)
    messages: dict[str, FixtureMessage] = field(default_factory=dict)
    removed: list[tuple[int, str, str]] = field(default_factory=list)
    """(sequence, folder id, message id) of messages deleted or moved out of a folder."""
    root_id: str = ""
    extras: dict[str, Any] = field(default_factory=dict)
    """Data of other workloads (calendars, contacts, drive), kept by their own modules."""
    archive_id: str | None = None
    """The In-Place Archive mailbox, if the user has one (``exchangeSettings``, beta)."""

    def resource(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "displayName": self.display_name,
            "userPrincipalName": self.user_principal_name,
            "mail": self.user_principal_name,
        }


@dataclass
class FixtureTenant:
    """A tenant: its application registration and its mailboxes. Change it with the methods
    below, which keep the change sequence delta queries read."""

    tenant_id: str
    domain: str
    client_id: str
    client_secret: str
    certificate_pem: bytes | None = None
    """The application certificate registered for certificate logins (PEM), if any."""
    mailboxes: list[FixtureMailbox] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    """Tenant-wide data of other workloads (SharePoint sites), kept by their own modules."""
    sequence: int = 0
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1), repr=False)

    def _new_id(self, prefix: str) -> str:
        # Graph ids are long opaque base64 strings, often ending in '='.
        return f"{prefix}{next(self._ids):04d}{secrets.token_hex(8)}="

    def _tick(self) -> int:
        self.sequence += 1
        return self.sequence

    def mailbox(self, key: str) -> FixtureMailbox | None:
        """A mailbox by id or user principal name (both address a user: user-get page)."""
        key = key.lower()
        for mailbox in self.mailboxes:
            if key in (mailbox.id.lower(), mailbox.user_principal_name.lower()):
                return mailbox
        return None

    def add_user(self, local_part: str, display_name: str) -> FixtureMailbox:
        mailbox = FixtureMailbox(str(uuid.uuid4()), f"{local_part}@{self.domain}", display_name)
        root = FixtureFolder(self._new_id("AAMkRoot"), "Top of Information Store", "",
                             "msgfolderroot")
        mailbox.folders[root.id] = root
        mailbox.root_id = root.id
        self.mailboxes.append(mailbox)
        return mailbox

    def add_folder(self, mailbox: FixtureMailbox, name: str, parent: FixtureFolder | None = None,
                   well_known_name: str | None = None, hidden: bool = False,
                   search: bool = False) -> FixtureFolder:
        folder = FixtureFolder(self._new_id("AAMkFold"), name,
                               parent.id if parent else mailbox.root_id, well_known_name, hidden,
                               search)
        mailbox.folders[folder.id] = folder
        return folder

    def add_message(self, mailbox: FixtureMailbox, folder: FixtureFolder, mime: bytes, *,
                    subject: str, received: datetime, **properties: Any) -> FixtureMessage:
        message = FixtureMessage(self._new_id("AAMkMsg"), folder.id, mime, subject, received,
                                 version=self._tick(), **properties)
        mailbox.messages[message.id] = message
        return message

    def update_message(self, mailbox: FixtureMailbox, message_id: str, **properties: Any) -> None:
        message = mailbox.messages[message_id]
        for name, value in properties.items():
            setattr(message, name, value)
        message.version = self._tick()

    def move_message(self, mailbox: FixtureMailbox, message_id: str,
                     folder: FixtureFolder) -> None:
        message = mailbox.messages[message_id]
        mailbox.removed.append((self._tick(), message.folder_id, message_id))
        message.folder_id = folder.id
        message.version = self._tick()

    def delete_message(self, mailbox: FixtureMailbox, message_id: str) -> None:
        message = mailbox.messages.pop(message_id)
        mailbox.removed.append((self._tick(), message.folder_id, message_id))


def mime_message(sender: str, to: str, subject: str, body: str, when: datetime,
                 attachment: tuple[str, bytes] | None = None) -> bytes:
    """A MIME message as Exchange would hand it out: CRLF line ends, UTF-8 headers."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(when)
    message["Message-ID"] = make_msgid(domain="ville-exemple.fr")
    message.set_content(body)
    if attachment:
        name, data = attachment
        message.add_attachment(data, maintype="application", subtype="octet-stream",
                               filename=name)
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def french_tenant(users: int = 7, inbox_messages: int = 23) -> FixtureTenant:
    """A small French town hall: accented names, nested folders, enough items to page."""
    tenant = FixtureTenant(
        tenant_id=str(uuid.uuid4()),
        domain="ville-exemple.fr",
        client_id=str(uuid.uuid4()),
        client_secret="s3cr3t~" + secrets.token_urlsafe(12),
    )
    amelie = tenant.add_user("amelie.lefevre", "Amélie Lefèvre")
    names = [("francois.dupre", "François Dupré"), ("helene.noel", "Hélène Noël"),
             ("jerome.garcon", "Jérôme Garçon"), ("zoe.benoit", "Zoé Benoît"),
             ("accueil", "Accueil de la mairie"), ("urbanisme", "Service urbanisme"),
             ("gaelle.lemaitre", "Gaëlle Lemaître"), ("noemie.perez", "Noémie Pérez")]
    for local_part, display_name in names[: max(0, users - 1)]:
        tenant.add_user(local_part, display_name)

    inbox = tenant.add_folder(amelie, "Boîte de réception", well_known_name="inbox")
    projets = tenant.add_folder(amelie, "Projets", inbox)
    ete = tenant.add_folder(amelie, "Été 2024", projets)
    tenant.add_folder(amelie, "Éléments envoyés", well_known_name="sentitems")
    drafts = tenant.add_folder(amelie, "Brouillons", well_known_name="drafts")
    tenant.add_folder(amelie, "Éléments supprimés", well_known_name="deleteditems")
    tenant.add_folder(amelie, "Courrier indésirable", well_known_name="junkemail")
    tenant.add_folder(amelie, "Archive", well_known_name="archive")
    tenant.add_folder(amelie, "Problèmes de synchronisation", well_known_name="syncissues",
                      hidden=True)

    start = datetime(2024, 3, 1, 8, 30, tzinfo=UTC)
    me = f"Amélie Lefèvre <{amelie.user_principal_name}>"
    for n in range(inbox_messages):
        when = start + timedelta(days=n, minutes=7 * n)
        subject = f"Conseil municipal n°{n + 1} : ordre du jour"
        tenant.add_message(
            amelie, inbox,
            mime_message("François Dupré <francois.dupre@ville-exemple.fr>", me, subject,
                         f"Bonjour Amélie,\n\nVoici l'ordre du jour n°{n + 1}. À bientôt.\n", when),
            subject=subject, received=when, is_read=n % 3 != 0,
            flag_status="flagged" if n % 5 == 0 else "notFlagged",
            categories=["Catégorie bleue"] if n % 4 == 0 else [])
    when = datetime(2024, 7, 14, 10, 0, tzinfo=UTC)
    tenant.add_message(
        amelie, ete,
        mime_message("Hélène Noël <helene.noel@ville-exemple.fr>", me, "Fête du 14 juillet",
                     "Le plan du défilé est en pièce jointe.\n", when,
                     ("plan-défilé.bin", bytes(range(256)) * 1200)),
        subject="Fête du 14 juillet", received=when, is_read=True, flag_status="complete",
        categories=["Été", "Événements"])
    when = datetime(2024, 7, 20, 16, 45, tzinfo=UTC)
    tenant.add_message(amelie, projets,
                       mime_message(me, "accueil@ville-exemple.fr", "Piscine : horaires d'été",
                                    "Horaires à afficher.\n", when),
                       subject="Piscine : horaires d'été", received=when, is_read=True)
    when = datetime(2024, 8, 2, 9, 15, tzinfo=UTC)
    tenant.add_message(amelie, drafts,
                       mime_message(me, "zoe.benoit@ville-exemple.fr", "Brouillon : réponse",
                                    "À compléter…\n", when),
                       subject="Brouillon : réponse", received=when, is_read=True, is_draft=True)
    return tenant


# --- the server ----------------------------------------------------------------------------


@dataclass
class Throttle:
    """A storm: each Graph request is refused with 429 with probability ``ratio``."""

    ratio: float
    retry_after: tuple[int, ...] = (0, 1)
    rng: random.Random = field(default_factory=lambda: random.Random(7))


@functools.cache
def _signing_key() -> rsa.RSAPrivateKey:
    """One token-signing key for every test server of the session (making one takes a
    while, and nothing tells two test tenants apart by their key)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class GraphServerState:
    """What the handlers share: the tenant, the switches and the counters."""

    tenant: FixtureTenant
    base_url: str = ""
    per_mailbox_limit: int | None = 4
    latency: float = 0.0
    throttle: Throttle | None = None
    failures: list[int] = field(default_factory=list)
    """Statuses (503, 504...) the next Graph requests answer, without ``Retry-After``."""
    no_consent: bool = False
    secret_expired: bool = False
    rest_ids: bool = False
    """Answer requests without ``Prefer: IdType="ImmutableId"`` with default ids, which change
    when a message moves (outlook-immutable-id page); off, every id is immutable."""
    stats: Counter[str] = field(default_factory=Counter)
    max_in_flight: Counter[str] = field(default_factory=Counter)
    """Per mailbox: the most Graph requests it had in flight at once, refused ones included."""
    in_flight: Counter[str] = field(default_factory=Counter)
    max_app_in_flight: int = 0
    """The most Outlook requests in flight at once, across mailboxes."""
    first_request_at: float | None = None
    last_answer_at: float | None = None
    """``time.monotonic()`` when the first Graph request came and the last one was answered:
    a benchmark's Graph phase, apart from its client's start and sign-in."""
    tokens: dict[str, float] = field(default_factory=dict)
    """Access token -> expiry (epoch seconds)."""
    cursors: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Skip and delta tokens -> the paging state they stand for."""
    exchange_jwt_lifetime: int = TOKEN_LIFETIME
    """Seconds an Exchange token's own ``exp`` allows. Shorter than the ``expires_in`` the
    token endpoint answers, it stands for a server that stops accepting a token the client
    still holds as valid (clock skew, revoked sessions)."""
    signing_key: rsa.RSAPrivateKey = field(default_factory=_signing_key)
    signing_kid: str = field(default_factory=lambda: secrets.token_hex(8))
    lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def signing_public_pem(self) -> bytes:
        """The public key a resource server checks tokens with, as the tenant's published
        keys give it (access-tokens page, "Validate tokens")."""
        return self.signing_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    @property
    def issuer(self) -> str:
        """``iss`` of v1.0 access tokens (access-tokens page, "Payload claims")."""
        return f"https://sts.windows.net/{self.tenant.tenant_id}/"

    def expire_tokens(self) -> None:
        with self.lock:
            for token in self.tokens:
                self.tokens[token] = 0.0

    def forget_cursors(self) -> None:
        with self.lock:
            self.cursors.clear()


@dataclass(frozen=True)
class Reply:
    """An answer built under the state lock and written after it is released."""

    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(payload: dict[str, Any], headers: dict[str, str] | None = None) -> Reply:
    return Reply(200, json.dumps(payload, ensure_ascii=False).encode(), JSON_TYPE, headers or {})


class GraphError(Exception):
    """An error answer: status, Graph error code and message, extra headers."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def _aadsts(status: int, error: str, number: int, text: str) -> tuple[int, dict[str, Any]]:
    """An identity platform error body (reference-error-codes and v2-oauth2-client-creds-grant
    pages): ``error``, ``error_description`` starting with the AADSTS code, ``error_codes``."""
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return status, {
        "error": error,
        "error_description": f"AADSTS{number}: {text} Trace ID: {trace} "
                             f"Correlation ID: {correlation} Timestamp: {stamp}",
        "error_codes": [number],
        "timestamp": stamp,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": f"https://login.microsoftonline.com/error?code={number}",
    }


MailboxRoute = Callable[["GraphHandler", FixtureMailbox, list[str], dict[str, str]],
                        "Reply | None"]
TenantRoute = Callable[["GraphHandler", list[str], dict[str, str]], "Reply | None"]
MAILBOX_ROUTES: list[MailboxRoute] = []
"""Routes under ``/users/{id}/`` that other modules add (calendars, contacts, drive): each
answers a Reply, or None when the path is not its own. Called with the state locked."""
TENANT_ROUTES: list[TenantRoute] = []
"""Routes outside ``/users`` (``/sites``, ``/drives``, download URLs) that other modules add.
Called without the state's lock: take ``handler.state.lock`` while reading the tenant."""


class GraphHandler(BaseHTTPRequestHandler):
    """Routes one request to the identity platform or to Graph v1.0."""

    protocol_version = "HTTP/1.1"
    server: GraphHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the counters in ``stats`` say what happened."""

    @property
    def state(self) -> GraphServerState:
        return self.server.state

    # --- plumbing

    def _send(self, status: int, body: bytes, content_type: str,
              headers: dict[str, str] | None = None,
              before_last_write: Callable[[], None] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        request_id = self.headers.get("client-request-id") or str(uuid.uuid4())
        self.send_header("request-id", request_id)
        self.send_header("client-request-id", request_id)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if before_last_write is not None and not body:
            before_last_write()  # the headers are the answer's last write
        self.end_headers()
        for offset in range(0, len(body), CHUNK):
            if before_last_write is not None and offset + CHUNK >= len(body):
                before_last_write()
            self.wfile.write(body[offset: offset + CHUNK])

    def _json(self, status: int, payload: dict[str, Any],
              headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload, ensure_ascii=False).encode(), JSON_TYPE, headers)

    def _graph_error(self, error: GraphError) -> None:
        # Error body of every Graph error (errors page): code, message, innerError with ids.
        self._json(error.status, {"error": {
            "code": error.code,
            "message": error.message,
            "innerError": {"date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                           "request-id": str(uuid.uuid4()),
                           "client-request-id": self.headers.get("client-request-id", "")},
        }}, error.headers)

    # --- identity platform

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        match = re.fullmatch(r"/([^/]+)/oauth2/v2\.0/token", urlsplit(self.path).path)
        if not match:
            self._graph_error(GraphError(404, "NotFound", "No such endpoint."))
            return
        with self.state.lock:
            self.state.stats["token_requests"] += 1
        status, payload = self._token(unquote(match.group(1)), form)
        self._json(status, payload, {"Cache-Control": "no-store"})

    def _known_tenant(self, name: str) -> bool:
        tenant = self.state.tenant
        return name.lower() in (tenant.tenant_id, tenant.domain)

    def _token(self, tenant_name: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Client credentials grant (v2-oauth2-client-creds-grant-flow page)."""
        tenant = self.state.tenant
        if not self._known_tenant(tenant_name):
            return _aadsts(400, "invalid_request", 90002,
                           f"Tenant '{tenant_name}' not found. Check to make sure you have the "
                           "correct tenant ID and are signing into the correct cloud.")
        if form.get("grant_type") != "client_credentials":
            return _aadsts(400, "unsupported_grant_type", 70003,
                           "The app requested an unsupported grant type.")
        client_id = form.get("client_id", "")
        if client_id != tenant.client_id:
            return _aadsts(400, "unauthorized_client", 700016,
                           f"Application with identifier '{client_id}' was not found in the "
                           f"directory '{tenant.tenant_id}'.")
        refusal = self._client_authentication(form)
        if refusal:
            return refusal
        if form.get("scope") == EXCHANGE_SCOPE:
            return 200, self._exchange_token()
        if form.get("scope") != GRAPH_SCOPE:
            return _aadsts(400, "invalid_scope", 1002012,
                           f"The provided value for scope {form.get('scope')} is not valid. "
                           "Client credential flows must have a scope value with /.default "
                           "suffixed to the resource identifier (application ID URI).")
        token = secrets.token_urlsafe(32)
        with self.state.lock:
            self.state.tokens[token] = time.time() + TOKEN_LIFETIME
            self.state.stats["tokens_issued"] += 1
        return 200, {"token_type": "Bearer", "expires_in": TOKEN_LIFETIME,
                     "ext_expires_in": TOKEN_LIFETIME, "access_token": token}

    def _exchange_token(self) -> dict[str, Any]:
        """An app-only access token for Exchange Online: a JWT signed with the tenant's key,
        whose ``roles`` hold the application permissions an administrator consented to, and
        no claim naming a mailbox (access-tokens page, "Payload claims"). Exchange checks it
        itself and then the app's permission on the mailbox named at login."""
        state = self.state
        tenant = state.tenant
        now = int(time.time())
        # Entra ID dates its tokens five minutes back, for clocks behind its own: a
        # checker whose clock lags this one's by a second must not find them from the future.
        issued = now - 300
        service_principal = str(uuid.uuid5(uuid.NAMESPACE_URL, tenant.client_id))
        claims: dict[str, Any] = {
            "aud": EXCHANGE_AUDIENCE, "iss": state.issuer, "iat": issued, "nbf": issued,
            "exp": now + state.exchange_jwt_lifetime, "appid": tenant.client_id,
            "appidacr": "1" if tenant.certificate_pem is None else "2", "idp": state.issuer,
            "oid": service_principal, "sub": service_principal, "tid": tenant.tenant_id,
            "ver": "1.0"}
        if not state.no_consent:
            claims["roles"] = [EXCHANGE_ROLE]
        token = jwt.encode(claims, state.signing_key, algorithm="RS256",
                           headers={"kid": state.signing_kid, "typ": "JWT"})
        with state.lock:
            state.stats["exchange_tokens_issued"] += 1
        return {"token_type": "Bearer", "expires_in": TOKEN_LIFETIME,
                "ext_expires_in": TOKEN_LIFETIME, "access_token": token}

    def _client_authentication(self, form: dict[str, str]) -> tuple[int, dict[str, Any]] | None:
        tenant = self.state.tenant
        if "client_assertion" in form:
            return self._check_assertion(form["client_assertion"])
        if "client_secret" not in form:
            return _aadsts(401, "invalid_client", 7000218,
                           "The request body must contain the following parameter: "
                           "'client_assertion' or 'client_secret'.")
        if not secrets.compare_digest(form["client_secret"], tenant.client_secret):
            return _aadsts(401, "invalid_client", 7000215,
                           "Invalid client secret provided. Ensure the secret being sent in the "
                           "request is the client secret value, not the client secret ID, for a "
                           f"secret added to app '{tenant.client_id}'.")
        if self.state.secret_expired:
            return _aadsts(401, "invalid_client", 7000222,
                           f"The provided client secret keys for app '{tenant.client_id}' are "
                           "expired. Visit the Azure portal to create new keys for your app.")
        return None

    def _check_assertion(self, assertion: str) -> tuple[int, dict[str, Any]] | None:
        """A certificate login: a JWT signed with the app's key, its thumbprint in ``x5t``
        (certificate-credentials page)."""
        tenant = self.state.tenant
        refused = _aadsts(401, "invalid_client", 700027,
                          "Client assertion contains an invalid signature.")
        if tenant.certificate_pem is None:
            return refused
        certificate = x509.load_pem_x509_certificate(tenant.certificate_pem)
        thumbprint = hashlib.sha1(certificate.public_bytes(serialization.Encoding.DER)).digest()
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(assertion, certificate.public_key(), algorithms=["RS256", "PS256"],
                                audience=f"{self.state.base_url}/{tenant.tenant_id}/oauth2/v2.0/token",
                                options={"require": ["exp", "iss", "sub", "aud"]})
        except jwt.InvalidTokenError:
            return refused
        x5t = header.get("x5t", "")
        if base64.urlsafe_b64decode(x5t + "=" * (-len(x5t) % 4)) != thumbprint:
            return refused
        if claims["iss"] != tenant.client_id or claims["sub"] != tenant.client_id:
            return refused
        return None

    # --- Graph

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        discovery = re.fullmatch(r"/([^/]+)/v2\.0/\.well-known/openid-configuration", path)
        if discovery:
            self._openid_configuration(unquote(discovery.group(1)))
            return
        beta = re.fullmatch(r"/beta/users/([^/]+)/settings/exchange", path)
        if beta:
            self._exchange_settings(unquote(beta.group(1)))
            return
        if not path.startswith("/v1.0/"):
            self._graph_error(GraphError(404, "NotFound", "No such endpoint."))
            return
        segments = [unquote(s) for s in path.split("/")[2:]]
        mailbox_key = (segments[1].lower() if len(segments) > 2 and segments[0] == "users"
                       and segments[2] in OUTLOOK_SEGMENTS else None)
        try:
            with self._admitted(mailbox_key) as ended:
                reply = self._route(segments, query)
                self._send(reply.status, reply.body, reply.content_type, reply.headers, ended)
        except GraphError as error:
            self._graph_error(error)

    def _exchange_settings(self, user: str) -> None:
        """The user's mailboxes (exchangesettings-get page, beta only): the primary one, and
        the In-Place Archive when there is one, which v1.0 cannot read
        (outlook-mailbox-type-support: "does not support accessing in-place archive
        mailboxes")."""
        try:
            self._check_token()
            mailbox = self.state.tenant.mailbox(user)
            if mailbox is None:
                raise GraphError(404, "ErrorInvalidUser", f"The requested user '{user}' is "
                                 "invalid.")
        except GraphError as error:
            self._graph_error(error)
            return
        settings = {"primaryMailboxId": f"MBX:{mailbox.id}@{self.state.tenant.tenant_id}"}
        if mailbox.archive_id:
            settings["inPlaceArchiveMailboxId"] = mailbox.archive_id
        self._json(200, settings)

    def _openid_configuration(self, tenant_name: str) -> None:
        """OpenID discovery document (v2-protocols-oidc page); msal reads it to find the token
        endpoint when instance discovery is off."""
        if not self._known_tenant(tenant_name):
            # login.microsoftonline.com answers 400 with AADSTS90002 for a tenant it does not know.
            status, payload = _aadsts(400, "invalid_tenant", 90002,
                                      f"Tenant '{tenant_name}' not found.")
            self._json(status, payload)
            return
        base = f"{self.state.base_url}/{self.state.tenant.tenant_id}"
        self._json(200, {
            "issuer": f"{base}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                      "client_secret_basic"],
            "tenant_region_scope": "EU",
        })

    @contextlib.contextmanager
    def _admitted(self, mailbox_key: str | None) -> Iterator[Callable[[], None]]:
        """Authentication, then throttling, then the per-mailbox concurrency limit. Yields what
        ends the request for that limit, called just before the answer's last write: a client
        cannot have read its answer whole before then, and once the last bytes are out it may
        send its next request before this thread runs again (with the count dropped after the
        write, a client that waits for each answer was seen with a fifth request in flight)."""
        state = self.state
        with state.lock:
            state.stats["graph_requests"] += 1
            if state.first_request_at is None:
                state.first_request_at = time.monotonic()
        self._check_token()
        with state.lock:
            if state.failures:
                status = state.failures.pop(0)
                state.stats["failed"] += 1
                # A gateway or service that is briefly unavailable (errors page: 503, 504).
                raise GraphError(status, "serviceNotAvailable" if status == 503 else
                                 "GatewayTimeout", "The service is temporarily unavailable.")
            if state.throttle and state.throttle.rng.random() < state.throttle.ratio:
                state.stats["throttled"] += 1
                wait = state.throttle.rng.choice(state.throttle.retry_after)
                # 429 with Retry-After in seconds (throttling page, "What happens when
                # throttling occurs?").
                raise GraphError(429, "TooManyRequests",
                                 "Too many requests. Please retry after the time given in "
                                 "Retry-After.", {"Retry-After": str(wait)})
            if mailbox_key:
                state.in_flight[mailbox_key] += 1
                in_flight = state.in_flight[mailbox_key]
                state.max_in_flight[mailbox_key] = max(state.max_in_flight[mailbox_key],
                                                       in_flight)
                state.in_flight[ALL_MAILBOXES] += 1
                state.max_app_in_flight = max(state.max_app_in_flight,
                                              state.in_flight[ALL_MAILBOXES])
        counted = [bool(mailbox_key)]

        def ended() -> None:
            with state.lock:
                if counted[0]:
                    counted[0] = False
                    state.in_flight[mailbox_key or ""] -= 1
                    state.in_flight[ALL_MAILBOXES] -= 1

        try:
            if mailbox_key and state.per_mailbox_limit and in_flight > state.per_mailbox_limit:
                with state.lock:
                    state.stats["concurrency_refused"] += 1
                # Outlook's limit of 4 concurrent requests (throttling-limits page, "Outlook
                # service limits"); the code and message are those reported from the field.
                raise GraphError(429, "ApplicationThrottled",
                                 "Application is over its MailboxConcurrency limit.",
                                 {"Retry-After": "1"})
            if state.latency:
                time.sleep(state.latency)
            yield ended
            with state.lock:
                state.stats["served"] += 1
                state.last_answer_at = time.monotonic()
        finally:
            ended()

    def _check_token(self) -> None:
        """Bearer token (auth-v2-service page, "Use a token"); 401 with InvalidAuthenticationToken
        when it is missing or no longer valid (errors page)."""
        header = self.headers.get("Authorization", "")
        challenge = {"WWW-Authenticate": 'Bearer realm="", error="invalid_token"'}
        if not header.startswith("Bearer "):
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.", challenge)
        with self.state.lock:
            expiry = self.state.tokens.get(header.removeprefix("Bearer "))
        if expiry is None:
            raise GraphError(401, "InvalidAuthenticationToken",
                             "IDX14100: JWT is not well formed.", challenge)
        if expiry < time.time():
            raise GraphError(401, "InvalidAuthenticationToken",
                             "Lifetime validation failed, the token is expired.", challenge)

    def _route(self, segments: list[str], query: dict[str, str]) -> Reply:
        tenant = self.state.tenant
        if segments == ["users"]:
            return self._users(query)
        if segments and segments[0] != "users":
            for route in TENANT_ROUTES:
                reply = route(self, segments, query)
                if reply is not None:
                    return reply
        if len(segments) < 2 or segments[0] != "users":
            raise GraphError(400, "BadRequest", "Resource not found for the segment.")
        if self.state.no_consent:
            # Without admin consent the token carries no application role: the directory
            # answers Authorization_RequestDenied, Exchange ErrorAccessDenied (permissions page,
            # errors page).
            raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and "
                             "try again.")
        mailbox = tenant.mailbox(segments[1])
        if mailbox is None:
            raise GraphError(404, "ErrorInvalidUser",
                             f"The requested user '{segments[1]}' is invalid.")
        rest = segments[2:]
        with self.state.lock:
            return self._mailbox_route(mailbox, rest, query)

    def _users(self, query: dict[str, str]) -> Reply:
        """List users (user-list page): ``$select``, ``$top`` (at most 999), ``@odata.nextLink``."""
        if self.state.no_consent:
            raise GraphError(403, "Authorization_RequestDenied",
                             "Insufficient privileges to complete the operation.")
        with self.state.lock:
            users = [mailbox.resource() for mailbox in self.state.tenant.mailboxes]
            return self._page_list(users, query, USERS_PAGE_SIZE, 999, "users")

    def _page_list(self, items: list[dict[str, Any]], query: dict[str, str], default: int,
                   maximum: int, context: str) -> Reply:
        """One page of a list; the rest waits behind a ``$skiptoken`` (paging page)."""
        if "$skiptoken" in query:
            cursor = self.state.cursors.get(query["$skiptoken"])
            if cursor is None:
                raise GraphError(400, "BadRequest", "Invalid skip token.")
            items, size, select = cursor["items"], cursor["size"], cursor["select"]
        else:
            size = min(int(query.get("$top", default)), maximum)
            select = query.get("$select")
        page, rest = items[:size], items[size:]
        payload: dict[str, Any] = {
            "@odata.context": f"{self.state.base_url}/v1.0/$metadata#{context}",
            "value": [_selected(item, select) for item in page],
        }
        if rest:
            token = secrets.token_urlsafe(12)
            self.state.cursors[token] = {"items": rest, "size": size, "select": select}
            payload["@odata.nextLink"] = (f"{self.state.base_url}{urlsplit(self.path).path}"
                                          f"?$skiptoken={token}")
        return json_reply(payload)

    def _folder(self, mailbox: FixtureMailbox, key: str) -> FixtureFolder:
        """A folder by id or well-known name (mailfolder resource page, "Well-known folder
        names")."""
        folder = mailbox.folders.get(key)
        if folder is None:
            folder = next((f for f in mailbox.folders.values()
                           if f.well_known_name and f.well_known_name.lower() == key.lower()),
                          None)
        if folder is None:
            raise GraphError(404, "ErrorItemNotFound",
                             "The specified object was not found in the store.")
        return folder

    def _folder_resource(self, mailbox: FixtureMailbox, folder: FixtureFolder) -> dict[str, Any]:
        messages = [m for m in mailbox.messages.values() if m.folder_id == folder.id]
        return {
            "id": folder.id,
            "displayName": folder.display_name,
            "parentFolderId": folder.parent_id,
            "childFolderCount": sum(1 for f in mailbox.folders.values()
                                    if f.parent_id == folder.id),
            "unreadItemCount": sum(1 for m in messages if not m.is_read),
            "totalItemCount": len(messages),
            "sizeInBytes": sum(len(m.mime) for m in messages),
            "isHidden": folder.hidden,
            **({"@odata.type": "#microsoft.graph.mailSearchFolder"} if folder.search else {}),
        }

    def _mailbox_route(self, mailbox: FixtureMailbox, rest: list[str],
                       query: dict[str, str]) -> Reply:
        if rest == ["mailFolders"]:
            return self._child_folders(mailbox, mailbox.folders[mailbox.root_id], query)
        if len(rest) == 2 and rest[0] == "mailFolders":
            return json_reply(self._folder_resource(mailbox, self._folder(mailbox, rest[1])))
        if len(rest) == 3 and rest[0] == "mailFolders" and rest[2] == "childFolders":
            return self._child_folders(mailbox, self._folder(mailbox, rest[1]), query)
        if len(rest) == 3 and rest[0] == "mailFolders" and rest[2] == "messages":
            folder = self._folder(mailbox, rest[1])
            items = [m.resource() for m in mailbox.messages.values() if m.folder_id == folder.id]
            return self._page_list(items, query, LIST_PAGE_SIZE, 1000, "messages")
        if len(rest) == 4 and rest[0] == "mailFolders" and rest[2:] == ["messages", "delta"]:
            return self._delta(mailbox, self._folder(mailbox, rest[1]), query)
        if len(rest) == 2 and rest[0] == "messages":
            return json_reply(self._message_view(self._message(mailbox, rest[1]),
                                                 query.get("$select"), query.get("$expand")))
        if len(rest) == 3 and rest[0] == "messages" and rest[2] == "$value":
            message = self._message(mailbox, rest[1])
            if message.mime_refusal:
                # Items Exchange cannot render as MIME: the documentation names no code, the
                # connector must treat any refusal as an item it cannot read.
                status, code = message.mime_refusal
                raise GraphError(status, code, "The MIME content of this item is not available.")
            # Get MIME content of a message (outlook-get-mime-message page): the raw MIME.
            return Reply(200, message.mime, "text/plain")
        for route in MAILBOX_ROUTES:
            reply = route(self, mailbox, rest, query)
            if reply is not None:
                return reply
        raise GraphError(400, "BadRequest", "Resource not found for the segment.")

    def _immutable(self) -> bool:
        return not self.state.rest_ids or 'IdType="ImmutableId"' in self.headers.get("Prefer", "")

    def _id_of(self, message_id: str, folder_id: str) -> str:
        """The id a message in a folder has in this request: immutable, or a default id that
        depends on the folder (outlook-immutable-id page: default ids change on a move)."""
        return message_id if self._immutable() else _rest_id(message_id, folder_id)

    def _message_view(self, message: FixtureMessage, select: str | None,
                      expand: str | None) -> dict[str, Any]:
        """A message with ``$select`` applied and, when ``$expand`` asks for it, the
        ``PidTagMessageSize`` extended property (singlevaluelegacyextendedproperty-get page:
        ``$expand=singleValueExtendedProperties($filter=id eq 'Integer 0x0E08')``)."""
        view = _selected({**message.resource(), "id": self._id_of(message.id, message.folder_id)},
                         select)
        if expand and "singlevalueextendedproperties" in expand.lower() \
                and "0x0e08" in expand.lower():
            # The size of the item in the Exchange store, not of its MIME: a little more.
            size = len(message.mime) + 512
            view["singleValueExtendedProperties"] = [{"id": "Integer 0x0E08", "value": str(size)}]
        return view

    def _message(self, mailbox: FixtureMailbox, message_id: str) -> FixtureMessage:
        message = mailbox.messages.get(message_id)
        if message is None and self.state.rest_ids:
            message = next((m for m in mailbox.messages.values()
                            if _rest_id(m.id, m.folder_id) == message_id), None)
        if message is None:
            raise GraphError(404, "ErrorItemNotFound",
                             "The specified object was not found in the store.")
        return message

    def _child_folders(self, mailbox: FixtureMailbox, parent: FixtureFolder,
                       query: dict[str, str]) -> Reply:
        """mailFolders and childFolders lists (user-list-mailfolders, mailfolder-list-childfolders
        pages): hidden folders only with ``includeHiddenFolders=true``."""
        hidden = query.get("includeHiddenFolders", "").lower() == "true"
        items = [self._folder_resource(mailbox, folder) for folder in mailbox.folders.values()
                 if folder.parent_id == parent.id and (hidden or not folder.hidden)]
        return self._page_list(items, query, LIST_PAGE_SIZE, 1000, "mailFolders")

    def _delta(self, mailbox: FixtureMailbox, folder: FixtureFolder,
               query: dict[str, str]) -> Reply:
        """messages delta (message-delta and delta-query-messages pages): pages linked by
        ``@odata.nextLink``, the last one carries ``@odata.deltaLink``; a round started from a
        deltaLink lists only messages changed since, and ``@removed`` for those gone; page
        size from ``Prefer: odata.maxpagesize``."""
        state = self.state
        preference = re.search(r"odata\.maxpagesize=(\d+)", self.headers.get("Prefer", ""))
        if "$skiptoken" in query:
            cursor = state.cursors.get(query["$skiptoken"])
        else:
            since = 0
            select, expand = query.get("$select"), query.get("$expand")
            if "$deltatoken" in query:
                delta = state.cursors.get(query["$deltatoken"])
                if delta is None:
                    # An unknown or expired sync state: the client must start over
                    # (delta-query-overview page, "Synchronization reset"); 410 Gone.
                    raise GraphError(410, "SyncStateNotFound",
                                     "The sync state could not be found; resync required.")
                since, select, expand = delta["since"], delta["select"], delta["expand"]
            changed = [m.id for m in mailbox.messages.values()
                       if m.folder_id == folder.id and m.version > since]
            removed = [mid for seq, fid, mid in mailbox.removed
                       if fid == folder.id and seq > since and mid not in changed
                       and (mid not in mailbox.messages
                            or mailbox.messages[mid].folder_id != folder.id)]
            cursor = {"pending": [("changed", mid) for mid in changed]
                      + [("removed", mid) for mid in dict.fromkeys(removed)],
                      "start": state.tenant.sequence, "select": select, "expand": expand}
        if cursor is None:
            raise GraphError(400, "BadRequest", "Invalid skip token.")
        size = int(preference.group(1)) if preference else DELTA_PAGE_SIZE
        page, rest = cursor["pending"][:size], cursor["pending"][size:]
        values: list[dict[str, Any]] = []
        for kind, message_id in page:
            message = mailbox.messages.get(message_id)
            if kind == "removed" or message is None or message.folder_id != folder.id:
                values.append({"@odata.type": "#microsoft.graph.message",
                               "id": self._id_of(message_id, folder.id),
                               "@removed": {"reason": "deleted"}})
            else:
                values.append(self._message_view(message, cursor["select"], cursor["expand"]))
        base = f"{state.base_url}{urlsplit(self.path).path}"
        payload: dict[str, Any] = {"@odata.context": f"{state.base_url}/v1.0/$metadata#"
                                   "Collection(message)", "value": values}
        token = secrets.token_urlsafe(12)
        if rest:
            state.cursors[token] = {**cursor, "pending": rest}
            payload["@odata.nextLink"] = f"{base}?$skiptoken={token}"
        else:
            state.cursors[token] = {"since": cursor["start"], "select": cursor["select"],
                                    "expand": cursor["expand"]}
            payload["@odata.deltaLink"] = f"{base}?$deltatoken={token}"
        headers = {"Preference-Applied": f"odata.maxpagesize={size}"} if preference else None
        return json_reply(payload, headers)


def _rest_id(message_id: str, folder_id: str) -> str:
    return f"{message_id.rstrip('=')}F{hashlib.sha1(folder_id.encode()).hexdigest()[:8]}="


def _selected(item: dict[str, Any], select: str | None) -> dict[str, Any]:
    """``$select``: only the properties asked for, plus ``id`` (query-parameters page)."""
    if not select:
        return item
    wanted = {name.strip() for name in select.split(",")} | {"id"}
    return {k: v for k, v in item.items() if k in wanted or k.startswith("@odata")}


class GraphHTTPServer(TlsHTTPServer):
    """The Graph test server's HTTPS server."""

    def __init__(self, state: GraphServerState, certificates: TestCertificates) -> None:
        super().__init__(GraphHandler, certificates)
        self.state = state

    def tls_refused(self) -> None:
        self.state.stats["tls_refused"] += 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer is not the server's error."""


@dataclass
class RunningGraphServer:
    """A started server: where it listens, and its state to switch and inspect."""

    url: str
    state: GraphServerState

    @property
    def tenant(self) -> FixtureTenant:
        return self.state.tenant

    @property
    def authority(self) -> str:
        """The authority host to give msal (the tenant goes after it)."""
        return self.url

    @property
    def graph_url(self) -> str:
        return f"{self.url}/v1.0"

    @property
    def stats(self) -> Counter[str]:
        return self.state.stats

    def source_section(self, ca_file: Path) -> str:
        """The ``[source]`` lines of a batch reading this server, trusting ``ca_file``, its
        application secret in the ``GRAPH_SECRET`` environment variable."""
        return (f'[source]\ntype = "graph"\ntenant = "{self.tenant.tenant_id}"\n'
                f'client_id = "{self.tenant.client_id}"\nclient_secret = "env:GRAPH_SECRET"\n'
                f'authority = "{self.authority}"\ngraph_url = "{self.url}"\n'
                f'ca_file = "{ca_file}"\n')


@contextlib.contextmanager
def running_graph_server(tenant: FixtureTenant,
                         certificates: TestCertificates) -> Iterator[RunningGraphServer]:
    """Serve ``tenant`` on 127.0.0.1 and a free port until the block ends."""
    state = GraphServerState(tenant)
    server = GraphHTTPServer(state, certificates)
    state.base_url = f"https://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="graph-test-server", daemon=True)
    thread.start()
    try:
        yield RunningGraphServer(state.base_url, state)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)

