"""``python -m ophion_cli`` is the ``ophion`` command."""

from ophion_cli.main import run

run()
