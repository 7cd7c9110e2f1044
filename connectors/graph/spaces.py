"""SharePoint sites, document libraries and Teams as principals of their own (the space lines
of the users table, ``mappings.spaces``): each line resolved against the tenant into the
libraries it copies, one container ``(library name,)`` each.

Pages of Microsoft's Graph documentation (learn.microsoft.com/graph):

- ``api/site-getallsites`` and ``api/site-search``: the tenant's sites (see
  ``connectors.graph.files.site_drives_named``), ``api/drive-list``: a site's libraries.
- ``api/teams-list``: ``GET /teams`` lists the organisation's teams (``id``,
  ``displayName``), paged; a team's id is its Microsoft 365 group's id.
- ``api/drive-get``: ``GET /groups/{id}/drive`` is a group's default document library; the
  files of a team's standard channels are folders of it (``api/channel-get-filesfolder``:
  a channel's ``filesFolder`` is a driveItem of that drive).

The tenant is listed once per command for all the lines (``SpaceDirectory``, shared through
the connector's context): every line is resolved together, so that two lines copying one
library are told apart from one line alone.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from urllib.parse import quote

from connectors.base import BasculeError, Container
from connectors.graph.files import GraphFileSource, site_drives_named
from connectors.graph.session import GraphError, GraphSession
from mappings.spaces import SpaceSource, space_source


class SpaceNotResolved(BasculeError):
    """A space line that cannot be copied. Codes: ``space_site_not_found`` (``site``),
    ``space_library_not_found`` (``site``, ``library``, ``libraries``: those the site has),
    ``space_team_not_found`` (``team``), ``space_ambiguous`` (``name``, ``candidates``),
    ``space_overlap`` (``library``, ``other``: the other line copying it)."""


@dataclass
class _Site:
    id: str
    name: str
    names: set[str]
    libraries: list[Container] = field(default_factory=list)


class SpaceDirectory:
    """Every space line of ``sources`` (the users table's source column) resolved once, on
    first use: each line's libraries, or why it cannot be copied."""

    def __init__(self, session: GraphSession, sources: list[str]) -> None:
        self._session = session
        self._sources = [s for s in sources if space_source(s) is not None]
        self._resolved: dict[str, list[Container] | SpaceNotResolved] | None = None
        self._lock = threading.Lock()

    def libraries(self, source: str) -> list[Container]:
        """The libraries a space line copies; raises ``SpaceNotResolved``."""
        with self._lock:
            if self._resolved is None:
                self._resolved = self._resolve(self._sources)
            found = self._resolved.get(source.strip().casefold())
            if found is None:  # a line not in the table this directory was made from
                found = self._resolve([source])[source.strip().casefold()]
        if isinstance(found, SpaceNotResolved):
            raise found
        return found

    def _resolve(self, sources: list[str]) -> dict[str, list[Container] | SpaceNotResolved]:
        wanted = {source: space_source(source) for source in sources}
        sites = self._sites() if any(w and w.kind == "site" for w in wanted.values()) else []
        teams = self._teams() if any(w and w.kind == "team" for w in wanted.values()) else []
        resolved: dict[str, list[Container] | SpaceNotResolved] = {}
        for source, space in wanted.items():
            assert space is not None  # the users table refuses a malformed line
            try:
                resolved[source.strip().casefold()] = (
                    self._site(space, sites) if space.kind == "site" else self._team(space, teams))
            except SpaceNotResolved as error:
                resolved[source.strip().casefold()] = error
        claimed: dict[str, str] = {}
        for source in sources:
            found = resolved[source.strip().casefold()]
            if isinstance(found, SpaceNotResolved):
                continue
            for library in found:
                other = claimed.setdefault(library.native_name, source)
                if other != source:
                    overlap = SpaceNotResolved(code="space_overlap", params={
                        "library": "/".join(library.path), "other": other})
                    resolved[source.strip().casefold()] = overlap
        return resolved

    def _sites(self) -> list[_Site]:
        sites: dict[str, _Site] = {}
        for container, names in site_drives_named(self._session):
            _, site_name, library = container.path
            site_id = _site_key(names)
            site = sites.setdefault(site_id, _Site(site_id, site_name, names))
            site.libraries.append(Container(path=(library,), native_name=container.native_name))
        return list(sites.values())

    def _teams(self) -> list[dict[str, str]]:
        return [{"id": str(t["id"]), "displayName": str(t.get("displayName", ""))}
                for t in self._session.pages("teams", {"$select": "id,displayName"}).values()]

    @staticmethod
    def _site(space: SpaceSource, sites: list[_Site]) -> list[Container]:
        folded = space.name.casefold()
        matches = [site for site in sites if folded in site.names]
        if not matches:
            raise SpaceNotResolved(code="space_site_not_found", params={"site": space.name})
        if len(matches) > 1:
            raise SpaceNotResolved(code="space_ambiguous", params={
                "name": space.name, "candidates": ", ".join(sorted(s.id for s in matches))})
        [site] = matches
        if space.library is None:
            return list(site.libraries)
        chosen = [c for c in site.libraries if c.path[0].casefold() == space.library.casefold()]
        if not chosen:
            raise SpaceNotResolved(code="space_library_not_found", params={
                "site": site.name, "library": space.library,
                "libraries": ", ".join(c.path[0] for c in site.libraries)})
        return chosen

    def _team(self, space: SpaceSource, teams: list[dict[str, str]]) -> list[Container]:
        folded = space.name.casefold()
        matches = [t for t in teams if folded in (t["id"].casefold(),
                                                  t["displayName"].casefold())]
        if not matches:
            raise SpaceNotResolved(code="space_team_not_found", params={"team": space.name})
        if len(matches) > 1:
            raise SpaceNotResolved(code="space_ambiguous", params={
                "name": space.name, "candidates": ", ".join(sorted(t["id"] for t in matches))})
        try:
            drive = self._session.get_json(f"groups/{quote(matches[0]['id'])}/drive",
                                           {"$select": "id,name,driveType"})
        except GraphError as error:
            if error.status == 404:  # a team whose files were never provisioned
                raise SpaceNotResolved(code="space_team_not_found",
                                       params={"team": space.name}) from None
            raise
        return [Container(path=(str(drive["name"]),), native_name=str(drive["id"]))]


def _site_key(names: set[str]) -> str:
    """A site's id among the names it answers to (Graph's site ids hold two commas)."""
    return next((name for name in names if name.count(",") == 2), min(names))


class GraphSpaceFiles(GraphFileSource):
    """The libraries a space line names (a site's, one library, a Team's), each a container
    ``(library name,)``, read as ``GraphFileSource`` reads any drive."""

    def __init__(self, session: GraphSession, source: str, directory: SpaceDirectory) -> None:
        super().__init__(session, "")
        self._source = source
        self._directory = directory

    def document_containers(self, workload: str) -> list[Container]:
        if workload != "files":
            return []
        return self._directory.libraries(self._source)
