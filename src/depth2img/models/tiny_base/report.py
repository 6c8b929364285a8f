"""Write data/models/README.md (and build_info.json) from the build's measured numbers."""

from __future__ import annotations

import json
from pathlib import Path


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f} M"


def _following_verdict(f: dict) -> str:
    """One honest sentence per domain on whether generations beat the within-domain chance."""
    rows = f.get("by_domain") or {"pooled": f}
    parts = []
    for domain, row in rows.items():
        gen = row["generated_vs_condition"]["absrel"]
        chance = row["chance_mismatched_depth"]["absrel"]
        floor = row["floor_real_images"]["absrel"]
        verdict = "closer to their own depth" if gen < chance - 0.01 else "not measurably closer"
        parts.append(f"{domain}: {gen:.3f} vs chance {chance:.3f} (floor {floor:.3f}, {verdict})")
    return "Judge AbsRel of the generations by domain: " + "; ".join(parts) + "."


def _reliance_lines(reliance: dict) -> str:
    return "\n".join(
        f"  - {band}: {row['matched']:.4f} with the matching depth vs {row['mismatched']:.4f} "
        f"with another scene's (x{row['ratio']:.2f})"
        for band, row in reliance.items()
    )


def _reuse_note(info: dict) -> str:
    """Say which stages came from ``--cache-dir`` (their training time is not in the total)."""
    reused = info.get("reused_stages") or []
    if not reused:
        return ""
    return (
        f" (stages {', '.join(reused)} were loaded from `--cache-dir`, trained earlier by the same"
        " code and settings, so their training time is not in this total; from-scratch stage"
        " times are in docs/benchmarks.md)"
    )


def _trio(row: dict) -> str:
    return " / ".join(f"{row[k]:.3f}" for k in ("absrel", "delta1", "spearman") if k in row)


def _judge_lines(judge: dict) -> str:
    lines = []
    for domain, row in judge.items():
        if domain.endswith("_constant_baseline"):
            continue
        base = judge.get(domain + "_constant_baseline", {})
        cells = []
        for key in ("absrel", "delta1", "spearman"):
            if key in row:
                ref = f" ({base[key]:.3f})" if key in base else ""
                cells.append(f"{row[key]:.3f}{ref}")
        lines.append(f"  - {domain}: " + " / ".join(cells))
    return "\n".join(lines)


def write_build_info(out: Path, info: dict) -> Path:
    path = out / "build_info.json"
    path.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return path


def write_readme(out: Path, info: dict) -> Path:
    """Render the README from ``info`` (the dict also written to ``build_info.json``)."""
    cfg = info["config"]
    p = info["params"]
    m = info["metrics"]
    f = m["depth_following"]
    t = info["timings_s"]
    mix = info["data"]
    quick_note = {
        "quick": "\n> **This is a `--quick` smoke build** (tiny data, a few dozen steps): the folders "
        "load and run, but the model has not learned anything useful. Rebuild without `--quick`.\n",
        "draft": "\n> **This is a `--preset draft` build** (less data, a fraction of the steps): usable "
        "for coding against, weaker than the full build.\n",
    }.get(info.get("preset", "full"), "")
    text = f"""# Shipped tiny base models

Two small diffusers folders, trained by this project on its own synthetic scenes
(`depth2img.data.synthetic`), so that the demo, tests, notebook and evaluation run offline:
{quick_note}
| folder | what | loads with |
|---|---|---|
| `tiny-depth2img/` | depth model: VAE, text encoder, tokenizer, **5-channel UNet** (4 latents + 1 depth), DDIM scheduler, tiny DPT depth judge (`depth_estimator/`, `feature_extractor/`) | `StableDiffusionDepth2ImgPipeline.from_pretrained`, `load_components("shipped")` |
| `tiny-sd-base/` | its 4-channel text-to-image parent (same VAE/text encoder) | `StableDiffusionImg2ImgPipeline.from_pretrained`; `load_components("shipped-base", convert_to_depth=True)` widens it to 4 + 1 channels (zero-init) |

Each folder has a `checksums.json` (SHA-256 of every weight file, verify with
`depth2img.artifacts.checksums.verify_manifest`). Images are {cfg["image_size"]}x{cfg["image_size"]} px;
latents are {info["latent_shape"]} (VAE factor {info["vae_scale_factor"]}).
Sizes: {", ".join(f"`{k}` {v} MB" for k, v in info["checks"]["size_mb"].items())}.

`samples.png`: rows are held-out street and endoscopy scenes (never seen in training);
columns: conditioning depth (near = white) | the real render of that depth | generations at seeds
0, 1, 2 (prompt = the scene's caption, gray init image, strength 1.0, {info["sampling"]["steps"]} DDIM steps,
guidance {info["sampling"]["guidance"]}).

## How it was made

```
{info["command"]}
```

Wall time {t["total"] / 60:.1f} min with {cfg["num_threads"]} torch CPU thread(s) on a shared 2-core machine, seed {cfg["seed"]}{_reuse_note(info)};
deterministic given the seed and the software versions. Same recipe as SD2-depth from SD2-base:

1. **Data**: renders at {cfg["image_size"]} px, every scene under all its conditions:
   {", ".join(f"{k} {v}" for k, v in mix["train"].items())} training samples
   ({t["render"]:.0f} s); held-out: {cfg["heldout_samples"]} per domain from unseen scenes.
2. **Tokenizer** (`depth2img.models.tokenizer.build_clip_tokenizer`) from the caption words
   ({info["vocab_size"]} tokens, max length {info["max_length"]}).
3. **Text encoder**: `CLIPTextModel`, {_fmt_params(p["text_encoder"])} parameters, **randomly
   initialized and frozen (never trained)**: a random transformer still maps different captions
   to different embeddings, which is what the UNet's cross-attention needs, but the embedding
   space has no learned semantics.
4. **VAE**: `AutoencoderKL`, {_fmt_params(p["vae"])} parameters, {cfg["vae_steps"]} steps, batch
   {cfg["vae_batch"]}, random {cfg["vae_crop"]} px crops of all three domains, L1 + gradient L1 + 1e-6 KL
   ({t["vae"]:.0f} s). `scaling_factor = 1 / std(latents) = {info["scaling_factor"]:.4f}`.
5. **Depth judge**: `DPTForDepthEstimation`, {_fmt_params(p["judge"])} parameters, patch 8, input
   {cfg["image_size"]} px (output 2x, resized), {cfg["judge_steps"]} steps, scale-and-shift-invariant L1 +
   gradient loss on near-is-high depth of all three domains ({t["judge"]:.0f} s).
6. **Base UNet** (text-to-image, 4 channels): `UNet2DConditionModel` with SD's block structure,
   {_fmt_params(p["base_unet"])} parameters, {cfg["base_steps"]} steps, batch {cfg["unet_batch"]}, epsilon
   prediction, SD noise schedule, 10 % caption dropout, EMA {cfg["ema_decay"]}
   ({t["base"]:.0f} s). Data mix: {", ".join(f"{k} {v}" for k, v in mix["unet"].items())}
   (aerial kept at <= {cfg["unet_aerial_fraction"]:.0%}, so fine-tuning on aerial has something to
   show), latents of each image and its mirror image.
7. **Depth UNet**: the base UNet widened to 5 input channels with
   `depth2img.models.conditioning.concat.expand_unet_input_channels` (new channel zero-initialized, bias
   kept), then {cfg["depth_steps"]} more steps with the depth channel
   (`DepthSpec.to_latent_condition`), same mix, learning rate {cfg["depth_lr"]:g},
   **{cfg.get("depth_caption_dropout", cfg["caption_dropout"]):.0%} caption dropout** (with 10 % a
   first build ignored the depth channel: the caption alone already tells the domain)
   ({t["depth"]:.0f} s).

## Numbers (held-out renders)

- VAE reconstruction PSNR (images in [-1, 1], posterior mean):
  {", ".join(f"{k} {v:.2f} dB" for k, v in m["vae_psnr"].items())}.
- Judge vs true depth (AbsRel / delta1 / Spearman; in brackets the same metric for a constant
  prediction, the chance level of this metric):
{_judge_lines(m["judge"])}
  On aerial height maps (flat ground at the far end, ~90 % of pixels, with sparse buildings
  and trees) the judge is no better than a constant: do not read aerial depth metrics measured
  with it; use a real depth or height model for aerial data (`depth_estimator=` in eval).
- Depth following of the depth model ({f["n_images"]} generations from held-out street and
  endoscopy depth maps, seeds 0 and 1; judge on the generated images):
  AbsRel / delta1 / Spearman {_trio(f["generated_vs_condition"])} vs the conditioning depth;
  floor (judge on the real renders) {_trio(f["floor_real_images"])}; chance (same generations vs
  another scene's depth of the same domain) {_trio(f["chance_mismatched_depth"])}.
  {_following_verdict(f)}
  Street scenes share one layout (road, facades, sky), so even another scene's depth scores
  well there and the margin is small; the judge also sees generated images that are blurrier
  than its training renders. Read this together with the judge-free check below and with
  `samples.png`.
- Depth reliance (judge-free): the depth UNet's denoising MSE on the held-out street and
  endoscopy latents (8 noise draws each, same noise and timesteps for both maps), with the
  scene's own depth map vs another scene's of the same domain; x1.00 would mean the depth
  channel is ignored:
{_reliance_lines(m.get("depth_reliance", {}))}

AbsRel / delta1 / Spearman use the project's evaluation definition
(`depth2img.evaluation.depth_metrics`): the reference is the true (or conditioning) depth in the
model convention, min-max normalized to [0.1, 1] near-is-high; the judge output is resized to it
and aligned per image by least-squares scale and shift (A); AbsRel = mean |A/ref - 1|,
delta1 = mean[max(A/ref, ref/A) < 1.25], Spearman = rank correlation of prediction and reference;
averaged over images. Far pixels sit at 0.1, so small absolute errors there weigh a lot in
AbsRel: read it next to the constant-prediction and chance levels.

## License and limits

Weights and code: same license as this repository. Trained only on procedurally generated
scenes; no third-party images or weights are involved.

This is a test and demo model, not an image generator: {cfg["image_size"]} px, a few million parameters,
minutes of CPU training. Generations are blurry, textures are crude, the text encoder is random
(prompts steer only through what the UNet learned from caption tokens), and the depth judge only
knows the three synthetic domains (it fails on photographs). Aerial scenes are almost unseen by
the UNets on purpose.
"""
    path = out / "README.md"
    path.write_text(text)
    return path
