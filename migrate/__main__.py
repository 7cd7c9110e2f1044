"""``python -m migrate`` is ``bascule``."""

from migrate.cli import main

main()
