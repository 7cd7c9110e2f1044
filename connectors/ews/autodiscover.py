"""The EWS address of a mailbox, asked of Exchange's Autodiscover service (POX).

Pages of Microsoft's reference (learn.microsoft.com/exchange/client-developer) this follows:

- ``exchange-web-services/autodiscover-for-exchange``: a client tries, for the mailbox's
  domain, ``https://<domain>/autodiscover/autodiscover.xml`` then
  ``https://autodiscover.<domain>/autodiscover/autodiscover.xml`` (an ``http://`` address
  answering a redirect, and the ``_autodiscover._tcp`` SRV record, are the last resorts of
  clients outside the organisation; they are not tried here: an address given in the batch
  covers them, and a plain-HTTP step is one a man in the middle can answer);
- ``web-service-reference/pox-autodiscover-request-for-exchange``: a POST of an
  ``Autodiscover``/``Request`` naming ``EMailAddress`` and the
  ``AcceptableResponseSchema``, signed in as for EWS;
- ``web-service-reference/pox-autodiscover-response-for-exchange``: ``Account``/``Action``
  ``settings`` with a ``Protocol`` per kind (``EXCH`` inside the organisation, ``EXPR``
  outside), each with its ``EwsUrl``; ``redirectAddr`` (ask again about ``RedirectAddr``) or
  ``redirectUrl`` (ask ``RedirectUrl``), at most ten times; an ``Error`` with its
  ``ErrorCode`` and ``Message``.

The address taken is ``EXCH``'s (bascule runs inside the organisation), else ``EXPR``'s, and
only an ``https`` one: TLS is verified with the batch's CA as every request is.
"""

from __future__ import annotations

from collections.abc import Callable
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import requests

from connectors.base import ConnectError

REQUEST_SCHEMA = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
RESPONSE_SCHEMA = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
ERROR_SCHEMA = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
MAX_REDIRECTS = 10
PREFERRED = ("EXCH", "EXPR")


def candidates(address: str) -> list[str]:
    """The Autodiscover addresses to try for a mailbox, in the reference's order; none for
    a login that is no address (``DOMAIN\\name``)."""
    local, at, domain = address.strip().lower().rpartition("@")
    if not (local and at and domain):
        return []
    return [f"https://{domain}/autodiscover/autodiscover.xml",
            f"https://autodiscover.{domain}/autodiscover/autodiscover.xml"]


def _request(address: str) -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="{REQUEST_SCHEMA}">'
            f"<Request><EMailAddress>{escape(address)}</EMailAddress>"
            f"<AcceptableResponseSchema>{RESPONSE_SCHEMA}</AcceptableResponseSchema>"
            "</Request></Autodiscover>").encode()


def discover(address: str, urls: list[str], post: Callable[[str, bytes], requests.Response]
             ) -> str:
    """The EWS address for ``address``, asked of each of ``urls`` in turn until one answers;
    ``post(url, body)`` sends a request signed in. Raises ``ConnectError``
    (``ews_autodiscover_failed``) naming what each address answered."""
    tried: list[str] = []
    queue = list(urls)
    hops = 0
    while queue:
        url = queue.pop(0)
        if not url.startswith("https://"):
            tried.append(f"{url}: not https")
            continue
        try:
            answer = post(url, _request(address))
        except requests.exceptions.SSLError as error:
            raise ConnectError(f"{url}: {error}", code="tls_failed", where=url) from None
        except requests.RequestException as error:
            tried.append(f"{url}: {type(error).__name__}")
            continue
        if answer.status_code == 401:
            raise ConnectError(f"{url}: HTTP 401", code="ews_login_refused", where=url,
                               params={"login": address})
        if answer.status_code != 200:
            tried.append(f"{url}: HTTP {answer.status_code}")
            continue
        try:
            root = ElementTree.fromstring(answer.content)
        except ElementTree.ParseError:
            tried.append(f"{url}: not XML")
            continue
        error = root.find(f".//{{{ERROR_SCHEMA}}}Error")
        if error is not None:
            tried.append(f"{url}: {error.findtext(f'{{{ERROR_SCHEMA}}}ErrorCode')} "
                         f"{error.findtext(f'{{{ERROR_SCHEMA}}}Message')}")
            continue
        account = root.find(f".//{{{RESPONSE_SCHEMA}}}Account")
        action = account.findtext(f"{{{RESPONSE_SCHEMA}}}Action") if account is not None \
            else None
        if action in ("redirectAddr", "redirectUrl") and hops < MAX_REDIRECTS:
            hops += 1
            target = (account.findtext(f"{{{RESPONSE_SCHEMA}}}RedirectAddr")
                      or account.findtext(f"{{{RESPONSE_SCHEMA}}}RedirectUrl") or "").strip()
            if action == "redirectAddr":
                address = target
                queue = candidates(target) if "@" in target else []
                queue = [url, *queue]
            else:
                queue = [target]
            continue
        found = _ews_url(account)
        if found:
            return found
        tried.append(f"{url}: no EwsUrl")
    raise ConnectError("; ".join(tried), code="ews_autodiscover_failed",
                       params={"address": address, "tried": "; ".join(tried)})


def _ews_url(account: ElementTree.Element | None) -> str | None:
    if account is None:
        return None
    by_kind = {(protocol.findtext(f"{{{RESPONSE_SCHEMA}}}Type") or ""):
               (protocol.findtext(f"{{{RESPONSE_SCHEMA}}}EwsUrl") or "").strip()
               for protocol in account.iter(f"{{{RESPONSE_SCHEMA}}}Protocol")}
    for kind in PREFERRED:
        if by_kind.get(kind, "").startswith("https://"):
            return by_kind[kind]
    return None
