"""Write notebooks/quickstart.ipynb from the cells below, executed, with its outputs.

The notebook is generated so its code stays reviewable as plain Python; it is committed with
its outputs so a reader sees results without running it. The tests check the stored cells
match this script and execute it headless (tests/integration/test_notebook.py).

    python scripts/make_quickstart_notebook.py            # build + execute (CPU, minutes)
    python scripts/make_quickstart_notebook.py --fast     # smaller settings (as the tests)
    python scripts/make_quickstart_notebook.py --no-run   # cells only, no outputs
"""

import argparse
import os
import tempfile
from pathlib import Path

import nbformat

CELLS = [
    (
        "markdown",
        """# depth2img quickstart

Everything here runs offline on a CPU in a few minutes, on the **tiny depth2img base model**
shipped in `data/models/` (trained by `python -m tools.build_tiny_base` on synthetic scenes):

1. load the model and generate from a synthetic depth map;
2. show depth next to the generated images;
3. fine-tune a few steps on synthetic aerial shards (Lightning);
4. evaluate the checkpoint: depth consistency (with floor and chance) and FD/KID;
5. your own data: photos + depth files -> shards -> check -> train -> generate.""",
    ),
    (
        "code",
        """import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

torch.set_num_threads(2)
# Where this notebook writes (shards, run dir, eval); the tests point it to a temp folder.
WORK = Path(os.environ.get("DEPTH2IMG_NOTEBOOK_DIR", "outputs/notebook")).resolve()
WORK.mkdir(parents=True, exist_ok=True)
FAST = os.environ.get("DEPTH2IMG_NOTEBOOK_FAST") == "1"  # smaller settings for the tests
print("working in", WORK)""",
    ),
    ("markdown", "## 1. Load the tiny base and generate from a synthetic depth map"),
    (
        "code",
        """from depth2img.data.synthetic import render_sample
from depth2img.inference.generator import Depth2ImgGenerator

generator = Depth2ImgGenerator.from_pretrained("shipped")
scene = render_sample("street", scene_index=7, condition="day", size=64, seed=123)
print(scene.caption, "| depth kind:", scene.depth_kind, scene.depth_units)

prompts = [scene.caption.replace(", on a clear day", ""), "a street at night", "a street in snow"]
result = generator(
    prompts, depth=scene.depth, depth_kind=scene.depth_kind, seeds=[0, 1, 2],
    num_inference_steps=20, guidance_scale=5.0,
)
len(result.images), result.images[0].size""",
    ),
    ("markdown", "## 2. Depth next to the generated images"),
    (
        "code",
        """fig, axes = plt.subplots(1, 5, figsize=(15, 3))
axes[0].imshow(scene.image); axes[0].set_title("render (ground truth)")
axes[1].imshow(result.depth[0].numpy(), cmap="gray"); axes[1].set_title("depth used (near=white)")
for ax, image, prompt in zip(axes[2:], result.images, prompts):
    ax.imshow(image); ax.set_title(prompt[:28], fontsize=8)
for ax in axes:
    ax.axis("off")
plt.show()""",
    ),
    ("markdown", "## 3. Fine-tune a few steps on synthetic aerial shards"),
    (
        "code",
        """import lightning.pytorch as L

from depth2img.data.datamodule import ShardDataModule
from depth2img.data.synth_shards import write_synthetic_shards
from depth2img.training.lightning_module import Depth2ImgModule

shards = WORK / "shards" / "aerial"
write_synthetic_shards(shards, "aerial", 48 if FAST else 400, size=64, seed=1,
                       val_fraction=0.25, overwrite=True)
data = ShardDataModule(train_shards=str(shards / "train"), val_shards=str(shards / "val"),
                       size=64, global_batch_size=4 if FAST else 8, num_workers=0)
model = Depth2ImgModule(model_source="shipped", learning_rate=2e-4, ema_decay=0.99)
trainer = L.Trainer(max_steps=3 if FAST else 100, accelerator="cpu", logger=False,
                    enable_checkpointing=False, limit_val_batches=0, default_root_dir=WORK)
trainer.fit(model, datamodule=data)
checkpoint = WORK / "quickstart.ckpt"
trainer.save_checkpoint(checkpoint)
print("global step", trainer.global_step, "->", checkpoint)""",
    ),
    ("markdown", "## 4. Evaluate: depth consistency (floor, chance) and FD/KID"),
    (
        "code",
        """from depth2img.evaluation.runner import EvalSettings, evaluate

metrics = evaluate(EvalSettings(model=str(checkpoint), shards=str(shards / "val"),
                                out_dir=str(WORK / "eval"), num_samples=4 if FAST else 16,
                                size=64, steps=5 if FAST else 20, progress=False,
                                bootstrap_resamples=200))
for group in ("generated", "floor", "chance"):
    row = {k: round(v["mean"], 3) for k, v in metrics["depth"][group].items() if v["mean"] is not None}
    print(f"{group:>9}", row)
print({k: v for k, v in metrics["image_quality"].items() if k.startswith(("fd_", "kid"))})""",
    ),
    (
        "markdown",
        """## 5. Your own data

Real datasets come as photos plus depth maps in whatever format the sensor or tool wrote. Here a
small folder stands in for yours: JPEG photos in `images/`, 16-bit PNG depth in **millimetres
with 0 = no data** in `depth/` (the Kinect/RealSense convention), and one broken file, as real
folders have. The steps are the same for thousands of files:

1. `depth2img-shards from-folder`: pair by file name, convert, flag bad files by name, one
   total line (several sources with different depth formats: `--spec dataset.yaml`);
2. `depth2img-shards check --preview`: what training will see, as a contact sheet
   (image | depth, near = white, no data = red | caption);
3. `depth2img-train data=folder`: `data.size` follows the model's native resolution;
4. `depth2img-generate --input-dir`: takes the same `images/` + `depth/` layout, and generates
   at the model's resolution with your aspect ratio (`--size`, `--height/--width`,
   `--resize-back` to change that).""",
    ),
    (
        "code",
        """from PIL import Image

from depth2img.data.synthetic import render_sample

own = WORK / "my_photos"
(own / "images").mkdir(parents=True, exist_ok=True)
(own / "depth").mkdir(exist_ok=True)
for i in range(12 if FAST else 40):
    s = render_sample("street", scene_index=100 + i, condition="day", size=96, seed=i)
    Image.fromarray(s.image).save(own / "images" / f"IMG_{i:04d}.jpg", quality=92)
    millimetres = np.nan_to_num(s.depth * 1000.0, nan=0.0).clip(0, 65535).astype(np.uint16)
    millimetres[:6, :] = 0  # a strip the sensor did not see: 0 = no data
    Image.fromarray(millimetres).save(own / "depth" / f"IMG_{i:04d}.png")
    (own / "images" / f"IMG_{i:04d}.txt").write_text(s.caption)  # caption sidecar
(own / "images" / "IMG_broken.jpg").write_bytes(b"not a jpeg")
Image.fromarray(np.zeros((96, 96), np.uint16)).save(own / "depth" / "IMG_broken.png")
sorted(p.name for p in (own / "images").iterdir())[:4]""",
    ),
    (
        "code",
        """from depth2img.cli import shards as shards_cli

my_shards = WORK / "shards" / "mine"
code = shards_cli.main([
    "from-folder", "--images", str(own / "images"), "--depths", str(own / "depth"),
    "--depth-kind", "depth", "--depth-scale", "0.001", "--depth-units", "m",
    "--depth-invalid", "0", "--val-fraction", "0.25", "--out", str(my_shards), "--overwrite",
])
print("exit code", code)""",
    ),
    (
        "code",
        """code = shards_cli.main([
    "check", str(my_shards / "train"), "--preview", str(WORK / "preview.png"),
    "--preview-count", "4", "--json-out", str(WORK / "check.json"),
])
plt.figure(figsize=(9, 9)); plt.imshow(Image.open(WORK / "preview.png")); plt.axis("off")
plt.show()""",
    ),
    (
        "code",
        """import subprocess
import sys

run = subprocess.run(
    [sys.executable, "-m", "depth2img.cli.train", "base=shipped", "data=folder",
     f"data.train_shards={my_shards / 'train'}", f"data.val_shards={my_shards / 'val'}",
     "data.global_batch_size=4", "data.num_workers=0", "data.val_samples=4",
     f"trainer.max_steps={3 if FAST else 30}", "logger=csv", "run_name=my-data",
     f"paths.output_dir={WORK / 'runs'}", "callbacks.image_grid.every_n_steps=0"],
    capture_output=True, text=True,
)
lines = (run.stdout + run.stderr).splitlines()
print("exit code", run.returncode)
print("\\n".join(l for l in lines if "native resolution" in l or "run dir" in l))
print(sorted(p.name for p in (WORK / "runs/train/my-data/checkpoints").iterdir()))""",
    ),
    (
        "code",
        """from depth2img.cli import generate as generate_cli

my_ckpt = WORK / "runs/train/my-data/checkpoints/last.ckpt"
code = generate_cli.main([
    "--model", str(my_ckpt), "--input-dir", str(own), "--max-samples", "3",
    "--depth-kind", "depth", "--prompt", "a street at night", "--strength", "0.9",
    "--steps", "10", "--out", str(WORK / "my_generations"), "--overwrite", "--grid",
])
plt.figure(figsize=(8, 6)); plt.imshow(Image.open(WORK / "my_generations" / "grid.png"))
plt.axis("off"); plt.show()""",
    ),
]


def build() -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    for kind, source in CELLS:
        make = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        notebook.cells.append(make(source))
    return notebook


def execute(notebook: nbformat.NotebookNode, fast: bool) -> nbformat.NotebookNode:
    """Run every cell (in a temp working folder) so the notebook is stored with outputs."""
    from nbclient import NotebookClient

    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as work:
        os.environ["DEPTH2IMG_NOTEBOOK_DIR"] = work
        os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        if fast:
            os.environ["DEPTH2IMG_NOTEBOOK_FAST"] = "1"
        client = NotebookClient(
            notebook,
            timeout=1800,
            kernel_name="python3",
            resources={"metadata": {"path": str(root)}},
        )
        client.execute()
    return notebook


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="the tests' smaller settings")
    parser.add_argument("--no-run", action="store_true", help="write the cells only")
    args = parser.parse_args()
    out = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"
    notebook = build()
    if not args.no_run:
        notebook = execute(notebook, args.fast)
    nbformat.write(notebook, out)
    print("wrote", out)
