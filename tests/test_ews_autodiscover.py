"""The EWS address found by Autodiscover (POX) when the batch gives none: asked of the EWS
test server's Autodiscover endpoint, which answers as Microsoft's reference shapes it."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from connectors.base import ConnectError
from connectors.ews.autodiscover import candidates, discover
from tests import mailboxes
from tests.cli import bascule, report
from tests.ews_seed import DOMAIN, SERVICE_LOGIN
from tests.ews_server import AUTODISCOVER_PATH
from tests.test_engine_ews import write_batch as engine_batch

ALICE = f"alice@{DOMAIN}"


def poster(server: Any, login: str, password: str) -> Any:
    def post(url: str, body: bytes) -> requests.Response:
        return requests.post(url, data=body, auth=(login, password), timeout=30,
                             verify=str(server.ca_file),
                             headers={"Content-Type": "text/xml; charset=utf-8"})
    return post


def autodiscover_url(server: Any) -> str:
    return server.url.replace("/EWS/Exchange.asmx", AUTODISCOVER_PATH)


def test_the_reference_order_of_addresses_for_a_domain() -> None:
    assert candidates("alice@Ville.fr") == [
        "https://ville.fr/autodiscover/autodiscover.xml",
        "https://autodiscover.ville.fr/autodiscover/autodiscover.xml"]


def test_the_ews_address_comes_from_the_settings_and_a_redirect_is_followed(
        ews_server: Any) -> None:
    post = poster(ews_server, SERVICE_LOGIN, ews_server.service_password)
    url = autodiscover_url(ews_server)
    assert discover(ALICE, [url], post) == ews_server.url
    ews_server.tenant.autodiscover_redirects[f"a.martin@{DOMAIN}"] = ALICE
    assert discover(f"a.martin@{DOMAIN}", [url], post) == ews_server.url
    assert ews_server.stats["autodiscover"] == 3


def test_an_address_exchange_does_not_know_and_an_unreachable_one_are_named(
        ews_server: Any) -> None:
    post = poster(ews_server, SERVICE_LOGIN, ews_server.service_password)
    with pytest.raises(ConnectError) as caught:
        discover(f"personne@{DOMAIN}", ["https://127.0.0.1:9/autodiscover/autodiscover.xml",
                                        "http://127.0.0.1/autodiscover/autodiscover.xml",
                                        autodiscover_url(ews_server)], post)
    assert caught.value.code == "ews_autodiscover_failed"
    tried = caught.value.params["tried"]
    assert "127.0.0.1:9" in tried and "not https" in tried and "500" in tried


def test_a_wrong_password_is_a_refused_login_not_a_missing_address(ews_server: Any) -> None:
    with pytest.raises(ConnectError) as caught:
        discover(ALICE, [autodiscover_url(ews_server)],
                 poster(ews_server, SERVICE_LOGIN, "faux"))
    assert caught.value.code == "ews_login_refused"


def write_batch(folder: Any, server: Any, target: Any, autodiscover: str) -> str:
    return str(engine_batch(folder, server, target, endpoint=False,
                            extra=f'autodiscover_url = "{autodiscover}"'))


def test_a_batch_without_service_endpoint_runs_on_the_address_autodiscover_gives(
        ews_server, dovecot_factory, tmp_path, monkeypatch):
    target = dovecot_factory(users={"alice": "alice-target"})
    monkeypatch.setenv("EWS_SECRET", ews_server.service_password)
    monkeypatch.setenv("ALICE_TARGET", "alice-target")
    batch = write_batch(tmp_path, ews_server, target, autodiscover_url(ews_server))
    code, output = bascule("run", batch)
    assert code == 0, output
    notes = [row for row in report(tmp_path, "run")["entries"]
             if row.get("code") == "ews_endpoint_discovered"]
    assert [row["message_en"] for row in notes] == [
        f"EWS address found by Autodiscover: {ews_server.url}"]
    inbox = mailboxes.contents(target, "alice")[("INBOX",)]
    assert sum(inbox.values()) == 3


def test_a_batch_whose_autodiscover_knows_no_such_mailbox_stops_before_anything_moves(
        ews_server, dovecot_factory, tmp_path, monkeypatch):
    target = dovecot_factory(users={"alice": "alice-target"})
    monkeypatch.setenv("EWS_SECRET", ews_server.service_password)
    monkeypatch.setenv("ALICE_TARGET", "alice-target")
    batch = write_batch(tmp_path, ews_server, target, autodiscover_url(ews_server))
    mailboxes.write_users(tmp_path, [(f"personne@{DOMAIN}", "alice", "", "env:ALICE_TARGET")])
    for language, words in (("en", "Autodiscover did not give the EWS address of personne@"),
                            ("fr", "Autodiscover n'a pas donné l'adresse EWS de personne@")):
        code, output = bascule("--lang", language, "plan", batch)
        assert code == 2, output
        assert words in " ".join(output.split())
    assert not any(mailboxes.contents(target, "alice").values())
