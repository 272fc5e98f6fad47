"""The command line: every Typer app of `pixeldit-bench`, and nothing else imports this package."""
from pixeldit.cli.main import app, main

__all__ = ["app", "main"]
