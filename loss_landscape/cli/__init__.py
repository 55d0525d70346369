"""The commands: one module per command, each with ``get_args_parser``, ``main`` and ``run``; `main_entry`
holds the ``loss-landscape`` command that dispatches to them; `_runner` is the one place for MPI set-up,
failures, exit codes and what a command prints.
"""

