"""One module per CLI command; each registers itself in ``core.cli.COMMANDS`` when imported."""
