"""Write notebooks/quickstart.ipynb (without outputs) from the cells below.

The notebook is generated so its code stays reviewable as plain Python; the tests execute it
headless (tests/integration/test_notebook.py).

    python scripts/make_quickstart_notebook.py
"""

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
4. evaluate the checkpoint: depth consistency (with floor and chance) and FD/KID.""",
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
    row = {k: round(v["mean"], 3) for k, v in metrics["depth"][group].items()}
    print(f"{group:>9}", row)
print({k: v for k, v in metrics["image_quality"].items() if k.startswith(("fd_", "kid"))})""",
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


if __name__ == "__main__":
    out = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"
    nbformat.write(build(), out)
    print("wrote", out)
