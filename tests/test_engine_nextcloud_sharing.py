"""End to end: a site and a OneDrive with their sharing, moved by ``bascule run`` from the
Graph test server into the Nextcloud test server (tests/nextcloud.py) with ``apply_sharing``:
the shares read back from Nextcloud's OCS Share API by plain GETs match the CSV row by row;
a second run makes none again; another profile refuses the option."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.cli import bascule, report
from tests.graph_files import running_download_server, seed_files, seed_sharing
from tests.graph_server import french_tenant, running_graph_server
from tests.nextcloud import Nextcloud, start_nextcloud
from tests.test_engine_spaces import AMELIE, SPACES, sharing_csv, write_batch

FRANCOIS = "francois.dupre@ville-exemple.fr"
ACCOUNTS = {**SPACES, "francois": "francois-target"}
LINES = {"urbanisme": "site:Service urbanisme", "francois": FRANCOIS}
EDIT_ON_FOLDER, EDIT_ON_FILE, READ = 15, 3, 1


def expected_shares(rows: list[dict[str, str]], space: str, now: datetime
                    ) -> set[tuple[str, int, str, int, str]]:
    """The shares the CSV's rows call for on Nextcloud: (path, type, with, permissions,
    expiry day), written from the rows' meaning, not from bascule's code."""
    wanted = set()
    for row in rows:
        if row["inherited"] == "yes":
            continue
        edit = EDIT_ON_FILE if row["item"] == "file" else EDIT_ON_FOLDER
        if row["mapping"] == "mapped" and row["target_login"] != space:
            wanted.add(("/" + row["path"], 0, row["target_login"],
                        edit if row["role"] == "write" else READ, ""))
        if row["link_scope"] == "anonymous":
            expires = datetime.fromisoformat(row["expires"]) if row["expires"] else None
            if expires is None or expires > now:
                wanted.add(("/" + row["path"], 3, "",
                            edit if row["link_type"] == "edit" else READ,
                            expires.date().isoformat() if expires else ""))
    return wanted


def on_nextcloud(server: Nextcloud, space: str) -> set[tuple[str, int, str, int, str]]:
    return {(s["path"], s["share_type"], s["share_with"] or "", s["permissions"],
             (s["expiration"] or "")[:10]) for s in server.shares(space)}


def test_sharing_is_applied_through_the_share_api_once(certificates, tmp_path, monkeypatch):
    """François (a line of the table, not run) gets a user share of the Plans folder and of
    Amélie's budget folder, with edit's permissions on a folder; the anonymous link on Plans
    becomes a public link expiring the same day; the one on the PLU regulation expired at
    the source and is not made; the organisation's link, the guest, the invitation and the
    site's groups are report lines, never shares."""
    now = datetime.now(UTC)
    tenant = french_tenant(users=3, inbox_messages=1)
    files = seed_files(tenant, big_file_size=1 << 10)
    seed_sharing(tenant, files)
    documents = files.site("Service urbanisme").drives[0]
    until = (now + timedelta(days=90)).replace(hour=12, minute=0, second=0, microsecond=0)
    files.grant(documents.at("Plans"), ["write"],
                link={"type": "edit", "scope": "anonymous", "webUrl": "https://x/:f:/s/u/E1"},
                expirationDateTime=until.strftime("%Y-%m-%dT%H:%M:%SZ"))
    server = start_nextcloud(tmp_path / "nextcloud", ACCOUNTS)
    for space, secret in ACCOUNTS.items():
        monkeypatch.setenv(f"{space.upper()}_TARGET", secret)
    try:
        with running_graph_server(tenant, certificates) as graph, \
                running_download_server(files, certificates):
            monkeypatch.setenv("GRAPH_SECRET", graph.tenant.client_secret)
            batch = write_batch(tmp_path, graph, certificates, server,  # type: ignore[arg-type]
                                'profile = "nextcloud"\napply_sharing = true', lines=LINES)
            selected = f"{AMELIE},site:Service urbanisme"
            code, output = bascule("run", str(batch), "--users", selected)
            assert code == 0, output
            first = {space: server.shares(space) for space in ("alice", "urbanisme")}
            for space in ("alice", "urbanisme"):
                rows = sharing_csv(tmp_path, space)
                assert on_nextcloud(server, space) == expected_shares(rows, space, now), space
            assert on_nextcloud(server, "urbanisme") == {
                ("/Documents partagés/Plans", 0, "francois", EDIT_ON_FOLDER, ""),
                ("/Documents partagés/Plans", 3, "", EDIT_ON_FOLDER, until.date().isoformat())}
            assert on_nextcloud(server, "alice") == {
                ("/OneDrive/Documents/Finances & budget", 0, "francois", EDIT_ON_FOLDER, "")}
            assert server.shares("francois") == []

            entries = [e for e in report(tmp_path, "run")["entries"]
                       if e.get("action") == "sharing"]
            said = {(e["target"], e["code"], e["message_en"].split(":")[0]) for e in entries}
            assert ("urbanisme", "sharing_share_organization",
                    "Archives 1990-2010/Permis 1998.pdf") in said
            assert ("urbanisme", "sharing_share_external",
                    "Archives 1990-2010/Permis 1998.pdf") in said
            assert ("urbanisme", "sharing_share_expired",
                    "Documents partagés/Plans/PLU 2025/Règlement écrit.pdf") in said
            assert ("alice", "sharing_share_external", "OneDrive/Lisez-moi.txt") in said
            assert ("alice", "sharing_share_own_space", "OneDrive") in said
            groups = [e for e in entries if e["code"] == "sharing_share_group"]
            assert len(groups) == 6 and all(e["target"] == "urbanisme" for e in groups)
            assert "pas d'équivalent" in next(
                e for e in entries if e["code"] == "sharing_share_organization")["message_fr"]
            summary = {e["target"]: e for e in entries if e["code"] == "sharing_applied"}
            assert "made 2, already there 0" in summary["urbanisme"]["message_en"]
            assert all(s["token"] not in output + str(entries)
                       for s in first["urbanisme"] if s["token"])

            code, output = bascule("run", str(batch), "--users", selected)
            assert code == 0, output
            assert {space: server.shares(space) for space in ("alice", "urbanisme")} == first
            entries = [e for e in report(tmp_path, "run")["entries"]
                       if e.get("action") == "sharing"]
            assert sorted(e["message_en"].split(":")[0] for e in entries
                          if e["code"] == "sharing_share_present") == [
                "Documents partagés/Plans", "Documents partagés/Plans",
                "OneDrive/Documents/Finances & budget"]
            assert not [e for e in entries if e["code"].endswith("_created")]
    finally:
        server.stop()


def test_apply_sharing_is_refused_without_the_nextcloud_profile(certificates, tmp_path,
                                                                monkeypatch):
    tenant = french_tenant(users=3, inbox_messages=1)
    server = start_nextcloud(tmp_path / "nextcloud", ACCOUNTS)
    try:
        with running_graph_server(tenant, certificates) as graph:
            monkeypatch.setenv("GRAPH_SECRET", graph.tenant.client_secret)
            batch = write_batch(tmp_path, graph, certificates, server,  # type: ignore[arg-type]
                                'profile = "generic"\napply_sharing = true', lines=LINES)
            code, output = bascule("run", str(batch))
    finally:
        server.stop()
    assert code == 2, output
    assert "apply_sharing" in output and 'profile = "nextcloud"' in output
    assert "generic" in output
