"""CalDAV and CardDAV servers as targets of calendars and contacts: the batch section and
the registration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field

from connectors.base import ConnectError
from connectors.config import Section, is_loopback, refused
from connectors.registry import Account, Capabilities, Connector, Context, register


def _dav_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise refused("batch_not_dav_url")
    return value if parts.path else value + "/"


DavUrl = Annotated[str, AfterValidator(_dav_url)]
NAME_RULES = (
    ("resource names: characters other than ASCII letters, digits and ._~@+=- replaced, a "
     "hash added; display names kept but for characters XML cannot carry"),
    ("noms de ressources : caractères autres que lettres ASCII, chiffres et ._~@+=- "
     "remplacés, une empreinte ajoutée ; noms affichés gardés, sauf les caractères que XML "
     "ne peut porter"),
)


class DavConfig(Section):
    type: Literal["dav"]
    url: DavUrl = Field(
        description="Where the users' calendars and address books are found: the server's "
        "address (https://dav.ville.example/), from which each user's principal and homes "
        "are discovered (RFC 6764)."
    )
    ca_file: Path | None = Field(
        None, description="A CA to trust besides the system's (internal CA). TLS is always "
        "verified."
    )
    connections: int = Field(
        4, ge=1, le=16, description="Requests at once per calendar or address book, and "
        "calendars or address books of one account written at once."
    )
    timeout: float = Field(60.0, gt=0)
    max_item_size: int | None = Field(
        None, gt=0, description="The largest calendar object or contact to write, in bytes; "
        "larger ones are refused, each a line in the report (Radicale parses an object in "
        "time that grows with the square of its size: 38 s for 8 MiB here)."
    )


def _open_sink(context: Context, account: Account, workload: str) -> Any:
    from connectors.dav.client import DavClient
    from connectors.dav.sink import DavSink

    config: DavConfig = account.config
    if not account.secret_ref:
        raise ConnectError(code="no_secret", params={"login": account.login})
    password = context.secret(account.secret_ref, users_table=True)
    client = DavClient(config.url, account.login, password,
                       ca_file=str(context.path(config.ca_file)) if config.ca_file else None,
                       timeout=config.timeout, connections=config.connections)
    return DavSink(client, workload, max_item_size=config.max_item_size,
                   parallel_writes=config.connections)


def _warnings(config: DavConfig, side: str) -> list[tuple[str, dict[str, Any]]]:
    host = urlsplit(config.url).hostname or ""
    if config.url.startswith("http://") and not is_loopback(host):
        return [("cleartext_to_network", {"side": side, "host": host})]
    return []


register(Connector(
    type="dav", config=DavConfig,
    summary=("A CalDAV and CardDAV server (BlueMind, SOGo, Nextcloud, Cyrus, Radicale...)",
             "Un serveur CalDAV et CardDAV (BlueMind, SOGo, Nextcloud, Cyrus, Radicale...)"),
    writes=frozenset({"calendar", "contacts", "tasks"}),
    open_sink=_open_sink,
    # The server stores objects rewritten (refolded, reordered): compared by meaning.
    capabilities=Capabilities(
        keeps_bytes=False, keeps_mtime=False, deletes=True, versions=True,
        name_rules=NAME_RULES),
    example='''url = "https://dav.ville.example/"  # discovery starts here / découverte depuis ici
# ca_file = "ca-interne.pem"  # a CA to trust besides the system's / une AC à approuver
connections = 4               # per account / par compte
''',
    account_slots=lambda config: config.connections,
    largest_item=lambda config: config.max_item_size,
    warnings=_warnings,
))
