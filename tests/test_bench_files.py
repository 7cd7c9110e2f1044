"""bench.files: the corpus is what it says (accented folders, sizes in range, the large
files), and one small round of each tool lands every file whole on both servers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bench.files import DRIVE, LOGIN, TOOLS, corpus, measure


def test_the_corpus_has_accented_folders_small_files_and_large_ones(tmp_path: Path):
    written = corpus(tmp_path, files=60, folders=12, large=1, large_mb=2)
    drive = tmp_path / LOGIN / "files" / DRIVE
    sizes = {path: (drive / path).stat().st_size for path in written}
    small = [size for path, size in sizes.items() if not path.startswith("Archives/")]
    assert len(small) == 60 and all(1_000 <= size <= 200_000 for size in small)
    assert sizes["Archives/sauvegarde 0.bin"] == 2 << 20
    assert any("É" in path or "é" in path for path in written)
    assert all(len(Path(path).parts) == 4 for path in written if not path.startswith("Archives"))
    assert written == {path: hashlib.sha256((drive / path).read_bytes()).hexdigest()
                       for path in written}


@pytest.mark.parametrize("kind", ["wsgidav", "apache"])
def test_one_round_of_each_tool_lands_every_file(kind: str, tmp_path: Path):
    export = tmp_path / "export"
    expected = corpus(export, files=30, folders=5, large=1, large_mb=1)
    for tool in TOOLS:
        row = measure(kind, tool, 0, export, expected, 1.0, tmp_path)
        assert row["problem"] == "", row
        assert row["server_cpu_seconds"] > 0, row
        if tool == "bascule":
            assert row["summary"].startswith("31 copied"), row
