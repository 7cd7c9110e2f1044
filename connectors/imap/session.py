"""Open a logged-in IMAP connection, and name folders with the server's separator.

Shared by the IMAP source and sink. Folder names are plain ``str``: imapclient encodes
and decodes modified UTF-7 on the wire. TLS is always verified; a private CA is trusted
by naming its file, never by turning verification off.
"""

from __future__ import annotations

import imaplib
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import imapclient
from imapclient import exceptions as imap_errors
from imapclient import imap4, tls
from imapclient.imap_utf7 import decode as decode_utf7
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from connectors.base import LINK_PAUSES, ConnectError, Path

Security = Literal["tls", "starttls", "none"]
T = TypeVar("T")

CONNECTION_DROPPED: tuple[type[BaseException], ...] = (
    imap_errors.IMAPClientAbortError,
    imaplib.IMAP4.abort,
    ConnectionError,
    TimeoutError,
    ssl.SSLEOFError,
)
"""Errors after which the connection is unusable but a new one may work."""
LOGOUT_TIMEOUT = 2.0
DROPS_IN_A_ROW = len(LINK_PAUSES) + 1
"""Connections lost one after another before an operation gives up."""


@dataclass(frozen=True)
class ImapEndpoint:
    """Where an IMAP server listens and how to reach it."""

    host: str
    port: int
    security: Security = "tls"
    ca_file: str | None = None
    """A CA certificate (PEM) trusted in addition to the system's, e.g. an internal CA."""
    timeout: float = 60.0
    """Longest wait for any answer once logged in (a big APPEND's reply included)."""
    greeting_timeout: float = 10.0
    """Longest wait for the TCP connection, the TLS handshake and the server's greeting: an
    IMAP server greets at once, so silence means something else listens there, or nothing
    answers at all."""
    multiappend: bool = True
    """Send messages in batches where the server has MULTIAPPEND (RFC 3502)."""

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


class TokenProvider(Protocol):
    """Answers an OAuth bearer token; ``refresh`` discards a cached one first."""

    def __call__(self, *, refresh: bool = False) -> str: ...


@dataclass(frozen=True)
class ImapCredentials:
    """Who logs in.

    With ``authzid`` the login is SASL PLAIN proxy authorisation: authenticate as ``login``
    (an administrator, e.g. Cyrus ``cyrus``), act as ``authzid``. With ``token`` the login
    is SASL XOAUTH2 for the mailbox ``login`` with the token it answers, asked for at each
    login so that a long run never presents an expired one; ``password`` is unused.
    """

    login: str
    password: str = field(repr=False)
    authzid: str | None = None
    token: TokenProvider | None = field(default=None, repr=False)


TOKEN_REFUSED = (
    ("the server refused the application's token for {login}. For Exchange Online: the "
    "application needs the IMAP.AccessAsApp permission of Office 365 Exchange Online with "
    "admin consent, a service principal in Exchange (New-ServicePrincipal) and access to "
    "this mailbox (Add-MailboxPermission -AccessRights FullAccess); IMAP must be enabled "
    "for the mailbox"),
    ("le serveur a refusé le jeton de l'application pour {login}. Pour Exchange Online : "
    "l'application doit avoir la permission IMAP.AccessAsApp d'Office 365 Exchange Online "
    "avec le consentement administrateur, un principal de service dans Exchange "
    "(New-ServicePrincipal) et l'accès à cette boîte (Add-MailboxPermission -AccessRights "
    "FullAccess) ; IMAP doit être activé pour la boîte"),
)


class TokenRefused(ConnectError):
    """An XOAUTH2 login refused twice, the second time with a fresh token: what the
    application was granted does not open this mailbox (permission, consent, mailbox access,
    or a token asked for another resource). Code ``auth_failed``, explained in
    ``message_en`` and ``message_fr``."""

    error_code = "XOAUTH2"

    def __init__(self, login: str, server_text: str) -> None:
        super().__init__(f"login as {login} refused: {server_text}", code="auth_failed")
        self.message_en = f"{TOKEN_REFUSED[0].format(login=login)} ({server_text})"
        self.message_fr = f"{TOKEN_REFUSED[1].format(login=login)} ({server_text})"


def ssl_context(endpoint: ImapEndpoint) -> ssl.SSLContext:
    """A verifying context: system CAs, plus ``endpoint.ca_file`` when given."""
    context = ssl.create_default_context()
    if endpoint.ca_file:
        context.load_verify_locations(cafile=endpoint.ca_file)
    return context


def _transient(error: BaseException) -> bool:
    """A refusal the server says is temporary (RFC 5530 UNAVAILABLE), worth another try."""
    return isinstance(error, ConnectError) and "[UNAVAILABLE]" in error.detail


@retry(retry=retry_if_exception(_transient), stop=stop_after_attempt(4),
       wait=wait_exponential(multiplier=0.5, max=8), reraise=True)
def connect(endpoint: ImapEndpoint, credentials: ImapCredentials) -> imapclient.IMAPClient:
    """A connection logged in as ``credentials``; its datetimes are timezone-aware.

    Raises ``ConnectError`` with code ``unreachable`` (name unknown, refused, timeout),
    ``tls_failed`` (handshake or certificate) or ``auth_failed``. The detail never holds a
    password or token. A login the server refuses as temporarily unavailable is tried again
    with backoff before it counts as refused.
    """
    client = _open(endpoint)
    # Dates keep the offset the server gave (a received date in +05:30 stays so).
    client.normalise_times = False
    try:
        _login(client, credentials)
    except BaseException:
        _drop(client)
        raise
    return client


def capabilities(client: imapclient.IMAPClient) -> frozenset[str]:
    """What the server advertises, in upper case. Call it after login: servers advertise
    more (or less) once a user is authenticated, and imapclient asks again then."""
    return frozenset(
        (c.decode("ascii") if isinstance(c, bytes) else c).upper() for c in client.capabilities()
    )


def hierarchy_separator(client: imapclient.IMAPClient) -> str | None:
    """The personal namespace's separator (``LIST "" ""``); ``None`` for a flat server."""
    for _flags, delimiter, _name in client.list_folders("", ""):
        if delimiter:
            return delimiter.decode("ascii") if isinstance(delimiter, bytes) else delimiter
    return None


def list_with_status(client: imapclient.IMAPClient, capabilities: frozenset[str],
                     items: tuple[str, ...]
                     ) -> tuple[list[tuple[Any, Any, str]], dict[str, dict[str, int]]]:
    """Every folder as ``list_folders`` gives it, and the STATUS ``items`` of each by
    folder name, in one round trip where the server has LIST-STATUS (RFC 5819); the
    folders alone (and no STATUS) elsewhere."""
    if "LIST-STATUS" not in capabilities:
        return client.list_folders("", "*"), {}
    return read_list_status(client, send_list_status(client, capabilities, items))


def send_list_status(client: imapclient.IMAPClient, capabilities: frozenset[str],
                     items: tuple[str, ...]) -> bytes:
    """Send ``LIST ... RETURN (STATUS (items))`` (the server has LIST-STATUS) without
    reading its answer, so that another command can go in the same round trip; answers
    its tag, for ``read_list_status``."""
    imap = client._imap  # imapclient has no LIST ... RETURN: its imaplib does
    imap.untagged_responses.pop("STATUS", None)
    imap.untagged_responses.pop("LIST", None)
    # Asked for anything, a server may leave out what a plain LIST gives unasked (Dovecot:
    # the special-use attributes).
    special = "SPECIAL-USE " if "SPECIAL-USE" in capabilities else ""
    return imap._command("LIST", '""', '"*"', "RETURN", f"({special}STATUS ({' '.join(items)}))")


def read_list_status(client: imapclient.IMAPClient, tag: bytes
                     ) -> tuple[list[tuple[Any, Any, str]], dict[str, dict[str, int]]]:
    """The answer to ``send_list_status``, as ``list_with_status`` gives it."""
    imap = client._imap
    typ, data = imap._command_complete("LIST", tag)
    client._checkok("list", typ, data)
    _, statuses = imap._untagged_response(typ, data, "STATUS")
    _, listed = imap._untagged_response(typ, data, "LIST")
    return client._proc_folder_list(listed), {
        _folder_name(client, name): answer for name, answer in _status_lines(statuses)}


def _status_lines(data: list[Any]) -> Iterator[tuple[bytes, dict[str, int]]]:
    """Each untagged STATUS answer as imaplib holds it: its folder name (raw, quotes
    undone) and its numbers. The name is a quoted string, a literal (a tuple, the rest of
    the line in the next element) or an atom that may hold a bracket (``[Archives``), which
    imapclient's parser cannot take: the numbers are the last parenthesised list."""
    pending: bytes | None = None
    for item in data:
        if isinstance(item, tuple):
            pending = item[1]
            continue
        if not isinstance(item, bytes) or not item:
            continue
        head, _, numbers = item.rpartition(b"(")
        name = pending if pending is not None else head.strip()
        pending = None
        if name.startswith(b'"') and name.endswith(b'"') and len(name) >= 2:
            name = re.sub(rb'\\(.)', rb"\1", name[1:-1])
        words = numbers.rstrip(b") ").split()
        answer = {}
        for key, value in zip(words[::2], words[1::2], strict=False):
            if value.isdigit():
                answer[key.decode("ascii", "replace").upper()] = int(value)
        yield name, answer


def _folder_name(client: imapclient.IMAPClient, name: bytes) -> str:
    """A folder name as imapclient's folder list gives it (decoded from modified UTF-7)."""
    if client.folder_encode:
        return decode_utf7(name)
    return name.decode("utf-8", "replace")


def split_name(name: str, separator: str | None) -> Path:
    """A mailbox name (already decoded from modified UTF-7) as a path."""
    if not separator:
        return (name,)
    return tuple(name.split(separator))


def join_path(path: Path, separator: str | None) -> str:
    """The mailbox name of a path. Raises ``ValueError`` if a segment holds the separator
    (the caller renames such a folder first)."""
    if not path or any(not segment for segment in path):
        raise ValueError(f"empty folder name in {path!r}")
    if separator is None:
        if len(path) > 1:
            raise ValueError(f"the server has no hierarchy; cannot name {path!r}")
        return path[0]
    for segment in path:
        if separator in segment:
            raise ValueError(f"folder name {segment!r} contains the separator {separator!r}")
    return separator.join(path)


def is_connection_dropped(error: BaseException) -> bool:
    return isinstance(error, CONNECTION_DROPPED)


def dropped(endpoint: ImapEndpoint, error: BaseException) -> ConnectError:
    """The ``ConnectError`` a dropped connection or a silent server amounts to."""
    if isinstance(error, TimeoutError):
        return ConnectError(f"{endpoint.where}: no answer within {endpoint.timeout:g} s",
                            code="timeout", where=endpoint.where)
    return ConnectError(f"{endpoint.where}: connection lost ({_reason(error)})",
                        code="connection_lost", where=endpoint.where)


class ImapSession:
    """One logged-in connection that is opened on first use and reopened once if dropped.

    ``call(operation)`` runs ``operation(client)``; if the connection drops meanwhile it
    reconnects and runs it again, a few times with a growing pause (a flaky link). Operations
    must therefore be safe to repeat (reads, SELECT, STORE of absolute flags), which is why
    APPEND is not run through it blindly. Drops past that, or a server that stopped
    answering, raise ``ConnectError``.
    """

    def __init__(self, endpoint: ImapEndpoint, credentials: ImapCredentials) -> None:
        self.endpoint = endpoint
        self.credentials = credentials
        self._client: imapclient.IMAPClient | None = None
        self._capabilities: frozenset[str] = frozenset()
        self._separator: str | None = None
        self._separator_known = False

    @property
    def client(self) -> imapclient.IMAPClient:
        """The connection, opened if needed; opened again, with a growing pause, if the
        link cut it during the login (a server that refuses or ignores it raises at once)."""
        for attempt in range(DROPS_IN_A_ROW):
            if self._client is not None:
                break
            try:
                self._client = connect(self.endpoint, self.credentials)
                self._capabilities = capabilities(self._client)
                break
            except CONNECTION_DROPPED as error:
                self.reset()
                if attempt + 1 == DROPS_IN_A_ROW:
                    raise dropped(self.endpoint, error) from error
            except ConnectError as error:
                if error.code != "connection_lost" or attempt + 1 == DROPS_IN_A_ROW:
                    raise
            time.sleep(LINK_PAUSES[attempt])
        assert self._client is not None
        return self._client

    @property
    def capabilities(self) -> frozenset[str]:
        _ = self.client
        return self._capabilities

    @property
    def separator(self) -> str | None:
        """The personal namespace's separator: learnt from a folder list (``learn_separator``)
        or asked for (``LIST "" ""``), once for the session."""
        if not self._separator_known:
            self._separator = self.call(hierarchy_separator)
            self._separator_known = True
        return self._separator

    def learn_separator(self, folders: Sequence[tuple[Any, Any, str]]) -> None:
        """Take the separator from a folder list's INBOX line (INBOX is in the personal
        namespace): one ``LIST "" ""`` fewer per connection."""
        if self._separator_known:
            return
        for _flags, delimiter, name in folders:
            if name.upper() == "INBOX":
                self._separator = (delimiter.decode("ascii") if isinstance(delimiter, bytes)
                                   else delimiter) or None
                self._separator_known = True
                return

    def has(self, capability: str) -> bool:
        return capability.upper() in self.capabilities

    def call(self, operation: Callable[[imapclient.IMAPClient], T]) -> T:
        for attempt in range(DROPS_IN_A_ROW):
            if attempt:
                time.sleep(LINK_PAUSES[attempt - 1])
            try:
                return operation(self.client)
            except CONNECTION_DROPPED as error:
                self.reset()
                # A server silent for a whole timeout is not worth a second one.
                if isinstance(error, TimeoutError) or attempt + 1 == DROPS_IN_A_ROW:
                    raise dropped(self.endpoint, error) from error
        raise AssertionError("unreachable")

    def reset(self) -> None:
        """Forget the current connection (after it dropped); the next use opens a new one."""
        if self._client is not None:
            _drop(self._client)
            self._client = None

    def close(self) -> None:
        """Log out. Safe to call twice."""
        if self._client is None:
            return
        client, self._client = self._client, None
        try:
            # A goodbye is not worth a whole timeout from a server that stopped answering.
            client.socket().settimeout(LOGOUT_TIMEOUT)
            client.logout()
        except (imap_errors.IMAPClientError, OSError):
            _drop(client)


class _Client(imapclient.IMAPClient):
    """imapclient, reading LIST answers that name a mailbox without quotes: Dovecot sends
    ``[Archives`` so, and imapclient's parser takes its ``[`` for the start of a bracketed
    part and fails (imapclient issue 583). Such names are quoted before it reads them.

    And without imaplib's own debug messages, which imapclient turns on (level 5) to send
    them to its ``imapclient.imaplib`` logger: imaplib formats each of them before the
    logger can drop it, the ``repr`` of every message body fetched among them (a fifth of
    bascule's CPU on a large copy). imapclient's own debug lines stay.

    And without the CAPABILITY imaplib sends after the greeting when the greeting gave
    them (``_greeted_capabilities``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._imap.debug = 0

    def _proc_folder_list(self, folder_data: list[Any]) -> list[Any]:
        return super()._proc_folder_list([_quoted_name(line) for line in folder_data])

    def _create_IMAP4(self) -> imaplib.IMAP4:
        timeout = getattr(self._timeout, "connect", None)
        if self.ssl:
            return _GreetedTLS(self.host, self.port, self.ssl_context, timeout)
        return _Greeted(self.host, self.port, timeout)


def _greeted_capabilities(imap: Any) -> None:
    """imaplib's first CAPABILITY, taken from the greeting where the server put it there
    (Dovecot, Cyrus): one round trip fewer per connection. Only for that first one: later
    (after STARTTLS, say) the command is sent as imaplib sends it."""
    greeted = None if imap.__dict__.get("_greeting_read") else (
        imap.untagged_responses.pop("CAPABILITY", None))
    imap._greeting_read = True
    if not greeted or not isinstance(greeted[-1], bytes):
        imaplib.IMAP4._get_capabilities(imap)
        return
    imap.capabilities = tuple(str(greeted[-1], imap._encoding).upper().split())


class _Greeted(imap4.IMAP4WithTimeout):
    _get_capabilities = _greeted_capabilities


class _GreetedTLS(tls.IMAP4_TLS):
    _get_capabilities = _greeted_capabilities


_UNQUOTED_NAME = re.compile(rb'(\([^)]*\) (?:NIL|"(?:[^"\\]|\\.)*") )([^"{].*)', re.DOTALL)
"""A LIST line: its flags and delimiter, then a mailbox name that is neither a quoted string
nor a literal."""


def _quoted_name(line: Any) -> Any:
    """A LIST line with its unquoted mailbox name quoted; anything else as it came (a name
    sent as a literal comes as a pair)."""
    match = _UNQUOTED_NAME.fullmatch(line) if isinstance(line, bytes) else None
    if match is None:
        return line
    return match[1] + b'"' + match[2].replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _open(endpoint: ImapEndpoint) -> imapclient.IMAPClient:
    where = endpoint.where
    context = ssl_context(endpoint) if endpoint.security != "none" else None
    try:
        client = _Client(
            endpoint.host,
            port=endpoint.port,
            ssl=endpoint.security == "tls",
            ssl_context=context,
            timeout=imapclient.SocketTimeout(connect=endpoint.greeting_timeout,
                                             read=endpoint.timeout),
        )
    except ssl.SSLError as error:
        raise ConnectError(f"TLS with {where} failed: {_reason(error)}", code="tls_failed",
                           where=where)
    except socket.gaierror as error:
        raise ConnectError(f"{endpoint.host}: unknown host ({error.strerror})",
                           code="unreachable", where=where)
    except TimeoutError:
        raise silent_server(endpoint) from None
    except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError,
            imap_errors.IMAPClientAbortError, imaplib.IMAP4.abort) as error:
        # It answered, then the link dropped: a flaky network, not a server down.
        raise ConnectError(f"{where}: {_reason(error)}", code="connection_lost", where=where)
    except (OSError, imap_errors.IMAPClientError) as error:
        raise ConnectError(f"{where}: {_reason(error)}", code="unreachable", where=where)
    without_delay(client.socket())
    if endpoint.security == "starttls":
        try:
            client.starttls(context)
        except (ssl.SSLError, imap_errors.IMAPClientError) as error:
            _drop(client)
            raise ConnectError(f"STARTTLS with {where} failed: {_reason(error)}",
                               code="tls_failed", where=where)
        except OSError as error:
            _drop(client)
            raise ConnectError(f"{where}: {_reason(error)}", code="unreachable", where=where)
    return client


def without_delay(sock: socket.socket) -> None:
    """Each write sent at once (``TCP_NODELAY``): bascule pipelines commands, written one
    after another (EXAMINE, then the FETCHes that follow it), and with Nagle's algorithm a
    small write waits for the server to acknowledge the one before: one round trip more for
    every folder over a WAN (measured through a 20 ms proxy: EXAMINE and two FETCHes in
    three writes answered in 42 ms, 22 ms with this option or in one write)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def silent_server(endpoint: ImapEndpoint) -> ConnectError:
    """What a connection that timed out before the greeting means: a TCP connection that
    opens at once names a server that is not (or no longer) an IMAP server answering."""
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=2):
            pass
    except OSError:
        return ConnectError(
            f"{endpoint.where}: no connection within {endpoint.greeting_timeout:g} s",
            code="unreachable", where=endpoint.where)
    return ConnectError(
        f"{endpoint.where} accepts connections but sent no IMAP greeting within "
        f"{endpoint.greeting_timeout:g} s", code="no_greeting", where=endpoint.where)


def _login(client: imapclient.IMAPClient, credentials: ImapCredentials) -> None:
    if credentials.token is not None:
        _token_login(client, credentials.login, credentials.token)
        return
    secrets = [credentials.password]
    try:
        if credentials.authzid:
            client.plain_login(
                credentials.login, credentials.password, authorization_identity=credentials.authzid
            )
        elif not (credentials.login + credentials.password).isascii():
            # LOGIN's arguments are ASCII strings (imaplib refuses others); SASL PLAIN
            # carries UTF-8, which is how servers expect accented passwords.
            client.plain_login(credentials.login, credentials.password)
        else:
            client.login(credentials.login, credentials.password)
    except imap_errors.IMAPClientAbortError as error:
        raise ConnectError(f"connection lost during login: {_scrub(error, secrets)}",
                           code="connection_lost")
    except imap_errors.IMAPClientError as error:
        raise ConnectError(
            f"login as {credentials.login} refused: {_scrub(error, secrets)}", code="auth_failed"
        )
    except OSError as error:
        raise _lost_during_login(error)


def _token_login(client: imapclient.IMAPClient, login: str, tokens: TokenProvider) -> None:
    """XOAUTH2 with the cached token, then once with a fresh one: a token the sign-in
    service still deems valid may already be refused by the server (clock skew, revoked
    consent)."""
    for refresh in (False, True):
        token = tokens(refresh=refresh)
        try:
            client.oauth2_login(login, token)
            return
        except imap_errors.IMAPClientAbortError as error:
            raise ConnectError(f"connection lost during login: {_scrub(error, [token])}",
                               code="connection_lost")
        except imap_errors.IMAPClientError as error:
            refusal = _scrub(error, [token])
            if "[UNAVAILABLE]" in refusal:
                # The server did not judge the token: ``connect`` tries again with it.
                raise ConnectError(f"login as {login} refused: {refusal}", code="auth_failed")
        except OSError as error:
            raise _lost_during_login(error)
    raise TokenRefused(login, refusal)


def _lost_during_login(error: OSError) -> ConnectError:
    code = "timeout" if isinstance(error, TimeoutError) else "connection_lost"
    return ConnectError(f"connection lost during login: {_reason(error)}", code=code)


def _scrub(error: BaseException, secrets: list[str]) -> str:
    """The server's words, with any secret the client sent cut out in case it is echoed."""
    text = _reason(error)
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _reason(error: BaseException) -> str:
    text = str(error)
    if text.startswith(("b'", 'b"')):
        text = text[2:-1]
    return text or type(error).__name__


def _drop(client: imapclient.IMAPClient) -> None:
    """Close the socket without a LOGOUT exchange (the connection is broken or unwanted)."""
    try:
        client.shutdown()
    except (imap_errors.IMAPClientError, OSError):
        pass
