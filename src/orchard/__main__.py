"""`python -m orchard` runs the CLI."""

from orchard.cli import main

main()
