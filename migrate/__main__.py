"""``python -m migrate`` is ``bascule``."""

from migrate.cli import entry

entry()
