"""WebDAV file stores as sources and targets of drives: the batch section and the
registration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

from pydantic import AfterValidator, Field, model_validator

from connectors.base import ConnectError
from connectors.config import Section, cleartext_warnings, refused
from connectors.registry import Account, Capabilities, Connector, Context, register
from connectors.webdav import profiles
from mappings.names import RULES

LOGIN = "{login}"
FILES = "/remote.php/dav/files/"


def _space_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise refused("batch_not_dav_url")
    return value if value.endswith("/") else value + "/"


SpaceUrl = Annotated[str, AfterValidator(_space_url)]
NAME_RULES = (
    ("the profile's or the batch's rules (names = posix, windows, nextcloud, "
     "nextcloud-windows): refused characters replaced by '_', '_' added to reserved names and "
     "refused endings, names too long cut with a hash; a name already taken kept apart with "
     "'~' and a hash"),
    ("les règles du profil ou du lot (names = posix, windows, nextcloud, nextcloud-windows) : "
     "caractères refusés remplacés par « _ », « _ » ajouté aux noms réservés et aux fins "
     "refusées, noms trop longs coupés avec une empreinte ; un nom déjà pris distingué par "
     "« ~ » et une empreinte"),
)


class WebDavConfig(Section):
    type: Literal["webdav"]
    url: SpaceUrl = Field(
        description="Each user's space: its address, where {login} stands for the user's "
        "login (https://fichiers.ville.example/dav/{login}/). Drives are the folders at its "
        "top, as a target and as a source."
    )
    ca_file: Path | None = Field(
        None, description="The CA to trust instead of the system's (an internal PKI): the "
        "server's certificate must chain to it. TLS is always verified."
    )
    connections: int = Field(
        4, ge=1, le=16, description="As a target: files written at once per drive."
    )
    profile: Literal[tuple(profiles.PROFILES)] = Field(  # type: ignore[valid-type]
        "generic", description="As a target: which server this is, for what bascule knows "
        "of it: generic, apache, nextcloud (url: https://host/remote.php/dav/files/{login}/), "
        "xwiki (refused: XWiki's WebDAV makes files page attachments)."
    )
    names: Literal[tuple(RULES)] | None = Field(  # type: ignore[valid-type]
        None, description="As a target: the names the space takes: posix, windows (a space "
        "Windows clients sync), nextcloud, nextcloud-windows (Nextcloud's \"Windows "
        "compatible filenames\"); default: the profile's. Other names are renamed, each "
        "rename a line in the report."
    )
    apply_sharing: bool = Field(
        False, description="With profile = \"nextcloud\" only: after each run, apply each "
        "space's sharing (the CSV of work/sharing/) as Nextcloud shares through its share API: "
        "users mapped to a login, anonymous links with their expiry; what Nextcloud cannot say "
        "(groups, links for the organisation, guests) is a line of the report."
    )
    timeout: float = Field(60.0, gt=0)
    max_item_size: int | None = Field(
        None, gt=0, description="The largest file the server takes, in bytes; larger ones "
        "are refused before a byte is sent, each a line in the report."
    )

    @model_validator(mode="after")
    def _nextcloud_space(self) -> WebDavConfig:
        """Nextcloud's chunked uploads go beside the user's files: its URL must say where."""
        if self.profile == "nextcloud" and FILES not in urlsplit(self.url).path:
            raise refused("batch_nextcloud_url")
        if self.apply_sharing and self.profile != "nextcloud":
            raise refused("batch_apply_sharing_profile", profile=self.profile)
        return self


def space_url(config: WebDavConfig, login: str) -> str:
    """The account's space: the batch's URL with its login in place of ``{login}``."""
    return config.url.replace(LOGIN, quote(login, safe="@"))


def _open_sink(context: Context, account: Account, workload: str) -> Any:
    from connectors.dav.connector import dav_client
    from connectors.webdav.sink import WebDavSink

    config: WebDavConfig = account.config
    for code, params in _refusals(config, workload):
        raise ConnectError(code=code, params={"workload": workload, **params})
    profile = profiles.PROFILES[config.profile]
    return WebDavSink(dav_client(context, account, space_url(config, account.login)),
                      max_item_size=config.max_item_size, sets_mtime=profile.sets_mtime,
                      parallel_writes=config.connections, whole_puts=profile.whole_puts,
                      oc_headers=profile.oc_headers, chunk_size=profile.chunk_size,
                      names=RULES[config.names] if config.names else profile.names)


def _open_source(context: Context, account: Account, workload: str) -> Any:
    from connectors.dav.connector import dav_client
    from connectors.webdav.source import WebDavSource

    return WebDavSource(dav_client(context, account, space_url(account.config, account.login)))


def _open_sharing(context: Context, account: Account, workload: str) -> Any:
    """Nextcloud's share API for the account's space, when the section asks for it."""
    from connectors.dav.connector import dav_client
    from connectors.webdav.shares import NextcloudShares

    config: WebDavConfig = account.config
    if not config.apply_sharing:
        return None
    return NextcloudShares(dav_client(context, account, space_url(config, account.login)))


def _refusals(config: WebDavConfig, workload: str) -> list[tuple[str, dict[str, Any]]]:
    return profiles.refusals(profiles.PROFILES[config.profile], workload)


# No ``principals``: a WebDAV server does not list its users' spaces; the users table names
# them.
register(Connector(
    type="webdav", config=WebDavConfig,
    summary=("A WebDAV file store: each user's files in a space of their own",
             ("Un stockage de fichiers WebDAV : les fichiers de chaque utilisateur dans son "
             "espace")),
    reads=frozenset({"files"}),
    writes=frozenset({"files"}),
    open_source=_open_source, open_sink=_open_sink,
    open_sharing=_open_sharing,
    capabilities=Capabilities(keeps_bytes=True, keeps_mtime=False, deletes=True,
                              versions=True, name_rules=NAME_RULES),
    example='''url = "https://fichiers.ville.example/dav/{login}/"  # each user's space /
                                                   # l'espace de chaque utilisateur
# ca_file = "ca-interne.pem"  # trusted instead of the system's CAs / au lieu des AC du système
connections = 4               # files at once per drive / fichiers à la fois par espace
profile = "generic"           # generic, apache, nextcloud, xwiki (refused / refusé)
# apply_sharing = true        # nextcloud: sharing applied through its share API /
                              # partages appliqués par son API de partage
''',
    account_slots=lambda config: config.connections,
    largest_item=lambda config: config.max_item_size,
    warnings=lambda config, side: cleartext_warnings(config.url, side),
    refusals=_refusals,
))
