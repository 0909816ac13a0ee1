"""The CLI: ``python -m core <command> ...`` — the same operations as the app, for scripts and CI.

Conventions every command follows (see :mod:`core.cli`):

* ``--json`` prints exactly one JSON object as the **last line** of stdout.
* Exit code 0 on success, 2 with a one-paragraph message on stderr when the input is unusable.
* Human-readable progress goes to stderr, so stdout stays parseable.

Each command lives in its own module under :mod:`core.commands`.
"""

import sys

from core.cli import main

if __name__ == "__main__":
    sys.exit(main())
