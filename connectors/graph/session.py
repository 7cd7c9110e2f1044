"""The Microsoft Graph HTTP session every Graph workload shares.

One pool of verified HTTP connections (urllib3, without requests' per-request layers) with:

- paging through ``@odata.nextLink``, keeping the round's final ``@odata.deltaLink``;
- bodies streamed in chunks (``$value``, download URLs), never read whole;
- retries that honour ``Retry-After`` on 429/503/504 and back off on dropped connections:
  a throttled run slows down, it does not fail;
- one token refresh when Graph answers 401;
- a cap on concurrent requests per mailbox, and optionally per application, for the Outlook
  resources (Microsoft's throttling-limits page: 4 concurrent requests; older versions of the
  page count them per app and mailbox, newer ones per app across mailboxes).

TLS is always verified, against ``ca_file`` or else the bundle requests would use, loaded once
into the session's TLS context (see ``connectors.graph.auth`` for msal's requests).
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import unquote, urlencode, urljoin, urlsplit

import requests
import urllib3
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from connectors.base import BasculeError, ConnectError
from connectors.graph.auth import TokenProvider, no_consent_error, transport_error
from connectors.tls import verified_context

T = TypeVar("T")

RETRY_STATUSES = frozenset({429, 503, 504})
OUTLOOK_RESOURCES = frozenset({"mailFolders", "messages", "calendars", "calendar", "events",
                               "calendarView", "calendarGroups", "contacts", "contactFolders",
                               "mailboxSettings", "outlook", "inferenceClassification",
                               "todo"})
"""Segments after ``/users/{id}/`` that the Outlook service serves, where its concurrency limit
applies (throttling-limits page, "Outlook service resources")."""
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
USER_AGENT = "bascule"
CONSENT_CODES = frozenset({"Authorization_RequestDenied", "ErrorAccessDenied", "AccessDenied"})
_MAILBOX = re.compile(r"/(?:v1\.0|beta)/users/([^/?]+)/([^/?]+)")


class GraphError(BasculeError):
    """Graph refused a request (code ``server_error``); ``status`` and ``graph_code`` say how."""

    code = "server_error"

    def __init__(self, status: int, graph_code: str, message: str, url: str) -> None:
        super().__init__(f"HTTP {status} {graph_code}: {message} ({url})")
        self.status = status
        self.graph_code = graph_code
        self.message = message


class _Retry(Exception):
    """A transient answer: try again after ``delay`` seconds (``None``: back off)."""

    def __init__(self, delay: float | None, reason: str) -> None:
        super().__init__(reason)
        self.delay = delay


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: a number of seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def mailbox_of(url: str) -> str | None:
    """The mailbox an Outlook request addresses (user id or UPN, lower case), else ``None``."""
    match = _MAILBOX.search(urlsplit(url).path)
    if match and match.group(2) in OUTLOOK_RESOURCES:
        return unquote(match.group(1)).lower()
    return None


def _error_of(response: Response) -> tuple[str, str]:
    try:
        error = response.json().get("error", {})
    except ValueError:
        return "", response.reason or ""
    if isinstance(error, dict):
        return str(error.get("code", "")), str(error.get("message", ""))
    return str(error), ""


class Response:
    """An answer as the session's callers read it: status, headers, its JSON or its body in
    chunks. A connection dropped while the body is read raises
    ``requests.exceptions.ChunkedEncodingError`` (a ``requests.RequestException``), as the
    session did when it was a ``requests.Session``.

    The session speaks urllib3 directly: requests' own layers (request preparation, cookies,
    hooks, settings merged from the environment) cost about 0.5 ms of CPU per request, a
    quarter of the Graph source's CPU per message."""

    def __init__(self, raw: urllib3.BaseHTTPResponse) -> None:
        self._raw = raw
        self.status_code = raw.status
        self.headers = raw.headers
        self.reason = raw.reason
        self._consumed = False

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    def json(self) -> Any:
        return json.loads(self.read())

    def read(self) -> bytes:
        """The whole body (JSON answers and error bodies, never a message)."""
        try:
            body = self._raw.read()
        except urllib3.exceptions.HTTPError as error:
            raise requests.exceptions.ChunkedEncodingError(str(error)) from None
        self._consumed = True
        return body

    def iter_content(self, chunk_size: int) -> Iterator[bytes]:
        try:
            yield from self._raw.stream(chunk_size)
        except urllib3.exceptions.HTTPError as error:
            raise requests.exceptions.ChunkedEncodingError(str(error)) from None
        self._consumed = True

    def close(self) -> None:
        """The connection back to the pool once the body was read whole; else closed, so
        that what is left unread is never taken for the next answer."""
        if not self._consumed:
            self._raw.close()
        self._raw.release_conn()


class Pages:
    """The pages of a Graph collection, fetched as iterated. After the last page,
    ``delta_link`` holds the ``@odata.deltaLink`` when the collection is a delta round."""

    def __init__(self, session: GraphSession, url: str, params: dict[str, Any] | None,
                 headers: dict[str, str] | None) -> None:
        self._session = session
        self._url = url
        self._params = params
        self._headers = headers
        self.delta_link: str | None = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        url: str | None = self._url
        params = self._params
        while url:
            page = self._session.get_json(url, params, headers=self._headers)
            yield page
            # Links carry every query option already (paging page): none are sent again.
            url, params = page.get("@odata.nextLink"), None
            if not url:
                self.delta_link = page.get("@odata.deltaLink")

    def values(self) -> Iterator[dict[str, Any]]:
        """The items of every page, in order."""
        for page in self:
            yield from page.get("value", [])


class GraphSession:
    """HTTP access to one Graph endpoint (``https://graph.microsoft.com/v1.0``, a national
    cloud's, or a test server's) for all workloads of a run. Thread-safe."""

    def __init__(self, graph_url: str, token_provider: TokenProvider,
                 ca_file: str | None = None, per_mailbox: int = 4, per_app: int | None = None,
                 timeout: float = 60.0, max_retry_after: float = 300.0,
                 max_throttled_wait: float = 3600.0, connection_attempts: int = 5,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.graph_url = graph_url.rstrip("/")
        parts = urlsplit(self.graph_url)
        self._graph_origin = f"{parts.scheme}://{parts.netloc}/"
        """Requests to Graph's own host (v1.0 or beta) carry the token; download URLs on
        other hosts are pre-authenticated and must not."""
        self._token_provider = token_provider
        # What requests reads from the environment and the disk on every request (proxy
        # variables, a CA bundle and its path, ~/.netrc) is read here once instead: that was a
        # good share of the client's CPU per message, and a ~/.netrc entry for the Graph host
        # would have replaced the bearer token with a password.
        ca_bundle = (ca_file or os.environ.get("REQUESTS_CA_BUNDLE")
                     or os.environ.get("CURL_CA_BUNDLE") or requests.utils.DEFAULT_CA_BUNDLE_PATH)
        self._proxies: dict[str, str | None] = {}
        self._context = verified_context(ca_bundle)
        self._timeout = timeout
        self._per_mailbox = per_mailbox
        self._max_retry_after = max_retry_after
        self._max_throttled_wait = max_throttled_wait
        self._connection_attempts = connection_attempts
        self._sleep = sleep
        self._direct = self._pool()
        self._through: dict[str, urllib3.PoolManager] = {}
        """One pool per proxy the environment names, made when first needed."""
        self._app_slots = threading.BoundedSemaphore(per_app) if per_app else None
        self._mailbox_slots: dict[str, threading.BoundedSemaphore] = {}
        self._slots_lock = threading.Lock()
        self._token: str | None = None
        self._token_lock = threading.Lock()

    # --- public

    def url(self, path_or_url: str) -> str:
        """An absolute URL: links from Graph as they are, paths under ``graph_url``."""
        if path_or_url.startswith(("https://", "http://")):
            return path_or_url
        return f"{self.graph_url}/{path_or_url.lstrip('/')}"

    def get_json(self, path_or_url: str, params: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> dict[str, Any]:
        """GET one JSON resource."""
        with self._request("GET", path_or_url, params, headers) as response:
            payload: dict[str, Any] = response.json()
            return payload

    def pages(self, path_or_url: str, params: dict[str, Any] | None = None,
              headers: dict[str, str] | None = None) -> Pages:
        """Every page of a collection, following ``@odata.nextLink``. For a delta round, pass
        ``headers={"Prefer": "odata.maxpagesize=N"}`` to choose the page size."""
        return Pages(self, self.url(path_or_url), params, headers)

    @contextlib.contextmanager
    def stream(self, path_or_url: str, headers: dict[str, str] | None = None,
               chunk_size: int = 1 << 16) -> Iterator[Iterator[bytes]]:
        """A body as chunks, e.g. ``/messages/{id}/$value``. The mailbox's slot is held until
        the block ends. A pre-authenticated download URL (a host other than Graph's) is
        fetched without the bearer token."""
        with self._request("GET", path_or_url, None, headers) as response:
            yield response.iter_content(chunk_size)

    def close(self) -> None:
        self._direct.clear()
        for pool in self._through.values():
            pool.clear()

    # --- machinery

    def _bearer(self, refused: str | None = None) -> str:
        """The current token; a new one if ``refused`` is still current (threads that saw
        the same 401 together refresh it once)."""
        with self._token_lock:
            if self._token is None or (refused is not None and self._token == refused):
                self._token = self._token_provider(refresh=refused is not None)
            return self._token

    def _pool(self, proxy: str | None = None) -> urllib3.PoolManager:
        """Connections verified against the session's CA bundle: up to 32 kept per host
        (enough for every mailbox of a run at its limit), more opened when needed."""
        options: dict[str, Any] = {"num_pools": 4, "maxsize": 32, "block": False,
                                   "ssl_context": self._context, "cert_reqs": "CERT_REQUIRED"}
        if proxy is None:
            return urllib3.PoolManager(**options)
        parts = urlsplit(proxy)
        if parts.username is not None:
            options["proxy_headers"] = urllib3.make_headers(proxy_basic_auth=(
                f"{unquote(parts.username)}:{unquote(parts.password or '')}"))
        return urllib3.ProxyManager(proxy, **options)

    def _pool_for(self, url: str) -> urllib3.PoolManager:
        """The pool through the proxy the environment names for ``url``'s host (none when
        ``NO_PROXY`` names it), looked up once per host."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._proxies:
            found = requests.utils.get_environ_proxies(url)
            self._proxies[origin] = found.get(parts.scheme) or found.get("all")
        proxy = self._proxies[origin]
        if proxy is None:
            return self._direct
        with self._slots_lock:
            pool = self._through.get(proxy)
            if pool is None:
                pool = self._through[proxy] = self._pool(proxy)
            return pool

    def _mailbox_slot(self, url: str) -> threading.BoundedSemaphore | None:
        mailbox = mailbox_of(url)
        if mailbox is None or not self._per_mailbox:
            return None
        with self._slots_lock:
            slot = self._mailbox_slots.get(mailbox)
            if slot is None:
                slot = self._mailbox_slots[mailbox] = threading.BoundedSemaphore(self._per_mailbox)
            return slot

    @contextlib.contextmanager
    def _slots(self, url: str) -> Iterator[None]:
        mailbox_slot = self._mailbox_slot(url)
        with contextlib.ExitStack() as stack:
            if mailbox_slot is not None:
                stack.enter_context(mailbox_slot)
                if self._app_slots is not None:
                    stack.enter_context(self._app_slots)
            yield

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, _Retry) and error.delay is not None:
            return min(error.delay, self._max_retry_after)
        # No Retry-After: exponential backoff with jitter, as the throttling page advises.
        return min(2.0 ** min(state.attempt_number, 6), 60.0) * random.uniform(0.5, 1.0)

    def _stop(self, state: RetryCallState) -> bool:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, _Retry) and error.delay is not None:
            return state.seconds_since_start > self._max_throttled_wait
        return state.attempt_number >= self._connection_attempts

    @contextlib.contextmanager
    def _request(self, method: str, path_or_url: str, params: dict[str, Any] | None,
                 headers: dict[str, str] | None) -> Iterator[Response]:
        url = self.url(path_or_url)
        response, slots = self._open(method, url, params, headers)
        with slots:
            try:
                yield response
            finally:
                response.close()

    def _open(self, method: str, url: str, params: dict[str, Any] | None,
              headers: dict[str, str] | None) -> tuple[Response, contextlib.ExitStack]:
        """A successful response, and the concurrency slots it holds until it is read.
        Slots are released while waiting between attempts."""
        retrying = Retrying(retry=retry_if_exception_type(_Retry), wait=self._wait,
                            stop=self._stop, sleep=self._sleep, reraise=True)
        try:
            for attempt in retrying:
                with attempt:
                    slots = contextlib.ExitStack()
                    slots.enter_context(self._slots(url))
                    try:
                        return self._send(method, url, params, headers), slots
                    except BaseException:
                        slots.close()
                        raise
        except _Retry as error:
            raise ConnectError(f"{url}: gave up after retries: {error}",
                               code="unreachable") from None
        raise AssertionError("tenacity ended without an outcome")

    def _send(self, method: str, url: str, params: dict[str, Any] | None,
              headers: dict[str, str] | None) -> Response:
        """One request (following up to 5 redirects, the bearer token never sent off Graph's
        host); raises ``_Retry`` for what is worth another try, refreshing the token once when
        Graph refuses it."""
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(params, doseq=True)}"
        url = requests.utils.requote_uri(url)
        refused: str | None = None
        redirects = 0
        while True:
            request_headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate",
                               **(headers or {})}
            token = self._bearer(refused) if url.startswith(self._graph_origin) else None
            if token:
                request_headers["Authorization"] = f"Bearer {token}"
            try:
                raw = self._pool_for(url).urlopen(
                    method, url, headers=request_headers, retries=False, redirect=False,
                    timeout=urllib3.Timeout(connect=self._timeout, read=self._timeout),
                    preload_content=False)
            except urllib3.exceptions.SSLError as error:
                raise transport_error(requests.exceptions.SSLError(str(error)), url) from None
            except urllib3.exceptions.HTTPError as error:
                raise _Retry(None, str(error)) from None
            response = Response(raw)
            if response.status_code == 401 and token and refused is None:
                response.close()
                refused = token
                continue
            location = response.headers.get("Location")
            if response.status_code in REDIRECTS and location and redirects < MAX_REDIRECTS:
                response.close()
                redirects += 1
                url = requests.utils.requote_uri(urljoin(url, location))
                if response.status_code == 303:
                    method = "GET"
                continue
            break
        if response.ok:
            return response
        graph_code, message = _error_of(response)
        response.close()
        if response.status_code in RETRY_STATUSES:
            delay = retry_after_seconds(response.headers.get("Retry-After"))
            raise _Retry(delay, f"HTTP {response.status_code} {graph_code}")
        if response.status_code == 401:
            raise no_consent_error(graph_code, message) if graph_code in CONSENT_CODES else \
                ConnectError(f"{url}: HTTP 401 {graph_code}: {message}", code="auth_failed")
        if response.status_code == 403 and graph_code in CONSENT_CODES:
            raise no_consent_error(graph_code, message)
        raise GraphError(response.status_code, graph_code, message, url)


_FRACTION = re.compile(r"(\.\d{6})\d+")


def graph_instant(value: Any) -> datetime | None:
    """A Graph timestamp (``2024-03-21T08:00:00Z``, fractions up to seven digits) as an
    aware UTC datetime; ``None`` for an empty or unreadable value."""
    if not value:
        return None
    try:
        when = datetime.fromisoformat(_FRACTION.sub(r"\1", str(value)))
    except ValueError:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def delta_round(pages: Pages, ref: Callable[[dict[str, Any]], T], where: str
                ) -> tuple[dict[str, T], list[str], str]:
    """Read a delta round to its end: (changed id -> ref, removed ids, the next deltaLink).

    An item listed several times in the round counts once, as last listed; ``@removed``
    entries win over earlier changes (delta query pages: "the same resource may appear more
    than once").
    """
    changed: dict[str, T] = {}
    removed: dict[str, None] = {}
    for item in pages.values():
        source_id = str(item["id"])
        if "@removed" in item:
            changed.pop(source_id, None)
            removed[source_id] = None
            continue
        removed.pop(source_id, None)
        changed[source_id] = ref(item)
    if pages.delta_link is None:
        raise GraphError(502, "NoDeltaLink", "the delta round ended without a deltaLink", where)
    return changed, list(removed), pages.delta_link
