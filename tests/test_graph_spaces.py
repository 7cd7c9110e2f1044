"""Space lines of the users table (a SharePoint site, one of its libraries, a Team) resolved
against the Graph test server: what each copies, and each way a line is refused."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.graph.auth import GraphCredentials, token_provider
from connectors.graph.session import GraphSession
from connectors.graph.spaces import SpaceDirectory, SpaceNotResolved
from mappings.spaces import SpaceSource, space_source
from mappings.users import UsersFileInvalid, load_users
from reports.i18n import Text
from tests.graph_files import (
    SHAREPOINT_HOST,
    FixtureFiles,
    FixtureSite,
    running_download_server,
    seed_files,
)
from tests.graph_server import french_tenant, running_graph_server
from tests.tls import TestCertificates


@pytest.fixture
def tenant(certificates: TestCertificates) -> Iterator[tuple[FixtureFiles, GraphSession]]:
    fixture = french_tenant(users=2, inbox_messages=1)
    files = seed_files(fixture, big_file_size=1 << 10)
    with running_graph_server(fixture, certificates) as graph, \
            running_download_server(files, certificates):
        tokens = token_provider(GraphCredentials(fixture.tenant_id, fixture.client_id,
                                                 fixture.client_secret),
                                graph.authority, ca_file=str(certificates.ca_file))
        session = GraphSession(graph.graph_url, tokens, ca_file=str(certificates.ca_file))
        yield files, session
        session.close()


def test_space_lines_are_read_as_written() -> None:
    assert space_source("site:Service urbanisme") == SpaceSource("site", "Service urbanisme")
    assert space_source(" SITE:urbanisme/Archives 1990-2010 ") == SpaceSource(
        "site", "urbanisme", "Archives 1990-2010")
    assert space_source("site:A/B/Documents") == SpaceSource("site", "A/B", "Documents")
    assert space_source("Team:Équipe voirie") == SpaceSource("team", "Équipe voirie")
    assert space_source("amelie.lefevre@ville-exemple.fr") is None


def test_a_malformed_space_line_is_refused_with_its_line(tmp_path: Path) -> None:
    users = tmp_path / "users.csv"
    users.write_text("source,target\nsite:,a\nteam: ,b\nsite:urbanisme/,c\nsite:/Docs,d\n"
                     "site:urbanisme/Documents,e\n", encoding="utf-8")
    with pytest.raises(UsersFileInvalid) as raised:
        load_users(users)
    assert [(e.code, e.line) for e in raised.value.errors] == [
        ("users_space_malformed", 2), ("users_space_malformed", 3),
        ("users_space_malformed", 4), ("users_space_malformed", 5)]
    english = Text.of(raised.value.errors[0].code, **raised.value.errors[0].params)
    assert "site:" in english.en and "site:" in english.fr and english.en != english.fr


def test_each_kind_of_line_names_its_libraries(tenant) -> None:
    files, session = tenant
    urbanisme = files.site("Service urbanisme")
    team = files.team("Équipe voirie")
    lines = ["site:Service urbanisme", "site:conseil-municipal/documents PARTAGÉS",
             f"team:{team.id}"]
    directory = SpaceDirectory(session, lines)
    assert sorted((c.path, c.native_name) for c in directory.libraries(lines[0])) == sorted(
        ((d.name,), d.id) for d in urbanisme.drives)
    conseil = files.site("Conseil municipal").drives[0]
    assert [(c.path, c.native_name) for c in directory.libraries(lines[1])] == [
        (("Documents partagés",), conseil.id)]
    assert team.drive is not None
    assert [(c.path, c.native_name) for c in directory.libraries(lines[2])] == [
        (("Documents",), team.drive.id)]
    # By display name too, alone in its table.
    assert len(SpaceDirectory(session, ["team:équipe VOIRIE"]).libraries(
        "team:équipe VOIRIE")) == 1


def refusal(directory: SpaceDirectory, line: str) -> tuple[str, dict[str, object]]:
    with pytest.raises(SpaceNotResolved) as raised:
        directory.libraries(line)
    return raised.value.code, raised.value.params


def test_what_cannot_be_found_once_is_refused_with_what_there_is(tenant) -> None:
    files, session = tenant
    files.sites.append(FixtureSite(f"{SHAREPOINT_HOST},{uuid.uuid4()},{uuid.uuid4()}",
                                   "conseil-2", "Conseil municipal", [files.add_drive(
                                       "Documents", "documentLibrary", "Conseil municipal")]))
    lines = ["site:Site disparu", "site:Service urbanisme/Cadastre", "team:Équipe disparue",
             "team:Équipe sans fichiers", "site:Conseil municipal"]
    directory = SpaceDirectory(session, lines)
    assert refusal(directory, lines[0]) == ("space_site_not_found", {"site": "Site disparu"})
    assert refusal(directory, lines[1]) == ("space_library_not_found", {
        "site": "Service urbanisme", "library": "Cadastre",
        "libraries": "Documents partagés, Archives 1990-2010"})
    assert refusal(directory, lines[2]) == ("space_team_not_found",
                                            {"team": "Équipe disparue"})
    assert refusal(directory, lines[3])[0] == "space_team_not_found"
    code, params = refusal(directory, lines[4])
    assert code == "space_ambiguous"
    assert len(str(params["candidates"]).split(", ")) == 2
    for code, params in (refusal(directory, line) for line in lines):
        text = Text.of(code, **params)
        assert text.en != text.fr and "{" not in text.en + text.fr


def test_two_lines_copying_one_library_are_both_named(tenant) -> None:
    _, session = tenant
    lines = ["site:Service urbanisme", "site:urbanisme/Archives 1990-2010",
             "team:Équipe voirie", "site:equipe-voirie", "site:Conseil municipal"]
    directory = SpaceDirectory(session, lines)
    assert len(directory.libraries(lines[0])) == 2
    assert refusal(directory, lines[1]) == ("space_overlap", {
        "library": "Archives 1990-2010", "other": "site:Service urbanisme"})
    assert len(directory.libraries(lines[2])) == 1
    assert refusal(directory, lines[3]) == ("space_overlap", {
        "library": "Documents", "other": "team:Équipe voirie"})
    assert len(directory.libraries(lines[4])) == 1
