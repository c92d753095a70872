"""``python -m asymnet.inpaint RUN_DIR --mask bottom_half``: conditional generation by clamping.

The known pixels of test images are held at every step of the cooling chain and the rest generated;
:mod:`asymnet.inpainting` says what is measured and stored.
"""

from __future__ import annotations

import argparse

from asymnet.cli import add_common_arguments, run_command
from asymnet.inpainting import MASKS, measure_inpainting


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m asymnet.inpaint", description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--mask", default="bottom_half", help=f"the pixels to fill in: {', '.join(MASKS)}")
    parser.add_argument("--n", type=int, default=1000, help="test images to complete (default 1000)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_command("asymnet.inpaint", lambda: measure_inpainting(
        args.run_dir, args.mask, args.n, args.data, args.device, args.seed, args.quiet))


if __name__ == "__main__":
    raise SystemExit(main())
