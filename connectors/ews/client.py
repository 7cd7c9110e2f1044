"""Exchange Web Services over HTTPS: SOAP requests on exchangelib's signed-in sessions, the
server's throttling honoured, its refusals in the project's terms.

Pages of Microsoft's EWS reference (learn.microsoft.com/exchange/client-developer) each
behaviour comes from:

- ``web-service-reference/exchangeimpersonation``, ``connectingsid``: a service account acts
  as a mailbox with the ``ExchangeImpersonation`` header naming it (``PrimarySmtpAddress``);
  ``ErrorImpersonateUserDenied`` when the account holds no ApplicationImpersonation right
  over it (``exchange-web-services/impersonation-and-ews-in-exchange``).
- ``web-service-reference/requestserverversion``, ``serverversioninfo``: each request names
  the schema it speaks; each answer's header says the server's build.
- ``exchange-web-services/ews-throttling-in-exchange``: a server over its budget answers
  ``ErrorServerBusy`` with ``BackOffMilliseconds`` in ``MessageXml``, the time to wait
  before the next request; beyond ``EWSMaxConcurrency`` (27 by default) requests in flight
  for one user it answers ``ErrorExceededConnectionCount``. Both are reasons to wait, never
  failures of an item.
- ``web-service-reference/responsecode``: the codes a response message or a SOAP fault
  carries.

exchangelib's retry policies were weighed for the back-off: ``FaultTolerance`` honours
``BackOffMilliseconds``, but it sleeps holding a connection, takes every 401 for a busy
server (a wrong password then waits out ``max_wait`` instead of stopping the command) and
drops its pool size for good on each busy answer; ``FailFast`` raises at once. The client
uses exchangelib's sessions (its NTLM and Basic sign-in, its connection pool) and keeps the
waiting here: ``FailFast`` semantics, a refused login stops at once, and a busy answer holds
every request to that server until its back-off has passed (the budget is the server's, not
one request's), within ``max_wait`` seconds per request.

TLS is always verified: the batch's CA file is passed with every request, where requests
would otherwise take ``REQUESTS_CA_BUNDLE`` from the environment over a session's own.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from xml.sax.saxutils import escape, quoteattr

import requests

from connectors.base import BasculeError, ConnectError, SourceNote

T = TypeVar("T")

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
MESSAGES_NS = "http://schemas.microsoft.com/exchange/services/2006/messages"
TYPES_NS = "http://schemas.microsoft.com/exchange/services/2006/types"
ERRORS_NS = "http://schemas.microsoft.com/exchange/services/2006/errors"
REQUEST_VERSION = "Exchange2013_SP1"
"""The schema every request names: Exchange 2013 SP1 and later (2016, 2019, Subscription
Edition) answer it, and it has every operation and property the source asks for."""

BUSY = "ErrorServerBusy"
TOO_MANY_CONNECTIONS = "ErrorExceededConnectionCount"
TRANSIENT = frozenset({BUSY, TOO_MANY_CONNECTIONS, "ErrorTooManyObjectsOpened",
                       "ErrorInternalServerTransientError", "ErrorTimeoutExpired"})
"""Codes that say "not now": the request is sent again after a pause."""
IMPERSONATION_DENIED = frozenset({"ErrorImpersonateUserDenied",
                                  "ErrorImpersonationDenied"})
NO_MAILBOX = frozenset({"ErrorNonExistentMailbox", "ErrorMailboxNotFound"})
DEFAULT_BACK_OFF = 2.0
"""Seconds waited on a busy answer that names no back-off, doubled at each new one."""
CONNECTION_PAUSES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""Seconds waited after a dropped connection, or an answer that the account has too many
requests in flight, before trying again."""
PRODUCTS = {(15, 2): "Exchange Server 2019", (15, 1): "Exchange Server 2016",
            (15, 0): "Exchange Server 2013", (14, 3): "Exchange Server 2010 SP3",
            (14, 2): "Exchange Server 2010 SP2", (14, 1): "Exchange Server 2010 SP1",
            (14, 0): "Exchange Server 2010"}
"""Major and minor versions of ``ServerVersionInfo`` -> the product's name."""


class EwsFault(BasculeError):
    """The server refused a request or one of its items: ``ews_code`` is its response code
    (``ErrorItemNotFound``...), ``back_off`` the seconds it asked to wait, if any."""

    code = "server_error"

    def __init__(self, ews_code: str, message: str = "", back_off: float | None = None
                 ) -> None:
        super().__init__(f"{ews_code}: {message}" if message else ews_code)
        self.ews_code = ews_code
        self.back_off = back_off


class TokenProvider(Protocol):
    def __call__(self, *, refresh: bool = False) -> str: ...


@dataclass(frozen=True)
class SignIn:
    """Who signs in to the server, and how. ``impersonation``: the login is a service
    account acting as each mailbox (ApplicationImpersonation); otherwise it is the
    mailbox's own login, or an account holding FullAccess over it (delegate)."""

    endpoint: str
    auth: str
    login: str = ""
    password: str = field(default="", repr=False)
    token: TokenProvider | None = field(default=None, repr=False)
    impersonation: bool = False
    ca_file: str | None = None
    timeout: float = 120.0
    who: str = ""
    """The account a refusal names (the login, or an application's client id)."""
    discovered: bool = False
    """``endpoint`` came from Autodiscover, not from the batch."""


class Throttle:
    """What one server allows a command: ``per_server`` requests in flight, ``per_mailbox``
    of them for one mailbox, and a pause shared by all once it answered busy."""

    def __init__(self, per_server: int, per_mailbox: int) -> None:
        self._server = threading.BoundedSemaphore(per_server)
        self._per_mailbox = per_mailbox
        self._mailboxes: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()
        self._quiet_until = 0.0

    def pause(self, seconds: float) -> None:
        """Hold every request to the server for ``seconds`` from now."""
        with self._lock:
            self._quiet_until = max(self._quiet_until, time.monotonic() + seconds)

    def _wait(self) -> None:
        while (left := self._quiet_until - time.monotonic()) > 0:
            time.sleep(left)

    @contextlib.contextmanager
    def slot(self, mailbox: str) -> Iterator[None]:
        with self._lock:
            own = self._mailboxes.setdefault(
                mailbox.lower(), threading.BoundedSemaphore(self._per_mailbox))
        with own:
            self._wait()
            with self._server:
                yield


class EwsClient:
    """Requests to one server under one sign-in. Thread-safe; one per command and sign-in
    (``connectors.ews.connector``), so that its sessions and its throttle are shared."""

    def __init__(self, sign_in: SignIn, throttle: Throttle, *, per_server: int,
                 max_wait: float = 900.0) -> None:
        self.sign_in = sign_in
        self.throttle = throttle
        self._max_wait = max_wait
        self._protocol = _protocol(sign_in, per_server)
        self.server_version: str | None = None
        """The server's product and build, from the first answer's ``ServerVersionInfo``."""
        self._version_told = False
        self._version_lock = threading.Lock()

    # --- requests

    def call(self, mailbox: str, body: str) -> Any:
        """Send one operation (``body``: its element, ``m:`` and ``t:`` prefixes bound) as
        ``mailbox`` and answer the parsed ``s:Body`` (lxml). Raises ``EwsFault`` for a SOAP
        fault other than a busy server, ``ConnectError`` when the server cannot be reached or
        refuses the login."""
        from lxml import etree

        def parse(response: requests.Response) -> Any:
            root = etree.fromstring(response.content, parser=_parser())
            self._note_version(root)
            body_element = root.find(f"{{{SOAP_NS}}}Body")
            if body_element is None:
                raise EwsFault("ErrorInvalidResponse", "no SOAP body")
            fault = body_element.find(f"{{{SOAP_NS}}}Fault")
            if fault is not None:
                raise fault_of(fault)
            for message in response_messages(body_element):
                code = message.findtext(f"{{{MESSAGES_NS}}}ResponseCode")
                if code in TRANSIENT:
                    # Throttled message by message: the request is sent again whole.
                    raise EwsFault(code, back_off=back_off_of(message))
            return body_element

        return self.exchange(mailbox, body, parse)

    def exchange(self, mailbox: str, body: str, read: Callable[[requests.Response], T]) -> T:
        """Send one operation and answer what ``read`` makes of the streamed answer (called
        for answers of status 200 and 500, a SOAP fault's status). ``read`` raises
        ``EwsFault`` for what the answer refused; a busy server's (``TRANSIENT``) sends the
        request again once the server's back-off has passed, the others go up."""
        envelope = self.envelope(mailbox, body)
        started = time.monotonic()
        back_off = DEFAULT_BACK_OFF
        crowded = dropped = 0
        refresh = False
        while True:
            try:
                with self.throttle.slot(mailbox):
                    return self._post(mailbox, envelope, read, refresh=refresh)
            except _StaleToken:
                # A bearer token the server refuses is replaced once; refused again, the
                # application's sign-in is what is wrong.
                if refresh:
                    raise ConnectError(f"{self.sign_in.endpoint}: HTTP 401",
                                       code="ews_login_refused", where=self.sign_in.endpoint,
                                       params={"login": self.sign_in.who}) from None
                refresh = True
            except EwsFault as fault:
                if fault.ews_code not in TRANSIENT:
                    raise self.refusal(fault, mailbox) from None
                if fault.ews_code == TOO_MANY_CONNECTIONS:
                    # Too many requests of this account in flight (other clients of the
                    # service account, or a lower policy than per_server): this request
                    # waits for one of them to end, the others go on.
                    wait = CONNECTION_PAUSES[min(crowded, len(CONNECTION_PAUSES) - 1)]
                    crowded += 1
                else:
                    wait = fault.back_off if fault.back_off is not None else back_off
                    back_off = min(back_off * 2, 60.0)
                if time.monotonic() + wait - started > self._max_wait:
                    raise ConnectError(f"{self.sign_in.endpoint}: {fault.ews_code}",
                                       code="ews_busy", where=self.sign_in.endpoint,
                                       params={"seconds": int(self._max_wait)}) from None
                if fault.ews_code == TOO_MANY_CONNECTIONS:
                    time.sleep(wait)
                else:
                    self.throttle.pause(wait)
            except _Dropped as error:
                if dropped >= len(CONNECTION_PAUSES):
                    raise ConnectError(f"{self.sign_in.endpoint}: {error}",
                                       code="connection_lost",
                                       where=self.sign_in.endpoint) from None
                time.sleep(CONNECTION_PAUSES[dropped])
                dropped += 1

    def refusal(self, fault: EwsFault, mailbox: str) -> BasculeError:
        """A refusal that concerns the whole mailbox as the error a person reads, saying
        what to do (the right to grant, the address to check); others as they came."""
        where = self.sign_in.endpoint
        if fault.ews_code in IMPERSONATION_DENIED:
            return ConnectError(fault.detail, code="ews_impersonation_denied", where=where,
                                params={"account": self.sign_in.who or self.sign_in.login,
                                        "mailbox": mailbox})
        if fault.ews_code in NO_MAILBOX:
            return ConnectError(fault.detail, code="ews_no_mailbox", where=where,
                                params={"mailbox": mailbox})
        return fault

    def envelope(self, mailbox: str, body: str) -> bytes:
        """The SOAP envelope of an operation done as ``mailbox``; ``""``: as the signed-in
        account itself, without impersonation (public folders)."""
        header = f'<t:RequestServerVersion Version="{REQUEST_VERSION}"/>'
        if self.sign_in.impersonation and mailbox:
            header += ("<t:ExchangeImpersonation><t:ConnectingSID><t:PrimarySmtpAddress>"
                       f"{escape(mailbox)}</t:PrimarySmtpAddress></t:ConnectingSID>"
                       "</t:ExchangeImpersonation>")
        return (f'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{SOAP_NS}" '
                f'xmlns:m="{MESSAGES_NS}" xmlns:t="{TYPES_NS}"><s:Header>{header}</s:Header>'
                f"<s:Body>{body}</s:Body></s:Envelope>").encode()

    def _post(self, mailbox: str, envelope: bytes, read: Callable[[requests.Response], T],
              *, refresh: bool = False) -> T:
        endpoint = self.sign_in.endpoint
        headers = {"X-AnchorMailbox": mailbox} if mailbox else {}
        if self.sign_in.token is not None:
            headers["Authorization"] = f"Bearer {self.sign_in.token(refresh=refresh)}"
        session = self._protocol.get_session()
        keep = False
        try:
            response = session.post(endpoint, data=envelope, headers=headers, stream=True,
                                    timeout=self.sign_in.timeout, allow_redirects=False,
                                    verify=self.sign_in.ca_file or True)
            with contextlib.closing(response):
                if response.status_code == 401 and self.sign_in.token is not None:
                    raise _StaleToken
                if response.status_code == 401:
                    raise ConnectError(f"{endpoint}: HTTP 401", code="ews_login_refused",
                                       where=endpoint, params={"login": self.sign_in.login
                                                               or mailbox})
                if response.status_code in (503, 429):
                    raise EwsFault(BUSY, f"HTTP {response.status_code}")
                if response.status_code == 403:
                    # EWS turned off for the account (Set-CASMailbox -EwsEnabled), or a
                    # client access rule: the mailbox's refusal, not the server down.
                    raise ConnectError(f"{endpoint}: HTTP 403 for {mailbox}",
                                       code="ews_refused", where=endpoint)
                if response.status_code not in (200, 500):
                    raise ConnectError(f"{endpoint}: HTTP {response.status_code}",
                                       code="unreachable", where=endpoint)
                answer = read(response)
            keep = True
            return answer
        except requests.exceptions.SSLError as error:
            raise ConnectError(f"{endpoint}: {error}", code="tls_failed",
                               where=endpoint) from None
        except requests.exceptions.ConnectionError as error:
            if _refused(error):
                raise ConnectError(f"{endpoint}: {error}", code="unreachable",
                                   where=endpoint) from None
            raise _Dropped(str(error)) from None
        except (requests.exceptions.Timeout, requests.exceptions.ChunkedEncodingError) as error:
            raise _Dropped(str(error)) from None
        except EwsFault:
            keep = True  # the connection answered whole: it can serve again
            raise
        finally:
            if keep:
                self._protocol.release_session(session)
            else:
                self._protocol.retire_session(session)

    def _note_version(self, root: Any) -> None:
        if self.server_version is not None:
            return
        info = root.find(f"{{{SOAP_NS}}}Header/{{{TYPES_NS}}}ServerVersionInfo")
        if info is not None:
            self.server_version = server_version(dict(info.attrib))

    def note_version(self, attributes: dict[str, str]) -> None:
        """The ``ServerVersionInfo`` an answer read elsewhere carried."""
        if self.server_version is None and attributes:
            self.server_version = server_version(attributes)

    def take_server_notes(self) -> list[SourceNote]:
        """The server's version (and its address, when Autodiscover found it) the first time
        they are asked for once known, then nothing: the reports say them once per command,
        not once per mailbox."""
        with self._version_lock:
            if self._version_told or self.server_version is None:
                return []
            self._version_told = True
            notes = [SourceNote("ews_server_version", "", self.server_version)]
            if self.sign_in.discovered:
                notes.append(SourceNote("ews_endpoint_discovered", "", self.sign_in.endpoint))
            return notes

    def close(self) -> None:
        """Close the sessions, and drop exchangelib's process-wide cache entry for this
        sign-in (it holds the password, and a later command builds its own pool)."""
        self._protocol.close()
        with contextlib.suppress(KeyError):
            del type(self._protocol)[self._protocol.config]


class _Dropped(Exception):
    """The connection broke before the answer was whole: sent again after a pause."""


class _StaleToken(Exception):
    """The server refused the bearer token: sent again once with a new one."""


def _refused(error: requests.exceptions.ConnectionError) -> bool:
    """Whether nothing listens there (the server is down), rather than a dropped link: a
    connection never made is said so only in urllib3's message, which requests wraps."""
    text = str(error)
    return "Connection refused" in text or "Name or service not known" in text \
        or "Failed to resolve" in text


def fault_of(fault: Any) -> EwsFault:
    """A SOAP fault as an ``EwsFault``: the EWS response code of its detail, else the fault
    code; the back-off a busy server asked for (``BackOffMilliseconds``)."""
    detail = fault.find("detail")
    ews_code = message = ""
    back_off = None
    if detail is not None:
        ews_code = (detail.findtext(f"{{{ERRORS_NS}}}ResponseCode") or "").strip()
        message = (detail.findtext(f"{{{ERRORS_NS}}}Message") or "").strip()
        back_off = back_off_of(detail)
    if not ews_code:
        ews_code = (fault.findtext("faultcode") or "SOAPFault").split(":")[-1]
        message = message or (fault.findtext("faultstring") or "").strip()
    return EwsFault(ews_code, message, back_off)


def back_off_of(element: Any) -> float | None:
    """The seconds a busy answer (a fault's detail, a response message) asks to wait: its
    ``MessageXml``'s ``BackOffMilliseconds``."""
    for value in element.iter(f"{{{TYPES_NS}}}Value"):
        if value.get("Name") == "BackOffMilliseconds":
            with contextlib.suppress(TypeError, ValueError):
                return int(value.text or "") / 1000.0
    return None


def server_version(attributes: dict[str, str]) -> str:
    """``ServerVersionInfo``'s attributes as a person reads them: ``Exchange Server 2016
    (15.1.2507.6)``."""
    numbers = [attributes.get(key, "") for key in ("MajorVersion", "MinorVersion",
                                                   "MajorBuildNumber", "MinorBuildNumber")]
    build = ".".join(number for number in numbers if number)
    try:
        product = PRODUCTS.get((int(numbers[0]), int(numbers[1])))
    except ValueError:
        product = None
    name = product or attributes.get("Version") or "Exchange"
    return f"{name} ({build})" if build else name


def response_messages(body: Any) -> list[Any]:
    """The response messages of an answer's body, in the order of the request's ids."""
    return [element for element in body.iter()
            if isinstance(element.tag, str) and element.tag.endswith("ResponseMessage")
            and element.get("ResponseClass") is not None]


def checked(message: Any) -> Any:
    """A response message, or ``EwsFault`` when it says ``Error``."""
    if message.get("ResponseClass") == "Error":
        raise EwsFault(message.findtext(f"{{{MESSAGES_NS}}}ResponseCode") or "Error",
                       message.findtext(f"{{{MESSAGES_NS}}}MessageText") or "")
    return message


def attribute(value: str) -> str:
    """A value written as an XML attribute, quotes included."""
    return quoteattr(value)


def _protocol(sign_in: SignIn, per_server: int) -> Any:
    """exchangelib's session pool for this sign-in: its NTLM or Basic handshake, no
    authentication of its own for a bearer token (set per request)."""
    from exchangelib import Configuration, Credentials, FailFast
    from exchangelib.protocol import Protocol
    from exchangelib.transport import BASIC, NOAUTH, NTLM

    auth_type = {"ntlm": NTLM, "basic": BASIC}.get(sign_in.auth, NOAUTH)
    credentials = Credentials(sign_in.login, sign_in.password) if auth_type != NOAUTH else None
    config = Configuration(service_endpoint=sign_in.endpoint, credentials=credentials,
                           auth_type=auth_type, retry_policy=FailFast(),
                           max_connections=per_server)
    return Protocol(config=config)


def _parser() -> Any:
    """A parser for one answer (lxml's parsers are not shared between threads): no entity
    expansion, no network, whatever the server sends."""
    from lxml import etree

    return etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
