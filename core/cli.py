"""CLI infrastructure for ``python -m core <command> ...`` — the same operations as the app, for scripts and CI.

Conventions every command follows:

* ``--json`` prints exactly one JSON object as the **last line** of stdout.
* Exit code 0 on success, 2 with a one-paragraph message on stderr when the input is unusable.
* Human-readable progress goes to stderr, so stdout stays parseable.
"""

from __future__ import annotations

import argparse
import sys

from core.commands import audit, compare, dataset, demo, embed, evaluate, export, ood, predict, report, train
from core.commands.common import CLIError


#: Every command, by name: its module in :mod:`core.commands` has ``add_arguments(parser)`` and ``run(args)``.
COMMANDS = {
    "audit": audit,
    "compare": compare,
    "dataset": dataset,
    "demo": demo,
    "embed": embed,
    "evaluate": evaluate,
    "export": export,
    "ood": ood,
    "predict": predict,
    "report": report,
    "train": train,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="Loupe: image-classification workbench CLI")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in sorted(COMMANDS.items()):
        doc = (module.run.__doc__ or "").strip()
        module.add_arguments(sub.add_parser(name, help=doc.splitlines()[0] if doc else None))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(COMMANDS[args.command].run(args) or 0)
    except CLIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only or unusable workspace: a message, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


