"""CalDAV and CardDAV servers as sources and targets of calendars and contacts: the batch
section and the registration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field

from connectors.base import ConnectError
from connectors.config import Section, cleartext_warnings, refused
from connectors.dav import profiles
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
        None, description="The CA to trust instead of the system's (an internal PKI): the "
        "server's certificate must chain to it. TLS is always verified."
    )
    connections: int = Field(
        4, ge=1, le=16, description="Requests at once per calendar or address book, and "
        "calendars or address books of one account written at once."
    )
    profile: Literal[tuple(profiles.PROFILES)] = Field(  # type: ignore[valid-type]
        "generic", description="Which server this is, for what bascule knows of it: "
        "generic, cyrus, radicale, xandikos, bluemind. generic takes the server to schedule and to "
        "honour SCHEDULE-AGENT=CLIENT, as RFC 6638 requires."
    )
    scheduling: Literal[profiles.SCHEDULING] = Field(  # type: ignore[valid-type]
        profiles.PROTECT, description="How the server is kept from mailing the attendees "
        "of the events written: protect (SCHEDULE-AGENT=CLIENT on the organiser and every "
        "attendee; refused for a server known to ignore it), drop_attendees (events "
        "written without their attendees, each in the report), server_sends (the "
        "server sends its invitations: only when that is wanted)."
    )
    timeout: float = Field(60.0, gt=0)
    max_item_size: int | None = Field(
        None, gt=0, description="The largest calendar object or contact to write, in bytes; "
        "larger ones are refused, each a line in the report (Radicale parses an object in "
        "time that grows with the square of its size: 38 s for 8 MiB here)."
    )


def dav_client(context: Context, account: Account, url: str | None = None) -> Any:
    """A client signed in as the account, with its secret from the users table, at ``url``
    (the batch's, when not given): the WebDAV file connector's too."""
    from connectors.dav.client import DavClient

    config = account.config
    if not account.secret_ref:
        raise ConnectError(code="no_secret", params={"login": account.login})
    password = context.secret(account.secret_ref, users_table=True)
    return DavClient(url or config.url, account.login, password,
                     ca_file=str(context.path(config.ca_file)) if config.ca_file else None,
                     timeout=config.timeout, connections=config.connections)


def _open_sink(context: Context, account: Account, workload: str) -> Any:
    from connectors.dav.sink import DavSink

    config: DavConfig = account.config
    for code, params in _refusals(config, workload):
        raise ConnectError(code=code, params={"workload": workload, **params})
    profile = profiles.PROFILES[config.profile]
    return DavSink(dav_client(context, account), workload,
                   rewrite=profiles.rewrite(profile, config.scheduling),
                   standalone_orphans=profile.requires_master,
                   max_item_size=config.max_item_size,
                   parallel_writes=min(config.connections,
                                       profile.write_lanes or config.connections),
                   vcard_versions=profile.vcard_versions)


def _open_source(context: Context, account: Account, workload: str) -> Any:
    from connectors.dav.source import DavSource

    return DavSource(dav_client(context, account))


def _warnings(config: DavConfig, side: str) -> list[tuple[str, dict[str, Any]]]:
    return [*profiles.warnings(profiles.PROFILES[config.profile], config.scheduling),
            *cleartext_warnings(config.url, side)]


def _refusals(config: DavConfig, workload: str) -> list[tuple[str, dict[str, Any]]]:
    return profiles.refusals(profiles.PROFILES[config.profile], config.scheduling, workload)


register(Connector(
    type="dav", config=DavConfig,
    summary=("A CalDAV and CardDAV server (BlueMind, SOGo, Nextcloud, Cyrus, Radicale...)",
             "Un serveur CalDAV et CardDAV (BlueMind, SOGo, Nextcloud, Cyrus, Radicale...)"),
    reads=frozenset({"calendar", "contacts"}),
    writes=frozenset({"calendar", "contacts", "tasks"}),
    open_source=_open_source, open_sink=_open_sink,
    # The server stores objects rewritten (refolded, reordered): compared by meaning.
    capabilities=Capabilities(
        keeps_bytes=False, keeps_mtime=False, deletes=True, versions=True, delta=True,
        name_rules=NAME_RULES),
    example='''url = "https://dav.ville.example/"  # discovery starts here / découverte depuis ici
# ca_file = "ca-interne.pem"  # trusted instead of the system's CAs / au lieu des AC du système
connections = 4               # per account / par compte
profile = "generic"           # generic, cyrus, radicale, xandikos, bluemind
scheduling = "protect"        # protect, drop_attendees, server_sends: no invitation sent /
                              # aucune invitation envoyée (README)
''',
    account_slots=lambda config: config.connections,
    largest_item=lambda config: config.max_item_size,
    warnings=_warnings,
    refusals=_refusals,
    advised_items=lambda config, workload: (
        (limit, config.profile) if (limit := profiles.advised_items(
            profiles.PROFILES[config.profile], workload)) else None),
))
