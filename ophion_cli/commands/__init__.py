"""The ``ophion`` commands, one module per group.

Each module defines its commands on its own module-level ``app = typer.Typer(...)``, and
:mod:`ophion_cli.main` adds every group with ``add_typer``: with a name for a group of
sub-commands (``ophion daemon ...``, ``ophion token ...``), without one for commands that sit at
the top level (Typer then merges them into the root, in the order they were added). A command
parses its arguments, fetches from the daemon's API or the core, and hands the result to
:mod:`ophion_cli.output`; it builds no table and no console itself.
"""
