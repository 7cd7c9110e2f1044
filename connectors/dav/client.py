"""WebDAV requests as CalDAV, CardDAV and file stores need them, over one pool of HTTP
connections: PROPFIND answers read as they arrive, collections made, resources written, read
and deleted.

Paths are handled percent-decoded (``/dav/calendars/user/amelie@ville.fr/``) and encoded
only on the wire. The client speaks urllib3 directly, to one server: with requests' own
layers (preparing each request, merging the session's settings and the environment's,
cookies, hooks), a PUT of 20 KB cost twice the CPU (``docs/benchmarks.md``). TLS
is verified, against the batch's CA file where it names one (else the bundle requests
ships), loaded once into the pool's TLS context; nothing comes from the environment (no
proxy, no ``.netrc`` login, no ``REQUESTS_CA_BUNDLE``): only what the batch says.
Redirects are followed here, within the same server and with the same method. Nothing is
tried again here: a write's retries are the engine's, which knows what a second try must
check first. A failure to reach the server, or an answer cut short, raises
``ConnectError``; whatever the server answers is the caller's to read."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Self
from urllib.parse import quote, unquote, urlencode, urljoin, urlsplit
from xml.etree import ElementTree

import urllib3
from requests.utils import DEFAULT_CA_BUNDLE_PATH

from connectors.base import ConnectError
from connectors.tls import verified_context

DAV = "DAV:"
CALDAV = "urn:ietf:params:xml:ns:caldav"
CARDDAV = "urn:ietf:params:xml:ns:carddav"
MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})
XML = "application/xml; charset=utf-8"
USER_AGENT = "bascule"
PATH_SAFE = "/@:+=,~!$&'()*;"
"""Characters a path keeps as they are on the wire (RFC 3986 sub-delimiters, ``@``, ``:``)."""
_STATUS = re.compile(r"^\S+\s+(\d{3})")
Body = bytes | IO[bytes] | Iterable[bytes] | None
"""What a request sends: bytes; a file, sent from where it stands to its end; or an iterable
of blocks with its length (``len``), sent as it is iterated."""


def tag(namespace: str, name: str) -> str:
    """An element's name as ElementTree spells it."""
    return f"{{{namespace}}}{name}"


@dataclass(frozen=True)
class Resource:
    """One resource of a multi-status answer: its path and the properties found (status
    200)."""

    path: str
    properties: dict[str, ElementTree.Element]
    status: int | None = None
    """The status given for the resource as a whole (a member gone since a sync token:
    404), ``None`` when its properties carry their own."""
    server: str = ""
    """``scheme://host:port`` when its href names a server (in lower case), ``""`` when
    the href is a path."""

    def text(self, namespace: str, name: str) -> str | None:
        element = self.properties.get(tag(namespace, name))
        return element.text if element is not None else None

    def href(self, namespace: str, name: str) -> str | None:
        """The path a property names with a ``DAV:href`` inside it."""
        element = self.properties.get(tag(namespace, name))
        found = element.findtext(tag(DAV, "href")) if element is not None else None
        return unquote(urlsplit(found.strip()).path) if found else None

    def kinds(self) -> set[str]:
        """The resource types it has (``{DAV:}collection``, ``{urn:...caldav}calendar``)."""
        element = self.properties.get(tag(DAV, "resourcetype"))
        return {child.tag for child in element} if element is not None else set()


class Response:
    """An answer as the client's callers read it: its status, reason and headers (looked up
    whatever their case), its body whole (``content``, ``json``: small answers only) or in
    chunks (``iter_content``), or as a file (``raw``: a multi-status answer parsed as it
    arrives). A body cut short raises ``ConnectError`` (``connection_lost``). Closed, the
    connection goes back to the pool if its body was read to the end, else is dropped: what
    is left unread must never be taken for the next answer."""

    def __init__(self, raw: urllib3.BaseHTTPResponse, url: str, where: str) -> None:
        self.raw = raw
        self.url = url
        self.status_code = raw.status
        self.reason = raw.reason or ""
        self.headers = raw.headers
        self._where = where

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def content(self) -> bytes:
        """The whole body (an error body, a PROPPATCH's or an API's answer)."""
        try:
            return self.raw.data
        except urllib3.exceptions.HTTPError as error:
            raise self._cut(error) from None

    def json(self) -> Any:
        return json.loads(self.content)

    def iter_content(self, chunk_size: int) -> Iterator[bytes]:
        """The body of an answer asked for with ``stream``, in chunks as they arrive."""
        try:
            yield from self.raw.stream(chunk_size)
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise self._cut(error) from None

    def close(self) -> None:
        if not self.raw.isclosed():
            self.raw.close()
        self.raw.release_conn()

    def _cut(self, error: Exception) -> ConnectError:
        return ConnectError(f"{self.url}: {error}", code="connection_lost", where=self._where)


class DavClient:
    """One account on one DAV server. Thread-safe: each request takes a connection of the
    pool, ``connections`` of them kept open (at least 10), more opened when needed."""

    def __init__(self, base_url: str, login: str, password: str, *, ca_file: str | None,
                 timeout: float, connections: int = 1) -> None:
        parts = urlsplit(base_url)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.base_path = unquote(parts.path) or "/"
        self.where = parts.netloc
        self.login = login
        self.timeout = urllib3.Timeout(connect=timeout, read=timeout)
        self._headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate",
                         **urllib3.make_headers(basic_auth=f"{login}:{password}")}
        options: dict[str, Any] = {"maxsize": max(connections, 10), "block": False,
                                   "retries": False}
        if parts.scheme == "https":
            options |= {"ssl_context": verified_context(ca_file or DEFAULT_CA_BUNDLE_PATH),
                        "cert_reqs": "CERT_REQUIRED"}
        self.pool = urllib3.connection_from_url(self.origin, **options)

    def url(self, path: str) -> str:
        return self.origin + quote(path, safe=PATH_SAFE)

    def request(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                body: Body = None, stream: bool = False,
                query: dict[str, str] | None = None) -> Response:
        """The server's answer, its body read whole unless ``stream``. Redirects are
        followed for bodies that can be sent again (none, or bytes); a login refused raises
        ``ConnectError`` (``auth_failed``). ``query``: the URL's query, each value
        percent-encoded. A file is sent with its length, from where it stands; an iterable
        must have its ``Content-Length`` among ``headers``."""
        url = self.url(path) + (f"?{urlencode(query)}" if query else "")
        sent = {**self._headers, **(headers or {})}
        if hasattr(body, "read") and "Content-Length" not in sent:
            sent["Content-Length"] = str(_remaining(body))  # type: ignore[arg-type]
        for _ in range(MAX_REDIRECTS + 1):
            response = self._send(method, url, sent, body, stream)
            location = response.headers.get("Location")
            if response.status_code not in REDIRECTS or not location or \
                    not (body is None or isinstance(body, bytes)):
                break
            response.close()
            following = urljoin(url, location)
            parts = urlsplit(following)
            if f"{parts.scheme}://{parts.netloc}" != self.origin:
                raise ConnectError(f"{url} redirects to another server: {following}",
                                   code="unreachable", where=self.where)
            url = following
        if response.status_code == 401:
            response.close()
            raise ConnectError(f"{method} {url}: 401", code="auth_failed", where=self.where)
        return response

    def propfind(self, path: str, depth: str, properties: list[tuple[str, str]]
                 ) -> Iterator[Resource]:
        """Each resource the server answers for, read as the answer arrives; nothing for a
        path that does not exist."""
        declared, asked = _asked(properties)
        body = (f'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"{declared}>'
                f"<D:prop>{asked}</D:prop></D:propfind>").encode()
        return self._multistatus("PROPFIND", path, depth, body)

    def calendar_query(self, path: str, component: str, properties: list[tuple[str, str]]
                       ) -> Iterator[Resource]:
        """The calendar objects of a calendar that hold a ``component`` (RFC 4791 7.8: a
        ``calendar-query`` REPORT with a ``comp-filter``), read as the answer arrives."""
        declared, asked = _asked(properties)
        body = (f'<?xml version="1.0" encoding="utf-8"?><C:calendar-query xmlns:D="DAV:" '
                f'xmlns:C="{CALDAV}"{declared}><D:prop>{asked}</D:prop><C:filter>'
                f'<C:comp-filter name="VCALENDAR"><C:comp-filter name="{component}"/>'
                f"</C:comp-filter></C:filter></C:calendar-query>").encode()
        return self._multistatus("REPORT", path, "1", body)

    def _multistatus(self, method: str, path: str, depth: str, body: bytes
                     ) -> Iterator[Resource]:
        response = self.request(method, path, headers={"Depth": depth, "Content-Type": XML},
                                body=body, stream=True)
        with response:
            if response.status_code in (404, 410):
                return
            if response.status_code != 207:
                raise DavRefused(method, path, response)
            yield from Multistatus(response)

    def report(self, path: str, body: bytes, depth: str = "0") -> Multistatus:
        """A REPORT's multi-status answer, to be read as it arrives (and closed); raises
        ``DavRefused`` for any other."""
        response = self.request("REPORT", path, headers={"Depth": depth, "Content-Type": XML},
                                body=body, stream=True)
        if response.status_code != 207:
            with response:
                raise DavRefused("REPORT", path, response)
        return Multistatus(response)

    def close(self) -> None:
        self.pool.close()

    def _send(self, method: str, url: str, headers: dict[str, str], body: Body,
              stream: bool) -> Response:
        try:
            raw = self.pool.urlopen(method, url[len(self.origin):], body=body,
                                    headers=headers, redirect=False, timeout=self.timeout,
                                    preload_content=not stream, assert_same_host=False)
        except urllib3.exceptions.SSLError as error:
            raise ConnectError(str(error), code="tls_failed", where=self.where) from None
        except urllib3.exceptions.ConnectTimeoutError as error:  # refused, or no address
            raise ConnectError(str(error), code="unreachable", where=self.where) from None
        except urllib3.exceptions.TimeoutError as error:
            raise ConnectError(str(error), code="timeout", where=self.where) from None
        except (urllib3.exceptions.HTTPError, OSError) as error:  # dropped, or cut short
            raise ConnectError(str(error), code="connection_lost", where=self.where
                               ) from None
        return Response(raw, url, self.where)


def _remaining(body: IO[bytes]) -> int:
    """The bytes a file holds from where it stands to its end."""
    here = body.tell()
    end = body.seek(0, os.SEEK_END)
    body.seek(here)
    return end - here


class DavRefused(Exception):
    """An answer other than the one a request needs: its method, path, status and the
    precondition the server named (RFC 4918 ``DAV:error``), if any, and the resource that
    precondition names (``holder``: the one holding a UID already, RFC 4791 5.3.2.1)."""

    def __init__(self, method: str, path: str, response: Response) -> None:
        self.status = response.status_code
        self.condition, self.holder = precondition(response)
        super().__init__(f"{method} {path}: {response.status_code} {response.reason}"
                         + (f" ({self.condition})" if self.condition else ""))


def _asked(properties: list[tuple[str, str]]) -> tuple[str, str]:
    """The namespace declarations and the elements that ask for ``properties``."""
    namespaces = {namespace: f"n{number}" for number, namespace
                  in enumerate(dict.fromkeys(ns for ns, _ in properties))}
    declared = "".join(f' xmlns:{prefix}="{namespace}"'
                       for namespace, prefix in namespaces.items())
    return declared, "".join(f"<{namespaces[ns]}:{name}/>" for ns, name in properties)


def precondition(response: Response) -> tuple[str, str]:
    """The precondition a refusal names (``valid-calendar-data``) and the first ``DAV:href``
    inside it, each ``""`` when absent: an error body is small, and read whole."""
    if "xml" not in response.headers.get("Content-Type", ""):
        return "", ""
    try:
        root = ElementTree.fromstring(response.content)
    except ElementTree.ParseError:
        return "", ""
    if root.tag != tag(DAV, "error") or not len(root):
        return "", ""
    href = root[0].find(tag(DAV, "href"))
    return root[0].tag.rpartition("}")[2], (href.text or "").strip() if href is not None else ""


class Multistatus:
    """A multi-status answer (RFC 4918, 13) read as it arrives: each resource in turn,
    never the whole answer at once; then ``sync_token``, the token a sync-collection
    answer ends with (RFC 6578, 3.2)."""

    def __init__(self, response: Response) -> None:
        self.response = response
        self.sync_token: str | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.response.close()

    def __iter__(self) -> Iterator[Resource]:
        try:
            yield from self._resources()
        except (urllib3.exceptions.HTTPError, OSError) as error:  # the answer cut short
            raise ConnectError(f"{self.response.url}: {error}", code="connection_lost"
                               ) from None

    def _resources(self) -> Iterator[Resource]:
        self.response.raw.decode_content = True
        depth = 0
        for event, element in ElementTree.iterparse(self.response.raw,
                                                    events=("start", "end")):
            if event == "start":
                depth += 1
                continue
            depth -= 1
            if depth == 1 and element.tag == tag(DAV, "sync-token"):
                self.sync_token = (element.text or "").strip() or None
            if depth != 1 or element.tag != tag(DAV, "response"):
                continue
            resource = _resource(element)
            element.clear()
            if resource is not None:
                yield resource


def _resource(element: ElementTree.Element) -> Resource | None:
    """One ``DAV:response``, or ``None`` when it names no href."""
    href = (element.findtext(tag(DAV, "href")) or "").strip()
    if not href:
        return None
    found: dict[str, ElementTree.Element] = {}
    for propstat in element.findall(tag(DAV, "propstat")):
        status = _STATUS.match((propstat.findtext(tag(DAV, "status")) or "").strip())
        held = propstat.find(tag(DAV, "prop"))
        if status is not None and status.group(1) == "200" and held is not None:
            found.update((prop.tag, prop) for prop in held)
    whole = _STATUS.match((element.findtext(tag(DAV, "status")) or "").strip())
    parts = urlsplit(href)
    server = f"{parts.scheme}://{parts.netloc}".lower() if parts.netloc else ""
    return Resource(unquote(parts.path), found, int(whole.group(1)) if whole else None, server)
