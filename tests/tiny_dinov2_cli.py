"""`pixeldit-bench` with `dinov2` registered as the tiny test DINOv2 (helpers.py), for runs in fresh processes
(torchrun): `python tests/tiny_dinov2_cli.py eval imagenet ... --features inception,dinov2`. The weights are
read from $PIXELDIT_WEIGHTS, where the calling test wrote them."""
import sys

from helpers import tiny_dinov2_registrations

from pixeldit.cli.main import main

if __name__ == "__main__":
    for table, key, entry in tiny_dinov2_registrations().values():
        table[key] = entry
    main(sys.argv[1:])
