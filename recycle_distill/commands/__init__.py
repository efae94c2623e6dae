"""Subcommands of the ``recycle-distill`` CLI (each: add_arguments(parser), run(args) -> int)."""
