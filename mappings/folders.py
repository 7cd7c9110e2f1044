"""Where each source mail folder lands on the target, and why: the folder plan.

``FolderRules.decide`` turns the source's folder list into one ``FolderDecision`` per folder,
in a deterministic order (parents before children). The rules, in the order they apply:

1. A folder whose parent is skipped is skipped (``parent_skipped``).
2. ``exclude`` glob patterns (case-insensitive, on the whole path joined with ``/`` and on
   the last segment) skip a folder (``excluded``, detail: the pattern).
3. Virtual folders that only show other folders' messages (Gmail's All Mail, Starred) are
   skipped (``virtual_folder``): copying them would duplicate every message.
4. ``renames`` (source path -> target path, both joined with ``/``, compared
   case-insensitively) place a folder where the batch says; its children follow. A rename
   is an explicit choice, so it wins over the well-known and non-mail rules below.
5. Well-known folders (inbox, sent, drafts, trash, junk, archive), recognised by the
   source's SPECIAL-USE role first, then by their name in the languages Exchange uses,
   land on the target's folder for that role. Names count only at the top level, directly
   under the INBOX of a source that nests every folder there, or under Gmail's
   ``[Gmail]``: ``Projets/Brouillons`` is an ordinary folder. A role the source declares
   with SPECIAL-USE is not also guessed from another folder's name.
6. Folders Exchange shows over IMAP that hold no mail (Calendar, Contacts, Tasks...) are
   skipped (``non_mail_folder``) unless ``include_non_mail`` is set.
7. Every other folder keeps its name under its parent's target.

Name rules on each target segment: the target's separator and forbidden characters become
``REPLACEMENT``; an empty, ``.`` or ``..`` segment becomes as many ``REPLACEMENT`` (at least
one). Two folders landing on the same target path: the one placed later gets
``" (2)"``, ``" (3)"``... (``renamed_collision``), except well-known folders merging into
their role's folder and folders the batch renamed, which merge on purpose. Well-known and
renamed folders are placed first, then each level of the tree, names that needed no change
before names that did, so a folder that already had a valid name keeps it.
"""

from __future__ import annotations

import fnmatch
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from connectors.base import ROLES, BasculeError, Path

REPLACEMENT = "_"
"""Replaces a separator, a forbidden character or a reserved name in a folder name. ASCII, so
every target accepts it; visible, so the user recognises the original name."""

COLLISION_SUFFIX = " ({n})"
"""Appended to the last segment of a folder that lands where another one already does."""

DEFAULT_INBOX: Path = ("INBOX",)
"""IMAP names the inbox INBOX on every server; used when the target did not say."""

GMAIL_PARENTS = ("[gmail]", "[google mail]")
"""Gmail keeps its well-known folders one level down, under one of these."""

VIRTUAL_ROLES = frozenset({"all", "flagged", "important"})
"""SPECIAL-USE roles of folders whose messages all live in another folder too."""

VIRTUAL_GMAIL_NAMES = frozenset({"all mail", "starred", "important"})

WELL_KNOWN_NAMES: dict[str, tuple[str, ...]] = {
    "inbox": (
        "Inbox", "Boîte de réception", "Posteingang", "Bandeja de entrada",
        "Posta in arrivo", "Postvak IN", "Caixa de Entrada",
    ),
    "sent": (
        "Sent Items", "Sent", "Sent Messages", "Sent Mail",
        "Éléments envoyés", "Messages envoyés", "Gesendete Elemente", "Gesendet",
        "Elementos enviados", "Enviados", "Posta inviata", "Verzonden items", "Itens Enviados",
    ),
    "drafts": (
        "Drafts", "Brouillons", "Entwürfe", "Borradores", "Bozze", "Concepten", "Rascunhos",
    ),
    "trash": (
        "Deleted Items", "Deleted Messages", "Trash", "Bin",
        "Éléments supprimés", "Corbeille", "Gelöschte Elemente", "Papierkorb",
        "Elementos eliminados", "Papelera", "Posta eliminata", "Cestino",
        "Verwijderde items", "Prullenbak", "Itens Excluídos", "Itens Eliminados", "Lixeira",
    ),
    "junk": (
        "Junk Email", "Junk E-mail", "Junk", "Spam",
        "Courrier indésirable", "Junk-E-Mail", "Correo no deseado", "Posta indesiderata",
        "Ongewenste e-mail", "Lixo Eletrônico", "Lixo Eletrónico", "Email de Lixo",
    ),
    "archive": (
        "Archive", "Archives", "Archiv", "Archivo", "Archivio", "Archief", "Arquivo",
    ),
}
"""Names of well-known folders as Exchange (and Gmail, Apple Mail, Thunderbird) write them,
accents included: a name written without its accents is an ordinary folder."""

NON_MAIL_NAMES: tuple[str, ...] = (
    # calendar
    "Calendar", "Calendrier", "Kalender", "Calendario", "Agenda", "Calendário",
    # contacts
    "Contacts", "Kontakte", "Contactos", "Contatti", "Contactpersonen", "Contatos",
    "Suggested Contacts", "Contacts suggérés", "Vorgeschlagene Kontakte",
    "Contactos sugeridos", "Contatti suggeriti", "Voorgestelde contactpersonen",
    "Recipient Cache", "ExternalContacts", "PersonMetadata",
    # tasks
    "Tasks", "Tâches", "Aufgaben", "Tareas", "Attività", "Taken", "Tarefas",
    # journal
    "Journal", "Diario", "Registro", "Logboek", "Diário",
    # notes
    "Notes", "Notizen", "Notas", "Note", "Notities",
    # sync issues (their children Conflicts, Local Failures, Server Failures follow them)
    "Sync Issues", "Problèmes de synchronisation", "Synchronisierungsprobleme",
    "Problemas de sincronización", "Problemi di sincronizzazione",
    "Synchronisatieproblemen", "Problemas de Sincronização",
    # conversation history (Skype, Teams)
    "Conversation History", "Historique des conversations", "Unterhaltungsverlauf",
    "Historial de conversaciones", "Cronologia conversazioni", "Gespreksgeschiedenis",
    "Histórico de Conversas",
    # outbox
    "Outbox", "Boîte d'envoi", "Postausgang", "Bandeja de salida", "Posta in uscita",
    "Postvak UIT", "Caixa de Saída",
    # RSS
    "RSS Feeds", "RSS Subscriptions", "Flux RSS", "Abonnements RSS", "RSS-Feeds",
    "RSS-Abonnements", "Fuentes RSS", "Suscripciones RSS", "Feed RSS", "Abbonamenti RSS",
    "RSS-abonnementen", "Feeds RSS", "Assinaturas RSS",
    # Microsoft 365 service folders
    "Social Activity Notifications", "Yammer Root", "Files", "Fichiers", "Dateien",
    "Quick Step Settings", "Conversation Action Settings",
)
"""Top-level folders Exchange shows over IMAP although they hold no mail."""

REASON_CODES = (
    "special_use", "well_known_name", "role_not_on_target", "virtual_folder", "non_mail_folder",
    "excluded", "parent_skipped", "renamed_by_batch", "renamed_separator",
    "renamed_forbidden_char", "renamed_reserved_name", "renamed_collision",
)
"""Every reason code a decision may carry; its sentence (in the catalogue, ``reports.i18n``)
names the decision's detail."""


def _fold(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


def _role_by_name() -> dict[str, str]:
    table = {_fold(name): role for role, names in WELL_KNOWN_NAMES.items() for name in names}
    table[_fold("INBOX")] = "inbox"
    return table


_ROLE_BY_NAME = _role_by_name()
_NON_MAIL = frozenset(_fold(name) for name in NON_MAIL_NAMES)


@dataclass(frozen=True)
class FolderDecision:
    """What happens to one source folder."""

    source: Path
    target: Path | None
    """``None`` when the folder is skipped."""
    role: str | None
    """The well-known role recognised, one of ``connectors.base.ROLES``."""
    action: Literal["copy", "skip"]
    reasons: tuple[str, ...]
    """Codes from ``REASON_CODES``, in the order the rules applied."""
    detail: str = ""
    """The pattern that excluded it, the parent that was skipped, or the name before a
    rename."""


class FolderRulesError(BasculeError):
    """The batch's folder rules cannot be applied: codes ``folder_rename_invalid``
    (``source``, ``target``: both sides of the rename), ``folder_replacement_refused``
    (``replacement``)."""

    def __init__(self, code: str, **params: str) -> None:
        super().__init__(code=code, params=params)


def _split(path: str) -> tuple[str, ...]:
    return tuple(path.strip("/").split("/"))


class FolderRules:
    """The batch's folder rules: renames, exclusions, and whether non-mail folders move."""

    def __init__(
        self,
        *,
        renames: Mapping[str, str] | None = None,
        exclude: Sequence[str] = (),
        include_non_mail: bool = False,
    ) -> None:
        self.renames: dict[str, Path] = {}
        for source, target in (renames or {}).items():
            segments = _split(target)
            if not source.strip("/") or not all(segments):
                raise FolderRulesError("folder_rename_invalid", source=source, target=target)
            self.renames[_fold("/".join(_split(source)))] = segments
        self.exclude = tuple(exclude)
        self.include_non_mail = include_non_mail

    def excluding_pattern(self, path: Path) -> str | None:
        """The first ``exclude`` pattern matching the folder, if any."""
        joined, last = _fold("/".join(path)), _fold(path[-1])
        for pattern in self.exclude:
            folded = _fold(pattern)
            if fnmatch.fnmatchcase(joined, folded) or fnmatch.fnmatchcase(last, folded):
                return pattern
        return None

    def decide(
        self,
        folders: Iterable[tuple[Path, str | None]],
        *,
        target_separator: str,
        target_forbidden: str = "",
        target_special: Mapping[str, Path],
        literal: Iterable[Path] = (),
    ) -> list[FolderDecision]:
        """One decision per source folder (``(path, role)`` pairs, role as the source's
        SPECIAL-USE names it or ``None``), parents before children. ``literal`` paths keep
        their names whatever they are (the top folder a source puts a part of the account
        under, such as ``Archives`` for an online archive): no well-known or non-mail rule
        reads them, so the part's tree lands under that name."""
        if REPLACEMENT in target_separator + target_forbidden:
            raise FolderRulesError("folder_replacement_refused", replacement=REPLACEMENT)
        return _Planner(self, folders, target_separator, target_forbidden, target_special,
                        literal).run()


@dataclass(frozen=True)
class _Class:
    """A folder's classification, before name rules and collisions."""

    skip: bool
    role: str | None
    reasons: tuple[str, ...]
    detail: str = ""
    target: Path | None = None
    """Set for folders placed at an absolute target (well-known, renamed)."""


@dataclass(frozen=True)
class _Placed:
    target: Path
    reasons: tuple[str, ...]
    detail: str


class _Planner:
    """One run of the rules over one folder list."""

    def __init__(
        self,
        rules: FolderRules,
        folders: Iterable[tuple[Path, str | None]],
        separator: str,
        forbidden: str,
        special: Mapping[str, Path],
        literal: Iterable[Path] = (),
    ) -> None:
        self.rules = rules
        self.literal = frozenset(tuple(path) for path in literal)
        self.separator = separator
        self.forbidden = forbidden
        self.special = {role: tuple(path) for role, path in special.items()}
        self.special.setdefault("inbox", DEFAULT_INBOX)
        self.declared: dict[Path, str | None] = {}
        for path, role in folders:
            path = tuple(path)
            self.declared[path] = role.lstrip("\\").lower() if role else None
        # A server that nests every folder under INBOX (Courier, Cyrus) keeps its well-known
        # folders one level down.
        self.nests_under_inbox = len(self.declared) > 1 and all(
            _fold(path[0]) == "inbox" for path in self.declared
        )
        nodes = {path[:depth] for path in self.declared for depth in range(1, len(path) + 1)}
        self.nodes = sorted(nodes, key=_sort_key)
        self.classes: dict[Path, _Class] = {}
        self.placed: dict[Path, _Placed] = {}
        self.claimed: set[tuple[str, ...]] = set()

    def run(self) -> list[FolderDecision]:
        for path in self.nodes:
            kind = self.classify(path)
            if kind.target is not None:
                self.placed[path] = self.name_rules_on(kind.target)
                self.claimed.add(_key(self.placed[path].target))
        for depth in range(1, max((len(p) for p in self.nodes), default=0) + 1):
            level = [p for p in self.nodes if len(p) == depth and p not in self.placed]
            level = [p for p in level if not self.classify(p).skip]
            unchanged = [p for p in level if self.clean(p[-1])[0] == p[-1]]
            changed = [p for p in level if self.clean(p[-1])[0] != p[-1]]
            for path in unchanged + changed:
                self.place_ordinary(path)
        return [self.decision(path) for path in self.nodes if path in self.declared]

    def decision(self, path: Path) -> FolderDecision:
        kind = self.classify(path)
        if kind.skip:
            return FolderDecision(path, None, kind.role, "skip", kind.reasons, kind.detail)
        placed = self.placed[path]
        detail = placed.detail or kind.detail
        reasons = kind.reasons + placed.reasons
        return FolderDecision(path, placed.target, kind.role, "copy", reasons, detail)

    def classify(self, path: Path) -> _Class:
        if path not in self.classes:
            self.classes[path] = self._classify(path)
        return self.classes[path]

    def _classify(self, path: Path) -> _Class:
        if len(path) > 1 and self.classify(path[:-1]).skip:
            return _Class(True, None, ("parent_skipped",), "/".join(path[:-1]))
        pattern = self.rules.excluding_pattern(path)
        if pattern is not None:
            return _Class(True, None, ("excluded",), pattern)
        declared = self.declared.get(path)
        if declared in VIRTUAL_ROLES or (
            len(path) == 2 and _fold(path[0]) in GMAIL_PARENTS
            and _fold(path[1]) in VIRTUAL_GMAIL_NAMES
        ):
            return _Class(True, None, ("virtual_folder",))
        renamed = self.rules.renames.get(_fold("/".join(path)))
        if renamed is not None:
            role = declared if declared in ROLES else None
            return _Class(False, role, ("renamed_by_batch",), target=renamed)
        if declared in ROLES:
            return self.well_known(declared, "special_use")
        if self.well_known_position(path) and path not in self.literal:
            # A folder named for a role merges into that role's folder even when another
            # folder declares the role: mailboxes used from Exchange in French and from an
            # IMAP client often hold both "Éléments envoyés" and a client-made "Sent".
            role = _ROLE_BY_NAME.get(_fold(path[-1]))
            if role is not None:
                return self.well_known(role, "well_known_name")
            if not self.rules.include_non_mail and _fold(path[-1]) in _NON_MAIL:
                return _Class(True, None, ("non_mail_folder",), path[-1])
        return _Class(False, None, ())

    def well_known(self, role: str, reason: str) -> _Class:
        target = self.special.get(role)
        if target is None:
            return _Class(False, role, (reason, "role_not_on_target"))
        return _Class(False, role, (reason,), target=target)

    def well_known_position(self, path: Path) -> bool:
        """Whether a name at this place may be a well-known or non-mail folder."""
        if len(path) == 1:
            return True
        if len(path) == 2:
            parent = _fold(path[0])
            return parent in GMAIL_PARENTS or (self.nests_under_inbox and parent == "inbox")
        return False

    def clean(self, segment: str) -> tuple[str, tuple[str, ...]]:
        """The segment as the target accepts it, and the reasons it changed."""
        if segment in ("", ".", ".."):
            return REPLACEMENT * max(1, len(segment)), ("renamed_reserved_name",)
        reasons: list[str] = []
        if self.separator and self.separator in segment:
            segment = segment.replace(self.separator, REPLACEMENT)
            reasons.append("renamed_separator")
        refused = [char for char in self.forbidden if char in segment]
        for char in refused:
            segment = segment.replace(char, REPLACEMENT)
        if refused:
            reasons.append("renamed_forbidden_char")
        return segment, tuple(reasons)

    def name_rules_on(self, target: Path) -> _Placed:
        segments: list[str] = []
        reasons: list[str] = []
        for segment in target:
            cleaned, why = self.clean(segment)
            segments.append(cleaned)
            reasons.extend(r for r in why if r not in reasons)
        detail = "/".join(target) if reasons else ""
        return _Placed(tuple(segments), tuple(reasons), detail)

    def place_ordinary(self, path: Path) -> None:
        parent_target = self.placed[path[:-1]].target if len(path) > 1 else ()
        segment, reasons = self.clean(path[-1])
        detail = path[-1] if reasons else ""
        wanted = (*parent_target, segment)
        target = wanted
        n = 2
        while _key(target) in self.claimed:
            target = (*parent_target, segment + COLLISION_SUFFIX.format(n=n))
            n += 1
        if target != wanted:
            reasons = (*reasons, "renamed_collision")
            detail = "/".join(wanted)
        self.claimed.add(_key(target))
        self.placed[path] = _Placed(target, reasons, detail)


def _key(path: Path) -> tuple[str, ...]:
    # Compared without case: several targets (and Exchange itself) ignore it.
    return tuple(_fold(segment) for segment in path)


def _sort_key(path: Path) -> tuple[tuple[str, str], ...]:
    return tuple((_fold(segment), segment) for segment in path)
