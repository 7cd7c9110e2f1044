"""The spaces table: lines of the users table whose source is a SharePoint site, one
document library of a site, a Team, or an Exchange public folder, each mapped to a target
space.

A space line's ``source`` is written one of four ways, its ``target`` being the space's
login on the target (the name a WebDAV target's ``{login}`` takes, a folder target's
folder; for a public folder, the shared mailbox and DAV account that receive it):

- ``site:<site>``: every document library of the site, one container each;
- ``site:<site>/<library>``: that library alone, one container (the text after the last
  ``/`` is the library; a site whose display name holds a ``/`` is named by its short
  name, the last segment of its address, which never does);
- ``team:<team>``: the files of a Team, its Microsoft 365 group's document library (where
  its standard channels keep their folders);
- ``public:<path>``: an Exchange public folder and every folder below it (an EWS source):
  mail folders into the target login's IMAP folders, calendars, address books and task
  lists into its DAV collections, each under the public folder's own name. ``<path>`` is the folder's
  path as the Exchange Management Shell writes it (``public:\\Mairie\\Délibérations``),
  or with ``/`` between the names when none holds one (``public:Mairie/Délibérations``);
  each name is matched without case.

A site or a Team is named by its display name, its short name or its id, without case.
What a line names must be found, once: a name two sites answer to, a site, library or Team
not found, and two lines that would copy one library (a site's line and a line of one of
its libraries, or one site under two names; a public folder's line and a line of a folder
below it) are refused before anything moves, each with its line. Two lines cannot share a
target either (``users_duplicate_target``): a space receives one source.

OneDrive needs no line of its own: a user's line carries their OneDrive into their own
space.
"""

from __future__ import annotations

from dataclasses import dataclass

SITE_PREFIX = "site:"
TEAM_PREFIX = "team:"
PUBLIC_PREFIX = "public:"
PREFIXES = (SITE_PREFIX, TEAM_PREFIX, PUBLIC_PREFIX)


@dataclass(frozen=True)
class SpaceSource:
    """What a space line's source names. ``kind`` is ``site`` (with ``library`` when the
    line names one library) or ``team``."""

    kind: str
    name: str
    library: str | None = None

    @property
    def shown(self) -> str:
        return f"{self.name}/{self.library}" if self.library else self.name


def is_space(source: str) -> bool:
    """Whether a users-table source is a space line."""
    return source.strip().casefold().startswith(PREFIXES)


def is_public(source: str) -> bool:
    """Whether a users-table source is a public folder's line."""
    return source.strip().casefold().startswith(PUBLIC_PREFIX)


def public_folder(source: str) -> tuple[str, ...] | None:
    """The names from the top of the public folder tree down to the folder a ``public:``
    line names; ``None`` for another line, or for a public line naming no folder or with an
    empty name in its path."""
    text = source.strip()
    if not is_public(text):
        return None
    rest = text[len(PUBLIC_PREFIX):].strip()
    separator = "\\" if "\\" in rest else "/"
    names = tuple(name.strip() for name in rest.strip(separator).split(separator))
    return names if all(names) else None


def space_source(source: str) -> SpaceSource | None:
    """What a SharePoint space line names; ``None`` for a user (or shared mailbox) line, a
    public folder's line (``public_folder``), or a space line missing its name
    (``space_problem`` says which)."""
    text = source.strip()
    folded = text.casefold()
    if folded.startswith(TEAM_PREFIX):
        name = text[len(TEAM_PREFIX):].strip()
        return SpaceSource("team", name) if name else None
    if not folded.startswith(SITE_PREFIX):
        return None
    rest = text[len(SITE_PREFIX):].strip()
    site, slash, library = rest.rpartition("/")
    if not slash:
        return SpaceSource("site", rest) if rest else None
    if not site.strip() or not library.strip():
        return None
    return SpaceSource("site", site.strip(), library.strip())


def space_problem(source: str) -> str | None:
    """The users file's code for a space line written wrong, or ``None``."""
    if is_public(source):
        return None if public_folder(source) else "users_space_malformed"
    if is_space(source) and space_source(source) is None:
        return "users_space_malformed"
    return None
