"""End to end: a SharePoint site, one library of another site and a Team, each a line of the
users table, moved by ``bascule run`` from the Graph test server into spaces of their own on
a real WsgiDAV and a real Apache ``mod_dav_fs``, read back from the servers' disks; a line
the tenant cannot answer stops ``plan`` with its reason."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest

from tests.apache import Apache, start_apache
from tests.cli import bascule, report
from tests.graph_files import (
    FixtureDrive,
    FixtureFiles,
    running_download_server,
    seed_files,
    seed_sharing,
)
from tests.graph_server import RunningGraphServer, french_tenant, running_graph_server
from tests.test_engine_webdav import write_batch as webdav_batch
from tests.tls import TestCertificates
from tests.wsgidav import WsgiDav, start_wsgidav

AMELIE = "amelie.lefevre@ville-exemple.fr"
SPACES = {"alice": "alice-target", "urbanisme": "urba-target", "conseil": "conseil-target",
          "voirie": "voirie-target"}
LINES = {"urbanisme": "site:Service urbanisme",
         "conseil": "site:conseil-municipal/Documents partagés",
         "voirie": "team:Équipe voirie"}


def write_batch(folder: Path, graph: RunningGraphServer, certificates: TestCertificates,
                server: WsgiDav | Apache, extra: str = "", lines: dict[str, str] = LINES
                ) -> Path:
    return webdav_batch(folder, graph, certificates, server, extra, rows=tuple(
        f"{source},{space},,env:{space.upper()}_TARGET" for space, source in lines.items()))


def drive_files(drive: FixtureDrive) -> dict[str, str]:
    return {"/".join((drive.name, *drive.path_of(item))): hashlib.sha256(item.content).hexdigest()
            for item in drive.items.values() if item.kind == "file"}


def on_disk(space: Path) -> dict[str, str]:
    return {path.relative_to(space).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in space.rglob("*") if path.is_file()}


def expected_spaces(files: FixtureFiles) -> dict[str, dict[str, str]]:
    team = files.team("Équipe voirie").drive
    assert team is not None
    urbanisme: dict[str, str] = {}
    for drive in files.site("Service urbanisme").drives:
        urbanisme.update(drive_files(drive))
    return {"urbanisme": urbanisme,
            "conseil": drive_files(files.site("Conseil municipal").drives[0]),
            "voirie": drive_files(team)}


@pytest.fixture(params=["wsgidav", "apache"])
def space_server(request, tmp_path, monkeypatch):
    for space, secret in SPACES.items():
        monkeypatch.setenv(f"{space.upper()}_TARGET", secret)
    if request.param == "wsgidav":
        server: WsgiDav | Apache = start_wsgidav(tmp_path / "wsgidav", SPACES)
    else:
        server = start_apache(tmp_path / "apache", SPACES)
    yield request.param, server
    server.stop()


def test_sites_libraries_and_teams_land_each_in_its_space(space_server, certificates, tmp_path,
                                                          monkeypatch):
    kind, server = space_server
    tenant = french_tenant(users=3, inbox_messages=1)
    files = seed_files(tenant, big_file_size=1 << 20)
    seed_sharing(tenant, files)
    with running_graph_server(tenant, certificates) as graph, \
            running_download_server(files, certificates):
        monkeypatch.setenv("GRAPH_SECRET", graph.tenant.client_secret)
        batch = write_batch(tmp_path, graph, certificates, server,
                            'profile = "apache"' if kind == "apache" else "")
        code, output = bascule("run", str(batch))
        assert code == 0, output
        for space, expected in expected_spaces(files).items():
            assert expected
            assert on_disk(server.space(space)) == expected, space
        # The Archives library went to the site's space, not elsewhere; the other library of
        # the council's site was not named and stays behind.
        assert sorted(p.name for p in server.space("urbanisme").iterdir()) == [
            "Archives 1990-2010", "Documents partagés"]
        assert (server.space("alice") / "OneDrive" / "Lisez-moi.txt").is_file()

        code, output = bascule("verify", str(batch))
        assert code == 0, output
        assert report(tmp_path, "verify")["summary"]["mismatches"] == 0


def test_a_space_line_the_tenant_cannot_answer_stops_plan(certificates, tmp_path, monkeypatch):
    tenant = french_tenant(users=3, inbox_messages=1)
    files = seed_files(tenant, big_file_size=1 << 10)
    server = start_wsgidav(tmp_path / "wsgidav", SPACES)
    for space, secret in SPACES.items():
        monkeypatch.setenv(f"{space.upper()}_TARGET", secret)
    try:
        with running_graph_server(tenant, certificates) as graph, \
                running_download_server(files, certificates):
            monkeypatch.setenv("GRAPH_SECRET", graph.tenant.client_secret)
            batch = write_batch(tmp_path, graph, certificates, server, lines={
                "urbanisme": "site:Service urbanisme",
                "conseil": "site:urbanisme/Archives 1990-2010",
                "voirie": "team:Équipe disparue"})
            code, output = bascule("plan", str(batch))
            assert code == 2, output
            errors = {e["principal"]: e for e in report(tmp_path, "plan")["entries"]
                      if e["action"] == "error"}
            assert sorted(errors) == ["site:urbanisme/Archives 1990-2010",
                                      "team:Équipe disparue"]
            overlap = errors["site:urbanisme/Archives 1990-2010"]
            assert overlap["code"] == "space_overlap"
            assert "site:Service urbanisme" in overlap["message_fr"]
            assert errors["team:Équipe disparue"]["code"] == "space_team_not_found"
            assert "Équipe disparue" in output
            assert files.stats.get("downloads", 0) == 0
    finally:
        server.stop()


def sharing_csv(folder: Path, space: str) -> list[dict[str, str]]:
    with (folder / "work" / "sharing" / f"{space}.csv").open(encoding="utf-8-sig",
                                                             newline="") as handle:
        return list(csv.DictReader(handle))


def test_sharing_is_exported_per_space_for_the_target_admin(certificates, tmp_path,
                                                            monkeypatch):
    """Each space's CSV, read back row by row: the site's groups on each library, a folder
    shared with a tenant user without a line (and inherited below it), links of each scope
    with their expiry, a guest and an invitation flagged external, Amélie's own OneDrive
    mapped to her target login; an empty folder's permissions are report lines."""
    tenant = french_tenant(users=3, inbox_messages=1)
    files = seed_files(tenant, big_file_size=1 << 10)
    seed_sharing(tenant, files)
    server = start_wsgidav(tmp_path / "wsgidav", SPACES)
    for space, secret in SPACES.items():
        monkeypatch.setenv(f"{space.upper()}_TARGET", secret)
    try:
        with running_graph_server(tenant, certificates) as graph, \
                running_download_server(files, certificates):
            monkeypatch.setenv("GRAPH_SECRET", graph.tenant.client_secret)
            batch = write_batch(tmp_path, graph, certificates, server)
            code, output = bascule("run", str(batch))
            assert code == 0, output
    finally:
        server.stop()
    entries = report(tmp_path, "run")["entries"]
    exported = {e["target"]: e for e in entries if e.get("code") == "sharing_exported"}
    assert sorted(exported) == ["alice", "conseil", "urbanisme", "voirie"]
    assert exported["urbanisme"]["target_ref"].endswith("sharing/urbanisme.csv")

    rows = sharing_csv(tmp_path, "urbanisme")
    def find(path: str, who: str) -> dict[str, str]:
        [row] = [r for r in rows if r["path"] == path and r["who"] == who]
        return row

    groups = [(r["path"], r["who"], r["role"], r["inherited"]) for r in rows
              if r["who_type"] == "site_group" and r["item"] == "library"]
    assert sorted(groups) == sorted(
        (library, f"Service urbanisme {suffix}", role, "no")
        for library in ("Documents partagés", "Archives 1990-2010")
        for suffix, role in (("Owners", "owner"), ("Members", "write"), ("Visitors", "read")))
    plans = find("Documents partagés/Plans", "francois.dupre@ville-exemple.fr")
    assert (plans["item"], plans["role"], plans["inherited"], plans["mapping"],
            plans["target_login"], plans["external"]) == ("folder", "write", "no", "unmapped",
                                                         "", "no")
    below = find("Documents partagés/Plans/PLU 2025/Règlement écrit.pdf",
                 "francois.dupre@ville-exemple.fr")
    assert (below["item"], below["inherited"]) == ("file", "yes")
    anyone = find("Documents partagés/Plans/PLU 2025/Règlement écrit.pdf", "anyone")
    assert (anyone["who_type"], anyone["link_scope"], anyone["link_type"], anyone["role"],
            anyone["expires"], anyone["external"], anyone["inherited"]) == (
        "link", "anonymous", "view", "read", "2026-06-30T00:00:00+00:00", "yes", "no")
    organization = find("Archives 1990-2010/Permis 1998.pdf", "organization")
    assert (organization["link_scope"], organization["role"], organization["expires"],
            organization["external"]) == ("organization", "write", "", "no")
    guest = find("Archives 1990-2010/Permis 1998.pdf", "contact@geometre.example")
    assert (guest["link_scope"], guest["mapping"], guest["external"]) == (
        "users", "external", "yes")
    # Every item on the target has the site's three groups, its own or from its library.
    items = {r["path"] for r in rows}
    assert all(sum(1 for r in rows if r["path"] == path and r["who_type"] == "site_group")
               == 3 for path in items)
    assert len(rows) == len(items) * 3 + 1 + 2 + 1 + 1 + 1

    onedrive = sharing_csv(tmp_path, "alice")
    [owner] = [r for r in onedrive if r["path"] == "OneDrive"]
    assert (owner["who"], owner["role"], owner["mapping"], owner["target_login"]) == (
        AMELIE, "owner", "mapped", "alice")
    [invited] = [r for r in onedrive if r["who_type"] == "invitation"]
    assert (invited["path"], invited["who"], invited["external"]) == (
        "OneDrive/Lisez-moi.txt", "partenaire@asso.example", "yes")
    assert [r["role"] for r in onedrive if r["path"] == "OneDrive/Documents/Finances & budget"
            and r["who"] == "francois.dupre@ville-exemple.fr"] == ["write"]
    # The empty folder is not on the target: its permission is a line of the report.
    lost = [e for e in entries if e.get("code") == "sharing_not_on_target"]
    assert [(e["target"], e["message_en"].split(":")[0]) for e in lost] == [
        ("alice", "OneDrive/Vide")]
    assert "ne peut pas être reprise" in lost[0]["message_fr"]
