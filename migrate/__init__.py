"""bascule's engine, ledger and command line."""

import time

LOADED = time.monotonic()
"""When bascule began loading: where a command run as a process starts, but for the
interpreter's own few tens of milliseconds (its imports come after, and are most of a
command's start)."""
