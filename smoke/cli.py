"""What the command-line tools share: --help that shows defaults, the stack arguments, and the
check that an output path can be written before any work starts.

Used by ``python -m smoke`` (checks/runner.py), ``python -m smoke.local.render``,
``python -m smoke.drills.backup`` and ``python -m policies.analyze`` (``make policy``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path


class HelpWithDefaults(argparse.RawDescriptionHelpFormatter):
    """--help with each option's default (where it has one worth showing), the description's line
    breaks kept."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = action.default not in (None, True, False, argparse.SUPPRESS)
        if shown and action.option_strings and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    """``--stack NAME`` and ``--stack-file PATH``; :func:`stack_of` reads them back."""
    parser.add_argument("--stack", help="stack name: reads Pulumi.<stack>.yaml (default: dev)")
    parser.add_argument(
        "--stack-file",
        type=Path,
        metavar="PATH",
        help="read this stack file instead (the stack's name: PATH's Pulumi.<name>.yaml, unless --stack is given)",
    )


def stack_name_of(path: Path) -> str:
    """The stack a stack file is for: ``Pulumi.<stack>.yaml`` (any other name: its stem)."""
    name = path.name
    if name.startswith("Pulumi.") and name.endswith((".yaml", ".yml")) and name.count(".") >= 2:
        return name[len("Pulumi.") :].rsplit(".", 1)[0]
    return path.stem


def stack_of(args: argparse.Namespace) -> str:
    """The stack the arguments of :func:`add_stack_arguments` name (default dev)."""
    return args.stack or (stack_name_of(args.stack_file) if args.stack_file else "dev")


def unwritable(path: Path, directory: bool = False) -> str | None:
    """Why ``path`` (a file, or a directory to be replaced) cannot be written; None when it can.

    Checked before any work, so a bad ``--out`` or ``--report`` costs nothing and leaves nothing
    behind: the nearest existing ancestor must be a directory this process can create files in."""
    if path.exists() and path.is_dir() != directory:
        return f"{path} is {'a file, not a directory' if directory else 'a directory, not a file'}"
    if path.exists() and not os.access(path, os.W_OK):
        return f"{path} is not writable"
    ancestor = path if path.is_dir() else path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{ancestor} is a file, not a directory"
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as exc:
        return f"cannot create files in {ancestor} ({exc.strerror})"
    return None
