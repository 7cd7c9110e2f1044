"""bench.ews: one small round runs end to end (it stops when a raw copier misses a message or
bascule's run fails) and writes its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_one_small_round_measures_every_tool(tmp_path: Path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "bench.ews", "--mailboxes", "2",
                           "--messages", "20", "--latency-ms", "5", "--rounds", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((out / "ews.json").read_text(encoding="utf-8"))
    [round_] = result["rounds"]
    assert result["messages"] == 40 and result["refused_for_concurrency"] == 0
    assert round_["bascule_seconds"] > 0 and round_["bascule_rerun_seconds"] > 0
    assert round_["raw_to_maildir_seconds"] > 0 and round_["requests"] > 0
    assert 0 < round_["peak_rss_mb"] < 400
