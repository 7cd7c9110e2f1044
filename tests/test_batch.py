"""The batch file: validation errors name the key and what to write instead."""

import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from migrate.batch import BatchError, batch_warnings, load_batch
from migrate.cli import main

GOOD = """
name = "lot-1"
[source]
type = "imap"
host = "127.0.0.1"
port = 993
security = "tls"
[target]
type = "imap"
host = "127.0.0.1"
port = 993
security = "tls"
[target.admin]
login = "migration"
secret = "env:ADMIN"
style = "master"
[mapping]
users = "users.csv"
[mail]
exclude = ["Sync Issues*"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "batch.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_example_shape_loads(tmp_path):
    batch = load_batch(write(tmp_path, GOOD))
    assert batch.source.host == "127.0.0.1"
    assert batch.target.admin.login == "migration"
    assert batch.mail.exclude == ["Sync Issues*"]
    assert batch.work_dir == tmp_path / "bascule-work"


def test_a_literal_password_is_refused_and_not_echoed(tmp_path):
    text = GOOD.replace('secret = "env:ADMIN"', 'secret = "hunter2"')
    with pytest.raises(BatchError) as caught:
        load_batch(write(tmp_path, text))
    message = " ".join(p.en for p in caught.value.problems)
    assert "target.admin.secret" in message
    assert "env:NAME" in message
    assert "hunter2" not in message


def test_unknown_key_and_missing_key_are_named(tmp_path):
    text = GOOD.replace('host = "127.0.0.1"\nport = 993\nsecurity = "tls"\n[target]',
                        'hots = "127.0.0.1"\n[target]')
    with pytest.raises(BatchError) as caught:
        load_batch(write(tmp_path, text))
    keys = [p.params.get("key") for p in caught.value.problems]
    assert "source.hots" in keys
    assert "source.host" in keys
    assert caught.value.problems[0].fr != caught.value.problems[0].en


def test_bad_toml_names_the_file_and_exit_code_is_2(tmp_path):
    path = write(tmp_path, "name = \n")
    result = CliRunner().invoke(main, ["plan", str(path)])
    assert result.exit_code == 2
    assert str(path) in result.output


def test_bad_type_lists_what_is_allowed(tmp_path):
    with pytest.raises(BatchError) as caught:
        load_batch(write(tmp_path, GOOD.replace('type = "imap"', 'type = "pop3"', 1)))
    assert "imap, maildir, mbox, eml" in caught.value.problems[0].en


def test_init_writes_an_example_that_loads(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["init", str(tmp_path / "batch.toml")])
    assert result.exit_code == 0, result.output
    batch = load_batch(tmp_path / "batch.toml")
    assert batch.name == "lot-1"
    assert (tmp_path / "users.csv").read_text().startswith("source,target,")
    again = runner.invoke(main, ["init", str(tmp_path / "batch.toml")])
    assert again.exit_code == 2


def test_schema_is_json_with_the_sections():
    import json

    result = CliRunner().invoke(main, ["schema"])
    schema = json.loads(result.output)
    assert {"source", "target", "mapping", "mail", "run"} <= set(schema["properties"])


GRAPH = """
name = "m365"
[source]
type = "graph"
tenant = "ville.onmicrosoft.com"
client_id = "11111111-2222-3333-4444-555555555555"
client_secret = "env:BASCULE_GRAPH_SECRET"
[target]
type = "maildir"
path = "cible"
"""


def test_a_graph_source_loads_with_public_defaults(tmp_path):
    batch = load_batch(write(tmp_path, GRAPH))
    assert batch.source.authority == "https://login.microsoftonline.com"
    assert batch.source.graph_url == "https://graph.microsoft.com"
    assert batch.source.per_mailbox == 4


EXCHANGE_IMAP = """
name = "exchange"
[source]
type = "imap"
host = "outlook.office365.com"
[source.oauth]
tenant = "ville.onmicrosoft.com"
client_id = "11111111-2222-3333-4444-555555555555"
client_secret = "env:BASCULE_APP_SECRET"
[target]
type = "maildir"
path = "cible"
"""


def test_an_exchange_imap_source_asks_for_the_outlook_scope(tmp_path):
    batch = load_batch(write(tmp_path, EXCHANGE_IMAP))
    assert batch.source.oauth.scope == "https://outlook.office365.com/.default"
    assert batch.source.oauth.authority == "https://login.microsoftonline.com"
    assert batch.source.port == 993 and batch.source.security == "tls"


@pytest.mark.parametrize(("base", "change", "key", "expected"), [
    (GRAPH, ('client_secret = "env:BASCULE_GRAPH_SECRET"', 'client_secret = "s3cr3t-value"'),
     "source.client_secret", "env:NAME"),
    (GRAPH, ('client_secret = "env:BASCULE_GRAPH_SECRET"', ""), "source",
     "client_secret or certificate"),
    (GRAPH, ('tenant = ', 'authority = "http://login.example"\ntenant = '), "source.authority",
     "https://"),
    (GRAPH, ('client_secret = "env:BASCULE_GRAPH_SECRET"',
             'client_secret = "env:X"\ncertificate = "app.pem"'), "source", "one of them"),
    (EXCHANGE_IMAP, ('client_secret = "env:BASCULE_APP_SECRET"', 'client_secret = "s3cr3t-value"'),
     "source.oauth.client_secret", "env:NAME"),
    (EXCHANGE_IMAP, ('client_secret = "env:BASCULE_APP_SECRET"', ""), "source.oauth",
     "client_secret or certificate"),
    (EXCHANGE_IMAP, ("[source.oauth]", ('[source.admin]\nlogin = "m"\nsecret = "env:M"\n'
                                       '[source.oauth]')), "source", "admin or oauth"),
])
def test_sign_in_errors_name_the_key(tmp_path, base, change, key, expected):
    with pytest.raises(BatchError) as caught:
        load_batch(write(tmp_path, base.replace(*change)))
    [problem] = caught.value.problems
    assert problem.params["key"] == key
    assert expected in problem.en
    assert "s3cr3t-value" not in problem.en


def test_graph_cannot_be_a_target(tmp_path):
    text = GRAPH.replace('[target]\ntype = "maildir"\npath = "cible"',
                         '[target]\ntype = "graph"\ntenant = "t"\nclient_id = "c"\n'
                         'client_secret = "env:S"')
    with pytest.raises(BatchError) as caught:
        load_batch(write(tmp_path, text))
    assert caught.value.problems[0].en == "target: type must be one of imap, maildir"


def test_each_workload_names_its_target(tmp_path):
    text = GRAPH.replace('name = "m365"', 'name = "m365"\nworkloads = ["mail", "files", '
                         '"calendar"]') + """
[targets.files]
type = "folder"
path = "espaces"
[targets.calendar]
type = "folder"
path = "agendas"
"""
    batch = load_batch(write(tmp_path, text))
    assert batch.target_of("files").path == Path("espaces")
    assert batch.target_of("calendar").path == Path("agendas")
    assert batch.target_of("mail").type == "maildir"
    assert batch_warnings(batch) == []


def test_a_batch_of_the_former_form_still_runs_and_is_shown_the_new_one(tmp_path):
    text = GRAPH.replace('name = "m365"', 'name = "m365"\nworkloads = ["mail", "contacts"]') \
        + '[documents]\npath = "docs"\n'
    batch = load_batch(write(tmp_path, text))
    assert batch.target_of("contacts").type == "folder"
    assert batch.target_of("contacts").path == Path("docs")
    [notice] = [w for w in batch_warnings(batch) if w.code == "documents_former_form"]
    assert '[targets.contacts]\ntype = "folder"\npath = "docs"' in notice.en
    assert notice.fr.startswith("[documents] est l'ancienne forme : contacts vont")


def test_a_workload_goes_only_to_a_sink_that_writes_it(tmp_path):
    text = GRAPH.replace('name = "m365"', 'name = "m365"\nworkloads = ["files"]') \
        + '[targets.files]\ntype = "maildir"\npath = "x"\n'
    with pytest.raises(BatchError) as caught:
        load_batch(write(tmp_path, text))
    assert [p.en for p in caught.value.problems] == [
        "targets.files: type must be one of folder, webdav"]


def test_a_workload_the_source_does_not_read_is_refused_naming_who_reads_it(tmp_path):
    text = GOOD.replace('name = "lot-1"', 'name = "lot-1"\nworkloads = ["mail", "calendar"]')
    with pytest.raises(BatchError) as caught:
        load_batch(write(tmp_path, text))
    [problem] = caught.value.problems
    assert problem.en.endswith("workloads calendar: the source type imap does not read them "
                               "(source types that do: graph, folder, ews, dav)")


def test_mistakes_are_said_in_french_through_to_their_detail(tmp_path):
    text = GOOD.replace('security = "tls"\n[target]', 'security = "clair"\nconnections = 99\n'
                        '[target]').replace('port = 993\nsecurity = "tls"\n[target.admin]',
                                            'port = "x"\nsecurity = "tls"\n[target.admin]')
    text = text.replace('secret = "env:ADMIN"', 'secret = "motdepasse"')
    with pytest.raises(BatchError) as caught:
        load_batch(write(tmp_path, text))
    assert [p.fr for p in caught.value.problems] == [
        "source.security : doit être l'un de 'tls', 'starttls', 'none'",
        "source.connections : doit valoir au plus 32",
        "target.port : doit être un nombre entier",
        ("target.admin.secret : doit être une référence comme « env:NOM » ou "
         "« file:chemin/du/secret », jamais le secret lui-même"),
    ]
    assert "motdepasse" not in " ".join(p.fr + p.en for p in caught.value.problems)


def test_a_server_reply_in_utf8_is_not_logged_as_a_decoding_warning(caplog):
    """imapclient warns with the raw bytes when a reply text is not ASCII (Dovecot's NO for
    a missing folder with an accented name): once a command has started, that warning is
    not shown."""
    from imapclient.util import to_unicode

    from tests.cli import bascule

    code, _ = bascule("connectors")
    assert code == 0
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        to_unicode("Mailbox doesn't exist: Archives/Courrier arrivé".encode())
    assert not [r for r in caplog.records if r.name == "imapclient.util"]


def test_a_login_a_target_section_names_that_the_users_table_lacks_is_a_warning(tmp_path):
    """``acl_mailboxes`` naming a login no line of the users table has as its target would
    set ACLs on nobody: plan says so, naming the key and the login, in both languages."""
    from migrate.batch import unknown_target_logins

    text = GOOD.replace("[target.admin]", 'acl_mailboxes = ["accueil", "Direction"]\n'
                        "[target.admin]", 1)
    batch = load_batch(write(tmp_path, text))
    warnings = unknown_target_logins(batch, {"direction", "alice"})
    assert [(w.en, w.fr) for w in warnings] == [(
        ("acl_mailboxes: accueil is the target of no line of the users table: nothing is "
        "applied to it"),
        ("acl_mailboxes : accueil n'est la cible d'aucune ligne de la table des utilisateurs"
        " : rien ne lui est appliqué"))]
