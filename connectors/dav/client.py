"""WebDAV requests as CalDAV and CardDAV need them, over one requests session: PROPFIND
answers read as they arrive, collections made, resources written, read and deleted.

Paths are handled percent-decoded (``/dav/calendars/user/amelie@ville.fr/``) and encoded
only on the wire. TLS is verified, with the batch's CA file passed on every request:
requests prefers the environment's ``REQUESTS_CA_BUNDLE`` to a session's own setting.
Redirects are followed here, within the same server and with the same method (requests
would turn a redirected PROPFIND into a GET, and send the login to any host a redirect
names). A failure to reach the server raises ``ConnectError``; whatever the server
answers is the caller's to read."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Self
from urllib.parse import quote, unquote, urlencode, urljoin, urlsplit
from xml.etree import ElementTree

import requests
import urllib3

from connectors.base import ConnectError

DAV = "DAV:"
CALDAV = "urn:ietf:params:xml:ns:caldav"
CARDDAV = "urn:ietf:params:xml:ns:carddav"
MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})
XML = "application/xml; charset=utf-8"
PATH_SAFE = "/@:+=,~!$&'()*;"
"""Characters a path keeps as they are on the wire (RFC 3986 sub-delimiters, ``@``, ``:``)."""
_STATUS = re.compile(r"^\S+\s+(\d{3})")


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


class DavClient:
    """One account on one DAV server."""

    def __init__(self, base_url: str, login: str, password: str, *, ca_file: str | None,
                 timeout: float, connections: int = 1) -> None:
        parts = urlsplit(base_url)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.base_path = unquote(parts.path) or "/"
        self.where = parts.netloc
        self.login = login
        self.timeout = timeout
        self.verify: str | bool = ca_file or True
        self.session = requests.Session()
        self.session.auth = (login, password)
        self.session.trust_env = False  # no proxy, no .netrc login: only what the batch says
        pool = requests.adapters.HTTPAdapter(pool_maxsize=max(connections, 10))
        self.session.mount("https://", pool)
        self.session.mount("http://", pool)

    def url(self, path: str) -> str:
        return self.origin + quote(path, safe=PATH_SAFE)

    def request(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                body: bytes | IO[bytes] | None = None, stream: bool = False,
                query: dict[str, str] | None = None) -> requests.Response:
        """The server's answer. Redirects are followed for bodies that can be sent again
        (none, or bytes); a login refused raises ``ConnectError`` (``auth_failed``).
        ``query``: the URL's query, each value percent-encoded."""
        url = self.url(path) + (f"?{urlencode(query)}" if query else "")
        for _ in range(MAX_REDIRECTS + 1):
            response = self._send(method, url, headers, body, stream)
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
        self.session.close()

    def _send(self, method: str, url: str, headers: dict[str, str] | None,
              body: bytes | IO[bytes] | None, stream: bool) -> requests.Response:
        try:
            return self.session.request(method, url, headers=headers, data=body, stream=stream,
                                        timeout=self.timeout, verify=self.verify,
                                        allow_redirects=False)
        except requests.exceptions.SSLError as error:
            raise ConnectError(str(error), code="tls_failed", where=self.where) from None
        except requests.exceptions.ConnectTimeout as error:
            raise ConnectError(str(error), code="unreachable", where=self.where) from None
        except requests.exceptions.Timeout as error:
            raise ConnectError(str(error), code="timeout", where=self.where) from None
        except requests.exceptions.ConnectionError as error:
            refused = "NewConnectionError" in repr(error) or "NameResolution" in repr(error)
            raise ConnectError(str(error), code="unreachable" if refused else "connection_lost",
                               where=self.where) from None
        except requests.exceptions.ChunkedEncodingError as error:  # the answer's body cut
            raise ConnectError(str(error), code="connection_lost", where=self.where) from None


class DavRefused(Exception):
    """An answer other than the one a request needs: its method, path, status and the
    precondition the server named (RFC 4918 ``DAV:error``), if any, and the resource that
    precondition names (``holder``: the one holding a UID already, RFC 4791 5.3.2.1)."""

    def __init__(self, method: str, path: str, response: requests.Response) -> None:
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


def precondition(response: requests.Response) -> tuple[str, str]:
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

    def __init__(self, response: requests.Response) -> None:
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
