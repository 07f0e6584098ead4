"""`python -m surd`: the command line (the application layer, surd.app.cli)."""

from surd.app.cli.main import main

main()
