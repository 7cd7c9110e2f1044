"""Memory of ``bascule verify`` against the size of the folder it reads.

A source Dovecot receives a folder of small messages, one size after the other; each time
``bascule run`` copies it into a target Dovecot, then ``bascule verify`` runs as a child
process whose peak RSS (VmHWM) is read. What matters is the growth from one size to the
next, per message.

    python -m bench.verify                       # 2,000 then 20,000 then 40,000 messages
    python -m bench.verify --sizes 1000,5000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.mail import seed_mailbox
from tests.corpus import CorpusMessage
from tests.dovecot import start_dovecot

ROOT = Path(__file__).resolve().parent.parent
USER, SECRET = "agent", "source-secret"
PROBE = """
import json, pathlib, sys
from migrate.batch import load_batch
from migrate.engine import Engine
engine = Engine(load_batch(pathlib.Path(sys.argv[1])), command="verify")
outcome = engine.verify()
engine.close()
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"summary": outcome.summary, "rss": int(peak.split()[1]) * 1024}))
"""


def small(start: int, count: int):
    for n in range(start, start + count):
        yield "INBOX", CorpusMessage(b"Subject: message %d\r\n\r\nbody %d\r\n" % (n, n),
                                     frozenset({"\\Seen"}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,20000,40000")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    env = {**os.environ, "BASCULE_SRC": SECRET}
    with tempfile.TemporaryDirectory(prefix="bascule-verify-") as scratch:
        folder = Path(scratch)
        folder.chmod(0o711)
        source = start_dovecot(folder / "source", {USER: SECRET})
        target = start_dovecot(folder / "target", {USER: SECRET})
        try:
            (folder / "users.csv").write_text(
                "source,target,source_secret,target_secret\n"
                f"{USER},{USER},env:BASCULE_SRC,env:BASCULE_SRC\n")
            (folder / "batch.toml").write_text(f"""
name = "memoire"
[source]
type = "imap"
host = "127.0.0.1"
port = {source.port}
security = "none"
[target]
type = "imap"
host = "127.0.0.1"
port = {target.port}
security = "none"
[run]
work_dir = "work"
""")
            held = 0
            peaks = {}
            for size in sizes:
                seed_mailbox(source, USER, small(held, size - held))
                held = size
                run = subprocess.run([sys.executable, "-m", "migrate", "run",
                                      str(folder / "batch.toml")], cwd=ROOT, env=env,
                                     capture_output=True, text=True, check=False)
                if run.returncode:
                    raise SystemExit(run.stdout + run.stderr)
                started = time.monotonic()
                probe = subprocess.run([sys.executable, "-c", PROBE, str(folder / "batch.toml")],
                                       cwd=ROOT, env=env, capture_output=True, text=True,
                                       check=True)
                result = json.loads(probe.stdout)
                assert result["summary"]["checked"] == size, result
                assert result["summary"]["mismatches"] == 0, result
                peaks[size] = result["rss"]
                print(f"{size} messages: verify peak RSS {result['rss'] / 2**20:.1f} MiB, "
                      f"{time.monotonic() - started:.1f} s", flush=True)
        finally:
            source.stop()
            target.stop()
    first = sizes[0]
    for size in sizes[1:]:
        growth = (peaks[size] - peaks[first]) / (size - first)
        print(f"from {first} to {size} messages: {growth:.0f} bytes a message")


if __name__ == "__main__":
    main()
