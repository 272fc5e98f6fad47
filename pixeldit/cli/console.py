"""One console, one error format and one set of exit codes for every command.

Exit codes (documented in the README):
    0  success
    1  bad input: a wrong path, a corrupt or mismatched file, an invalid setting
    2  usage: an unknown option or a missing argument (Typer's own)
    3  a check failed: the inputs are readable but do not pass (coverage, tiling, layout)
    4  a required external file is missing or does not match its checksum (weights, data)
    5  `compare`: comparable with a caveat (3 there: not comparable)
   70  an unexpected internal error (a bug): one line on stderr; `pixeldit-bench --debug ...` shows the traceback
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

from pixeldit.infra.devices import DeviceError
from pixeldit.infra.shards import ShardTilingError
from pixeldit.infra.weights import ChecksumError, MissingWeightsError

EXIT_BAD_INPUT, EXIT_USAGE, EXIT_CHECK_FAILED, EXIT_MISSING_FILE, EXIT_CAVEAT = 1, 2, 3, 4, 5
EXIT_INTERNAL = 70   # sysexits.h EX_SOFTWARE

EXIT_CODES_HELP = ("Exit codes: 0 success, 1 bad input, 2 usage error, 3 a check failed (compare: not comparable), "
                   "4 a required external file (weights, data) is missing or fails its checksum, "
                   "5 compare: comparable with a caveat, 70 an internal error (--debug shows its traceback).")

# Piped or redirected output is read by programs and `grep`: rich's 80-column default would cut names in tables
# (`PixelDiT-X…`). A terminal keeps its own width; an explicit COLUMNS still wins.
_PIPED_WIDTH = 10_000


def _width_for(stream) -> int | None:
    return None if stream.isatty() or os.environ.get("COLUMNS") else _PIPED_WIDTH


# soft_wrap: never break paths and commands across lines; they must stay copy-pasteable.
console = Console(soft_wrap=True, width=_width_for(sys.stdout))
errors = Console(stderr=True, soft_wrap=True, width=_width_for(sys.stderr))


def print_error(message: str) -> None:
    # Text keeps brackets in paths and settings literal instead of reading them as markup.
    errors.print(Text.assemble(("error: ", "bold red"), message), highlight=False)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print `message` as an error on stderr and return the exit to raise (`raise fail(...)`)."""
    print_error(message)
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
    except DeviceError as error:                           # every command with --device
        raise fail(error_message(error), EXIT_BAD_INPUT) from None
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


def debug_requested() -> bool:
    """`pixeldit-bench --debug ...` or PIXELDIT_DEBUG=1: let unexpected errors show their traceback."""
    return os.environ.get("PIXELDIT_DEBUG", "") not in ("", "0")


def unhandled_error(error: BaseException) -> tuple[str, int]:
    """(message, exit code) for an error no command turned into a message: a package missing from the base
    set-up names the command that installs it (exit 4); a file-system error names the path and the reason
    (exit 1); anything else is a bug (exit 70) and says how to see its traceback."""
    if isinstance(error, ModuleNotFoundError) and error.name:
        return (f"the Python package that provides `{error.name}` is not installed here: the base set-up installs only "
                f"what the embedded benchmark needs; `PIXELDIT_STACKS=full bash .ci/bootstrap.sh true` installs the "
                f"rest (.ci/requirements-full.txt, about a minute)", EXIT_MISSING_FILE)
    if isinstance(error, OSError) and error.strerror:
        paths = " -> ".join(str(name) for name in (error.filename, error.filename2) if name is not None)
        where = f"{paths}: " if paths else ""
        return (f"{where}{error.strerror}; check that the path exists, is a folder where a folder is meant, "
                f"is writable and that its disk is not full", EXIT_BAD_INPUT)
    return (f"internal error: {type(error).__name__}: {error_message(error)}; this is a bug in pixeldit-bench: "
            f"rerun with `pixeldit-bench --debug ...` for the traceback and report it", EXIT_INTERNAL)
