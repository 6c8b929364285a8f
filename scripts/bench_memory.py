"""Peak memory of generating from a full fine-tune checkpoint vs from its exported folder.

A full fine-tune checkpoint holds the UNet, its EMA copy and the AdamW state (4x the UNet's
bytes, as on a real SD2-depth run: 3.46 + 3.46 + 6.93 GB). Inference must read only the weights it
uses (memory-mapped, ``artifacts.weights``), so generating from the checkpoint should need no more
than ~1.2x the peak memory of generating from the exported folder. Each side runs in a fresh
subprocess; peak RSS is the child's ``VmHWM`` (Linux).

    python scripts/bench_memory.py                    # ~80 M-parameter UNet, CPU, ~2 min
    python scripts/bench_memory.py --width 512        # bigger UNet
Writes JSON (default outputs/bench/memory.json) and prints it. Goal: ratio <= 1.2.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import sys, torch
torch.set_num_threads(1)
from depth2img.inference.loading import load_generator_components
from depth2img.inference.sampling import generate
components, _, _ = load_generator_components(sys.argv[1], load_depth_estimator=False)
generate(components, torch.rand(1, 1, 32, 32), "a street", seeds=[0], num_inference_steps=2)
# VmHWM: this process image's peak RSS (ru_maxrss would carry the forking parent's peak).
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(int(hwm.split()[1]) / 1024.0)  # MiB
"""


def make_checkpoint(folder: Path, width: int) -> tuple[Path, Path, int]:
    """Train one full fine-tune step of a wide tiny-layout UNet; save checkpoint + export."""
    import lightning.pytorch as pl
    import torch
    from diffusers import UNet2DConditionModel

    from depth2img.inference.export import export_pipeline
    from depth2img.models.loading import save_components
    from depth2img.models.tiny import build_tiny_components, tiny_unet_config
    from depth2img.training.lightning_module import Depth2ImgModule

    components = build_tiny_components(seed=0)
    config = tiny_unet_config(5, components.text_encoder.config.hidden_size)
    config.update(block_out_channels=(width, 2 * width), attention_head_dim=width // 8)
    components.unet = UNet2DConditionModel(**config)
    base = save_components(components, folder / "base")
    params = sum(p.numel() for p in components.unet.parameters())
    module = Depth2ImgModule(model_source=str(base), ema_decay=0.99, lr_warmup_steps=0)
    batch = {
        "image": torch.rand(1, 3, 32, 32) * 2 - 1,
        "depth": torch.rand(1, 1, 32, 32),
        "caption": ["a street"],
        "key": ["a"],
    }
    trainer = pl.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, torch.utils.data.DataLoader([batch], batch_size=None))
    ckpt = folder / "full.ckpt"
    trainer.save_checkpoint(ckpt)
    exported = export_pipeline(str(ckpt), folder / "exported")
    return ckpt, exported, params


def peak_mib(source: Path) -> float:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(source)], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=320, help="UNet base width (default 320)")
    parser.add_argument("--out", default="outputs/bench/memory.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, exported, params = make_checkpoint(Path(tmp), args.width)
        result = {
            "unet_params": params,
            "checkpoint_mib": ckpt.stat().st_size / 2**20,
            "peak_rss_mib_from_checkpoint": peak_mib(ckpt),
            "peak_rss_mib_from_exported_folder": peak_mib(exported),
        }
    result["ratio_checkpoint_over_folder"] = (
        result["peak_rss_mib_from_checkpoint"] / result["peak_rss_mib_from_exported_folder"]
    )
    result["goal_ratio_max"] = 1.2
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
