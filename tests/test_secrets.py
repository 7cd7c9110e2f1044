"""Secret references: read from the environment or a file, never shown."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from mappings.secrets import (
    Secret,
    SecretError,
    loose_permissions,
    reference_problem,
    resolve_secret,
    secret_warning,
)
from reports.i18n import Text

PASSWORD = "Tr0ub4dor&3"


def test_env_reference(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BASCULE_TEST_ALICE", PASSWORD)
    secret = resolve_secret("env:BASCULE_TEST_ALICE", base_dir=tmp_path)
    assert secret == PASSWORD
    assert isinstance(secret, Secret)


@pytest.mark.parametrize("value", [None, ""])
def test_env_unset_or_empty_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("BASCULE_TEST_BOB", raising=False)
    else:
        monkeypatch.setenv("BASCULE_TEST_BOB", value)
    with pytest.raises(SecretError) as caught:
        resolve_secret("env:BASCULE_TEST_BOB", base_dir=tmp_path)
    assert caught.value.code == "secret_env_unset"
    said = Text.of(caught.value.code, **caught.value.params)
    assert "BASCULE_TEST_BOB" in said.en
    assert "BASCULE_TEST_BOB" in said.fr and "variable d'environnement" in said.fr


def test_file_reference_relative_to_base_dir_first_line_only(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "alice").write_text(f"{PASSWORD}\r\nsecond line\n")
    assert resolve_secret("file:secrets/alice", base_dir=tmp_path) == PASSWORD


def test_file_reference_keeps_inner_spaces_and_takes_an_absolute_path(tmp_path: Path) -> None:
    secret_file = tmp_path / "pass"
    secret_file.write_text(" a b \n")
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    assert resolve_secret(f"file:{secret_file}", base_dir=elsewhere) == " a b "


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SecretError) as caught:
        resolve_secret("file:nowhere/alice", base_dir=tmp_path)
    assert caught.value.code == "secret_file_missing"
    assert "nowhere" in Text.of(caught.value.code, **caught.value.params).en


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(SecretError) as caught:
        resolve_secret("file:.", base_dir=tmp_path)
    assert caught.value.code == "secret_file_unreadable"


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\nsomething\n")
    with pytest.raises(SecretError) as caught:
        resolve_secret("file:empty", base_dir=tmp_path)
    assert caught.value.code == "secret_empty"


@pytest.mark.parametrize("text", [PASSWORD, "env:", "env:NOT A NAME", "file:", "file:  ",
                                  "ENV:X", "password:env:X", ""])
def test_anything_else_is_not_a_reference(text: str, tmp_path: Path) -> None:
    assert reference_problem(text) == "secret_not_reference"
    with pytest.raises(SecretError) as caught:
        resolve_secret(text, base_dir=tmp_path)
    assert caught.value.code == "secret_not_reference"


def test_a_password_given_instead_of_a_reference_is_not_echoed(tmp_path: Path) -> None:
    with pytest.raises(SecretError) as caught:
        resolve_secret(PASSWORD, base_dir=tmp_path)
    said = Text.of(caught.value.code, **caught.value.params)
    for shown in (str(caught.value), repr(caught.value), said.en, said.fr):
        assert PASSWORD not in shown


def test_repr_of_anything_holding_a_secret_hides_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BASCULE_TEST_ALICE", PASSWORD)

    @dataclass
    class Login:
        user: str
        password: str

    login = Login("alice", resolve_secret("env:BASCULE_TEST_ALICE", base_dir=tmp_path))
    assert PASSWORD not in repr(login)
    assert PASSWORD not in repr([login.password, {"p": login.password}])
    assert repr(login.password) == "Secret('***')"
    # Still the password where a str is needed (a LOGIN command).
    assert f"{login.password}" == PASSWORD
    assert login.password.encode() == PASSWORD.encode()


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_loose_permissions_warn_in_both_languages(tmp_path: Path) -> None:
    secret_file = tmp_path / "alice"
    secret_file.write_text(PASSWORD)
    secret_file.chmod(0o600)
    assert not loose_permissions(secret_file)
    assert secret_warning("file:alice", base_dir=tmp_path) is None
    secret_file.chmod(0o644)
    assert loose_permissions(secret_file)
    warning = secret_warning("file:alice", base_dir=tmp_path)
    assert warning is not None
    assert warning.code == "secret_file_loose_permissions"
    said = Text.of(warning.code, **warning.params)
    assert "chmod 600" in said.en and "chmod 600" in said.fr
    assert PASSWORD not in said.en
    assert secret_warning("env:X", base_dir=tmp_path) is None
