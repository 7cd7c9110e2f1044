"""The names a target of files takes, and the stated rule that renames the others.

Each target declares its rules (``NameRules``): the characters it refuses, the names it
reserves (whole, or as the part before the first dot as Windows does: ``CON``,
``aux.txt``), the endings it refuses (a trailing dot or space, Nextcloud's ``.part``), and
how long a name and a path under the space's root may be. A name the rules refuse is
renamed, always the same way, so that a second run finds what the first one wrote:

1. each refused character (``/`` and NUL on every target) becomes ``_``;
2. the empty name, ``.`` and ``..``, and a reserved whole name, get a ``_`` before them;
3. a reserved base name gets a ``_`` after it, before its extension (``CON.txt`` →
   ``CON_.txt``);
4. a refused ending gets a ``_`` after it (``notes.`` → ``notes._``, ``film.part`` →
   ``film.part_``);
5. a name over the longest the target takes keeps its extension and is cut, with ``~`` and
   8 hex digits of the SHA-256 of the name as the source gave it, so two long names stay
   apart.

Names keep the Unicode form the source gave them and are never changed otherwise. Two source
names may come out the same (``a:b`` and ``a_b`` where ``:`` is refused, or ``Rapport``
and ``rapport`` on a target that folds case): the target says so when the second is
written, and the engine keeps both (``migrate.documents``), the second under its name with
``~`` and 8 hex digits of its source id (``distinct``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

REPLACEMENT = "_"
MARK = "~"
"""Between a name and the digits that keep it apart from another."""
LONGEST_EXTENSION = 16
"""Longer than this, what follows the last dot is no extension worth keeping whole."""

RENAMED_CHARACTER = "renamed_refused_character"
RENAMED_RESERVED = "renamed_reserved_file_name"
RENAMED_ENDING = "renamed_refused_ending"
RENAMED_LONG = "renamed_too_long"
RENAMED_TAKEN = "renamed_name_taken"
PATH_TOO_LONG = "path_too_long"


@dataclass(frozen=True)
class NameRules:
    """What names one target of files takes (see the module's docstring for the rule that
    renames the others)."""

    name: str
    refused_characters: str = ""
    """Beyond ``/`` and NUL, which no target takes."""
    refuses_controls: bool = False
    """ASCII 1 to 31 refused too."""
    reserved_names: frozenset[str] = frozenset()
    """Whole names refused, in lower case."""
    reserved_basenames: frozenset[str] = frozenset()
    """Names refused before any extension, in lower case: ``con`` refuses ``CON`` and
    ``con.tar.gz``."""
    refused_endings: tuple[str, ...] = ()
    """Ends of names refused, compared in lower case (`` ``, ``.``, ``.part``)."""
    max_name_bytes: int | None = 255
    """In UTF-8 bytes (what Linux file systems count)."""
    max_name_characters: int | None = None
    max_path_characters: int | None = None
    """The longest path under the space's root, in characters."""

    def __post_init__(self) -> None:
        if REPLACEMENT in self.refused_characters or MARK in self.refused_characters:
            raise ValueError(f"{self.name}: the renaming rule needs {REPLACEMENT!r} and "
                             f"{MARK!r}")

    def rename(self, name: str) -> tuple[str, str | None]:
        """``name`` as this target takes it, and the code of the first rule that changed
        it (``None``: unchanged)."""
        reasons: list[str] = []
        refused = "/\0" + self.refused_characters
        changed = "".join(REPLACEMENT if c in refused or (self.refuses_controls and c < " ")
                          else c for c in name)
        if changed != name:
            reasons.append(RENAMED_CHARACTER)
        if changed in ("", ".", "..") or changed.lower() in self.reserved_names:
            changed = REPLACEMENT + changed
            reasons.append(RENAMED_RESERVED)
        stem, dot, extension = changed.partition(".")
        if stem.lower() in self.reserved_basenames:
            changed = stem + REPLACEMENT + dot + extension
            reasons.append(RENAMED_RESERVED)
        while self.refused_endings and changed.lower().endswith(self.refused_endings):
            changed += REPLACEMENT
            reasons.append(RENAMED_ENDING)
        if self._too_long(changed):
            changed = self.shortened(changed, name)
            reasons.append(RENAMED_LONG)
        return changed, reasons[0] if reasons else None

    def shortened(self, name: str, original: str, longest: int | None = None) -> str:
        """``name`` cut to fit (``longest`` characters at most, if given, as well as the
        target's own limits), its extension kept, with the mark and digits of
        ``original``."""
        stem, dot, extension = name.rpartition(".")
        if not dot or not stem or len(extension) > LONGEST_EXTENSION:
            stem, extension = name, ""
        tail = f"{MARK}{_digits(original)}" + (f".{extension}" if extension else "")
        cut = stem
        while cut and (self._too_long(cut + tail)
                       or (longest is not None and len(cut + tail) > longest)):
            cut = cut[:-1]
        return cut + tail

    def _too_long(self, name: str) -> bool:
        return ((self.max_name_bytes is not None
                 and len(name.encode("utf-8")) > self.max_name_bytes)
                or (self.max_name_characters is not None
                    and len(name) > self.max_name_characters))

    def path(self, segments: Sequence[str]) -> tuple[list[str], list[tuple[str, str, str]]]:
        """Each segment of a path as this target takes it, and for each one changed (its
        new name, its name as the source gave it, the rule's code). A path over the
        longest the target takes has its last segment shortened to fit; where the folders
        alone are too long, ``PathTooLong`` is raised."""
        names: list[str] = []
        changes: list[tuple[str, str, str]] = []
        for segment in segments:
            renamed, reason = self.rename(segment)
            names.append(renamed)
            if reason:
                changes.append((renamed, segment, reason))
        longest = self.max_path_characters
        if longest is not None and names and len("/".join(names)) > longest:
            room = longest - len("/".join(names[:-1])) - (1 if len(names) > 1 else 0)
            if room < 1 + len(MARK) + 8:
                raise PathTooLong("/".join(names), longest)
            last = self.shortened(names[-1], segments[-1], room)
            changes = [change for change in changes if change[0] != names[-1]]
            changes.append((last, segments[-1], RENAMED_LONG))
            names[-1] = last
        return names, changes


class PathTooLong(ValueError):
    """A path whose folders alone are longer than the target takes."""

    def __init__(self, path: str, longest: int) -> None:
        super().__init__(f"{path}: {len(path)} characters, the target takes {longest}")
        self.longest = longest


def distinct(name: str, source_id: str) -> str:
    """``name`` kept apart from another the same: ``~`` and 8 hex digits of the item's
    source id before its extension (``budget.pdf`` → ``budget~1f2e3d4c.pdf``)."""
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or len(extension) > LONGEST_EXTENSION:
        stem, dot, extension = name, "", ""
    return f"{stem}{MARK}{_digits(source_id)}{dot}{extension}"


def _digits(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


WINDOWS_RESERVED = frozenset(
    {"con", "prn", "aux", "nul"}
    | {f"{device}{n}" for device in ("com", "lpt") for n in (*"0123456789", "¹", "²", "³")})

POSIX = NameRules("posix")
"""A Linux file system behind the target (a local folder, Apache ``mod_dav_fs``, WsgiDAV):
only ``/`` and NUL refused, 255 bytes a name."""

WINDOWS = NameRules(
    "windows", refused_characters='<>:"|?*\\', refuses_controls=True,
    reserved_basenames=WINDOWS_RESERVED, refused_endings=(" ", "."),
    max_name_bytes=None, max_name_characters=255)
"""Names Windows takes (Microsoft's "Naming Files, Paths, and Namespaces"): what a Windows
client syncing the space can hold; Nextcloud 31's "Windows compatible filenames" enforces
the same set (plus ``.part`` and ``.filepart``, its own)."""

NEXTCLOUD = NameRules(
    "nextcloud", refused_characters="\\", refuses_controls=True,
    reserved_names=frozenset({".htaccess"}), refused_endings=(".part", ".filepart"),
    max_name_characters=250, max_path_characters=4000)
"""Nextcloud's defaults (admin manual, ``config.sample.php``): ``/``, ``\\`` and ASCII 0-31
always refused, ``.htaccess`` (``forbidden_filenames``), the ``.part`` and ``.filepart``
endings (``forbidden_filename_extensions``); a name of 250 characters at most and a path of
4,000 (its file cache's columns), and 255 bytes a name, the file system's under its data
folder (a name of 200 "é" is 400 bytes: the Nextcloud test server's disk refused it)."""

NEXTCLOUD_WINDOWS = NameRules(
    "nextcloud-windows", refused_characters='<>:"|?*\\', refuses_controls=True,
    reserved_names=frozenset({".htaccess"}), reserved_basenames=WINDOWS_RESERVED,
    refused_endings=(" ", ".", ".part", ".filepart"), max_name_characters=250,
    max_path_characters=4000)
"""Nextcloud 31 or later with "Windows compatible filenames" on (admin manual, "Windows
compatible filenames"): Windows's characters, base names and endings added to its own.
It does not fold case."""

RULES = {rules.name: rules for rules in (POSIX, WINDOWS, NEXTCLOUD, NEXTCLOUD_WINDOWS)}
