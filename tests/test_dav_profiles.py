"""What a DAV target's profile changes before anything moves: the audit's word on a source
container holding more than the target's clients handle well."""

from __future__ import annotations

from pathlib import Path

from tests.cli import bascule, report

LOGIN = "amelie.lefevre@ville-exemple.fr"


def card(number: int) -> bytes:
    return (f"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:contact-{number:05d}\r\n"
            f"FN:Contact {number}\r\nEND:VCARD\r\n").encode()


def test_the_audit_warns_of_an_address_book_over_what_bluemind_clients_handle(tmp_path: Path):
    export = tmp_path / "export" / LOGIN / "contacts"
    for book, count in (("Contacts", 1001), ("Élus", 1000)):
        (export / book).mkdir(parents=True)
        for number in range(count):
            (export / book / f"contact-{number:05d}.vcf").write_bytes(card(number))
    (tmp_path / "users.csv").write_text(f"source,target\n{LOGIN},{LOGIN}\n", encoding="utf-8")
    batch = tmp_path / "batch.toml"
    batch.write_text("""
name = "annuaire"
workloads = ["contacts"]
[source]
type = "folder"
path = "export"
[targets.contacts]
type = "dav"
url = "https://dav.ville.example/"
profile = "bluemind"
[run]
work_dir = "work"
""", encoding="utf-8")
    code, output = bascule("--lang", "fr", "audit", str(batch))
    assert code == 0, output
    rows = report(tmp_path, "audit")["entries"]
    warned = [row for row in rows if row.get("action") == "warning"]
    assert [row["folder"] for row in warned] == ["contacts:Contacts"], warned
    assert warned[0]["message_fr"].startswith(
        "1\u202f001 éléments : les clients d'un serveur bluemind gèrent bien jusqu'à environ "
        "1\u202f000 éléments")
    assert warned[0]["message_en"].startswith(
        "1,001 items: the clients of a bluemind server handle up to about 1,000 per")

    batch.write_text(batch.read_text().replace('profile = "bluemind"', 'profile = "cyrus"'))
    code, output = bascule("audit", str(batch))
    assert code == 0, output
    assert not [row for row in report(tmp_path, "audit")["entries"]
                if row.get("action") == "warning"]


def test_radicale_is_written_two_at_a_time_whatever_the_batch_says(tmp_path: Path):
    """Radicale writes through one lock: more writes at once only wait (docs/benchmarks.md);
    another server takes what the batch says."""
    from connectors import registry
    from connectors.dav.connector import DavConfig
    from tests.conformance.harness import StoreContext

    context = StoreContext(tmp_path, {"env:DAV": "secret"})
    connector = registry.connector("dav")
    assert connector.open_sink is not None
    for profile, lanes in (("radicale", 2), ("cyrus", 6), ("generic", 6)):
        config = DavConfig(type="dav", url="https://dav.ville.example/", connections=6,
                           profile=profile)
        sink = connector.open_sink(context, registry.Account(config, LOGIN, "env:DAV"),
                                   "calendar")
        assert sink.capabilities.parallel_writes == lanes, profile
        sink.close()
