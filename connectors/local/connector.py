"""Local stores: Maildir, mbox and .eml exports (a source; Maildir is a target too), and the
local folder that receives calendars, contacts and files. Their batch sections and their
registration."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from connectors.base import ConnectError
from connectors.config import Section
from connectors.registry import Account, Capabilities, Connector, Context, register
from mappings.names import RULES

STORE_FOLDER_HINT = "Folder holding one store per user, named by the user's login in users.csv."


class LocalStoreConfig(Section):
    path: Path = Field(description=STORE_FOLDER_HINT)


class MaildirConfig(LocalStoreConfig):
    type: Literal["maildir"]
    max_message_size: int | None = Field(
        None, gt=0, description="As a target: the largest message to write, in bytes."
    )


class MboxConfig(LocalStoreConfig):
    type: Literal["mbox"]


class EmlConfig(LocalStoreConfig):
    type: Literal["eml"]


class FolderConfig(Section):
    type: Literal["folder"]
    path: Path = Field(
        Path("documents"),
        description="Local folder receiving calendars (.ics), contacts (.vcf) and files, one "
        "sub-folder per target user and workload; relative to the batch file.",
    )
    names: Literal["posix", "windows"] = Field(
        "posix", description="The names the folder takes: posix (a Linux file system), or "
        "windows (a share Windows clients use: Windows's refused characters, reserved names "
        "and endings renamed too)."
    )


def _inside(context: Context, root_path: Path, login: str) -> Path:
    """``root/login``, refused when the login would leave the root. Not resolved: a store
    that is a link (to another user's store, say) reaches the source as a link, which
    refuses it."""
    root = context.path(root_path).resolve()
    place = root / login
    if login in ("", ".", "..") or place.parent != root:
        raise ConnectError(code="unsafe_name", params={"name": login, "root": str(root)})
    return place


def _existing(store: Path, login: str) -> Path:
    if not os.path.lexists(store):
        raise ConnectError(code="no_store", params={"login": login, "path": str(store)})
    return store


def _open_maildir_source(context: Context, account: Account, workload: str) -> Any:
    from connectors.local.maildir import MaildirSource

    return MaildirSource(_existing(_inside(context, account.config.path, account.login),
                                   account.login))


def _open_maildir_sink(context: Context, account: Account, workload: str) -> Any:
    from connectors.local.maildir import MaildirSink

    return MaildirSink(_inside(context, account.config.path, account.login))


def _open_mbox_source(context: Context, account: Account, workload: str) -> Any:
    from connectors.local.mbox import MboxSource

    store = _inside(context, account.config.path, account.login)
    if not store.exists() and store.with_suffix(".mbox").is_file():
        store = store.with_suffix(".mbox")
    return MboxSource(_existing(store, account.login))


def _open_eml_source(context: Context, account: Account, workload: str) -> Any:
    from connectors.local.eml import EmlSource

    return EmlSource(_existing(_inside(context, account.config.path, account.login),
                               account.login))


def _open_folder_source(context: Context, account: Account, workload: str) -> Any:
    from connectors.local.documents import FolderSource

    place = _existing(_inside(context, account.config.path, account.login), account.login)
    return FolderSource(place / workload, workload)


def _open_folder_sink(context: Context, account: Account, workload: str) -> Any:
    from connectors.local.documents import FolderSink

    place = _inside(context, account.config.path, account.login)
    if place.resolve().parent != place.parent:  # a link to elsewhere under the root
        raise ConnectError(code="unsafe_name", params={"name": account.login,
                                                        "root": str(place.parent)})
    return FolderSink(place / workload, RULES[account.config.names])


def _principals(context: Context, config: LocalStoreConfig) -> list[str]:
    """The stores present under the folder: one per login (an mbox file may end in .mbox)."""
    root = context.path(config.path)
    if not root.is_dir():
        return []
    return [entry.name.removesuffix(".mbox") if entry.is_file() else entry.name
            for entry in sorted(root.iterdir()) if not entry.name.startswith(".")]


def _slots(config: Any) -> int:
    return 2


FOLDER_NAME_RULES = (
    ("NUL, '/', names longer than 255 bytes and names ending in .bascule-part changed (with "
     "names = \"windows\": Windows's characters, reserved names and endings too); '.' and "
     "'..' refused"),
    ("NUL, « / », noms de plus de 255 octets et noms finissant par .bascule-part changés "
     "(avec names = « windows » : les caractères, noms réservés et fins refusés par "
     "Windows aussi) ; « . » et « .. » refusés"),
)

STORE_EXAMPLE = '''path = "exports"              # one store per login / un dossier par identifiant
'''

register(Connector(
    type="maildir", config=MaildirConfig,
    summary=("Maildir folders, one per user (Dovecot's layout)",
             "Dossiers Maildir, un par utilisateur (disposition de Dovecot)"),
    reads=frozenset({"mail"}), writes=frozenset({"mail"}),
    open_source=_open_maildir_source, open_sink=_open_maildir_sink,
    capabilities=Capabilities(keeps_bytes=True, keeps_internal_date_offset=False, delta=True,
                              name_rules=("'.' and '/' in folder names replaced",
                                          "'.' et '/' remplacés dans les noms de dossiers")),
    example=STORE_EXAMPLE, account_slots=_slots, principals=_principals,
    largest_item=lambda config: config.max_message_size,
))
register(Connector(
    type="mbox", config=MboxConfig,
    summary=("mbox files, one per user or a folder of them per user",
             "Fichiers mbox, un par utilisateur ou un dossier de fichiers mbox par utilisateur"),
    reads=frozenset({"mail"}), open_source=_open_mbox_source,
    capabilities=Capabilities(delta=True),
    example=STORE_EXAMPLE, account_slots=_slots, principals=_principals,
))
register(Connector(
    type="eml", config=EmlConfig,
    summary=(".eml files in folders, one tree per user",
             "Fichiers .eml dans des dossiers, une arborescence par utilisateur"),
    reads=frozenset({"mail"}), open_source=_open_eml_source,
    capabilities=Capabilities(delta=True),
    example=STORE_EXAMPLE, account_slots=_slots, principals=_principals,
))
register(Connector(
    type="folder", config=FolderConfig,
    summary=("A local folder: calendars and tasks as .ics, contacts as .vcf, files as they are",
             ("Un dossier local : agendas et tâches en .ics, contacts en .vcf, fichiers tels "
              "quels")),
    reads=frozenset({"calendar", "contacts", "tasks", "files"}),
    writes=frozenset({"calendar", "contacts", "tasks", "files"}),
    open_source=_open_folder_source, open_sink=_open_folder_sink, principals=_principals,
    capabilities=Capabilities(keeps_bytes=True, keeps_mtime=True, deletes=True, versions=True,
                              name_rules=FOLDER_NAME_RULES),
    example='''path = "documents"            # <path>/<login>/<workload>/...
''',
))
