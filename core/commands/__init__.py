"""One module per CLI command (``add_arguments`` and ``run``); :mod:`core.cli` lists them in a table."""
