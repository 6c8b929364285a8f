"""CLI: ``python -m tools.replicas --kind sd2-depth|sd2-base|sd15|sdxl|ssd1b --out DIR``."""

from __future__ import annotations

import argparse
import sys

from tools.replicas.builders import CONTROLNET_SIZES, DTYPES, KINDS, build_replica


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.replicas",
        description="Write a reduced-size, random-weight replica of a public model folder "
        "(real layout and config keys; loads with vanilla diffusers).",
    )
    parser.add_argument("--kind", required=True, choices=KINDS, help="which public folder")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--dtype", default="fp32", choices=tuple(DTYPES), help="weights on disk")
    parser.add_argument(
        "--variant", default=None, help="file-name variant as on the hub, e.g. fp16"
    )
    parser.add_argument(
        "--controlnet", default=None, choices=CONTROLNET_SIZES, help="also write a depth ControlNet"
    )
    parser.add_argument(
        "--controlnet-out", default=None, help="its folder (default: <out>-controlnet-depth)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = build_replica(
        args.kind,
        args.out,
        args.dtype,
        args.variant,
        args.controlnet,
        args.controlnet_out,
        args.seed,
    )
    print(f"wrote {args.kind} replica ({args.dtype}) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
