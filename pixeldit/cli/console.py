"""One console, one error format and one set of exit codes for every command.

Exit codes (documented in the README):
    0  success
    1  bad input: a wrong path, a corrupt or mismatched file, an invalid setting
    2  usage: an unknown option or a missing argument (Typer's own)
    3  a check failed: the inputs are readable but do not pass (coverage, tiling, layout)
    4  a required external file is missing or does not match its checksum (weights, data)
"""
from __future__ import annotations

import typer
from rich.console import Console

EXIT_BAD_INPUT, EXIT_USAGE, EXIT_CHECK_FAILED, EXIT_MISSING_FILE = 1, 2, 3, 4

console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print `message` as an error on stderr and return the exit to raise (`raise fail(...)`)."""
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code=code)
