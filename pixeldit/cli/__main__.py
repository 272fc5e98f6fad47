"""`python -m pixeldit.cli` (what torchrun runs): the same entry point as the `pixeldit-bench` script."""
from pixeldit.cli.main import main

main()
