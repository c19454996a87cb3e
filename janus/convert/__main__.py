"""``python -m janus.convert {torchvision,timm,open_clip} WEIGHTS --workdir DIR``.

Converts a local PyTorch state dict (``.safetensors``, or ``.pt``/``.pth``/``.bin`` read with
``torch.load(weights_only=True)``) into a janus checkpoint at ``DIR/checkpoints/<step>/`` that
``python -m janus.evaluate`` loads like a training run. The architecture is read from the weights.
"""

from __future__ import annotations

import argparse
import sys

from janus.convert import FAMILIES, convert_file
from janus.convert.assemble import at_resolution, save


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m janus.convert", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("family", choices=sorted(FAMILIES), help="where the weights come from")
    p.add_argument("weights", help="local .safetensors / .pt / .pth / .bin state dict")
    p.add_argument("--workdir", required=True, help="output run directory")
    p.add_argument("--step", type=int, default=0, help="checkpoint step number (default 0)")
    p.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16"], help="compute dtype"
    )
    p.add_argument(
        "--activation",
        default="quick_gelu",
        choices=["quick_gelu", "gelu"],
        help="open_clip only: quick_gelu for OpenAI weights (default), gelu for LAION configs",
    )
    p.add_argument(
        "--num-heads", type=int, default=None, help="timm ViTs outside the registry sizes"
    )
    p.add_argument("--scan-layers", action="store_true", help="ViTs: write the scanned layout")
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="resolution to evaluate at (default: the one the weights were trained at); "
        "position embeddings are interpolated to it",
    )
    p.add_argument(
        "--eval-pp",
        default=None,
        help="eval preprocessing chain recorded as the checkpoint's input.eval_pp (open_clip "
        "default: CLIP's own, resize to the input size bicubic + centre crop; 'none': the "
        "evaluator's default chain)",
    )
    args = p.parse_args(argv)
    converted = convert_file(
        args.family,
        args.weights,
        activation=args.activation,
        num_heads=args.num_heads,
        scan_layers=args.scan_layers,
    )
    converted = at_resolution(converted, args.image_size)
    source = {"family": args.family, "weights": str(args.weights)}
    step_dir = save(
        converted,
        args.workdir,
        step=args.step,
        dtype=args.dtype,
        source=source,
        eval_pp=args.eval_pp,
    )
    print(f"{args.family} {args.weights} -> {converted.name} (loss={converted.loss}): {step_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
