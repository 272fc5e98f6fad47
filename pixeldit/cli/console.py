"""One console, one error format and one set of exit codes for every command.

Exit codes (documented in the README):
    0  success
    1  bad input: a wrong path, a corrupt or mismatched file, an invalid setting
    2  usage: an unknown option or a missing argument (Typer's own)
    3  a check failed: the inputs are readable but do not pass (coverage, tiling, layout)
    4  a required external file is missing or does not match its checksum (weights, data)
    5  `compare`: comparable with a caveat (3 there: not comparable)
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from pixeldit.infra.shards import ShardTilingError
from pixeldit.infra.weights import ChecksumError, MissingWeightsError

EXIT_BAD_INPUT, EXIT_USAGE, EXIT_CHECK_FAILED, EXIT_MISSING_FILE, EXIT_CAVEAT = 1, 2, 3, 4, 5

EXIT_CODES_HELP = ("Exit codes: 0 success, 1 bad input, 2 usage error, 3 a check failed (compare: not comparable), "
                   "4 a required external file (weights, data) is missing or fails its checksum, "
                   "5 compare: comparable with a caveat.")

# Piped or redirected output is read by programs and `grep`: rich's 80-column default would cut names in tables
# (`PixelDiT-X…`). A terminal keeps its own width; an explicit COLUMNS still wins.
_PIPED_WIDTH = 10_000


def _width_for(stream) -> int | None:
    return None if stream.isatty() or os.environ.get("COLUMNS") else _PIPED_WIDTH


# soft_wrap: never break paths and commands across lines; they must stay copy-pasteable.
console = Console(soft_wrap=True, width=_width_for(sys.stdout))
errors = Console(stderr=True, soft_wrap=True, width=_width_for(sys.stderr))


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print `message` as an error on stderr and return the exit to raise (`raise fail(...)`)."""
    # Text keeps brackets in paths and settings literal instead of reading them as markup.
    errors.print(Text.assemble(("error: ", "bold red"), message), highlight=False)
    return typer.Exit(code=code)


def error_message(error: BaseException) -> str:
    """The text of a library error (a KeyError's own str() adds quotes around it)."""
    return str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)


@contextmanager
def exits_on(*bad_input: type[BaseException]) -> Iterator[None]:
    """Turn library errors into one message and exit code: a missing or mismatched external file exits 4,
    readable inputs that fail a check (shards that do not tile) exit 3, the given `bad_input` error types exit 1."""
    try:
        yield
    except (MissingWeightsError, ChecksumError) as error:   # before bad_input: they subclass OSError / ValueError
        raise fail(error_message(error), EXIT_MISSING_FILE) from None
    except ShardTilingError as error:                      # likewise a ValueError
        raise fail(error_message(error), EXIT_CHECK_FAILED) from None
    except bad_input as error:
        raise fail(error_message(error), EXIT_BAD_INPUT) from None


class DefaultCommandGroup(TyperGroup):
    """A group whose first word may be omitted: `GROUP ARGS` means `GROUP <default_command> ARGS`.

    Named subcommands and `--help` keep their meaning; options may come first (`GROUP --out DIR ARG`).
    """

    default_command = ""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


def default_command_group(name: str) -> type[DefaultCommandGroup]:
    """A `DefaultCommandGroup` class that runs `name` when no subcommand is given."""
    return type(f"DefaultTo{name.title()}", (DefaultCommandGroup,), {"default_command": name})
