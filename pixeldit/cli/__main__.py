"""`python -m pixeldit.cli` (what torchrun runs): the same app as the `pixeldit-bench` script."""
from pixeldit.cli.main import app

app()
