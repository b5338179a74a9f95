"""``python -m shoppulse`` runs the CLI (the stack starts its own children this way)."""

from shoppulse.cli import main

main()
