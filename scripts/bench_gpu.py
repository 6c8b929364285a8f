"""One prepared GPU benchmark (<= 8 min on one H100): training throughput, MFU, memory, latency.

Random weights at the real sizes (``tools.replicas.build_modules``, allocated on the GPU directly:
no downloads). Measures, with bf16 autocast and fp32 trainable weights (AdamW):

1. SD2-depth full fine-tune at 512 px: img/s, peak memory and model-FLOPs utilization (MFU) with
   cached latents on/off x ``torch.compile`` of the UNet on/off;
2. SD2-depth generation latency: 50 DDIM steps with classifier-free guidance (batch 2 through
   the UNet), 2 text encodings and one VAE decode, bf16;
3. SDXL depth ControlNet at 1024 px: ControlNet trains, the SDXL UNet is frozen (bf16), cached
   latents and text embeddings, the recipe's checkpointing policy.

MFU = model FLOPs per sample (``FlopCounterMode`` on one real step at batch 1) x img/s / the
GPU's dense bf16 peak (looked up from the device name). SD2-depth runs without checkpointing by
default (``--policy none``: model FLOPs = executed FLOPs); with a policy the count includes the
recomputation, i.e. it becomes hardware-FLOPs utilization (the SDXL ControlNet row, whose default
policy is ``attention``, is that). Goals to compare:
MLPerf SD training ~75 img/s per H100, MosaicML SD2 ~36 img/s per A100 (512 px, cached latents).

    python scripts/bench_gpu.py                       # on the GPU, writes outputs/bench/gpu.json
    python scripts/bench_gpu.py --tiny --no-compile   # CPU smoke run with reduced models (tests)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from diffusers import DDIMScheduler
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from depth2img.models.checkpointing_policy import (  # noqa: E402
    POLICIES,
    enable_selective_checkpointing,
)
from tools.replicas import build_modules, real_configs  # noqa: E402

# Dense bf16 tensor-core peaks (no sparsity), from the vendors' data sheets, FLOP/s.
BF16_PEAK = [
    ("H200", 989.4e12),
    ("H100 PCIe", 756.0e12),
    ("H100 NVL", 835.0e12),
    ("H100", 989.4e12),  # SXM
    ("GH200", 989.4e12),
    ("B200", 2250e12),
    ("A100", 312.0e12),
    ("L40S", 362.1e12),
    ("A10G", 70.0e12),
    ("A10", 125.0e12),
    ("L4", 121.0e12),
    ("RTX 4090", 165.2e12),
    ("V100", 125.0e12),  # fp16 (no bf16 on V100)
]


def bf16_peak(device: torch.device) -> tuple[str, float | None]:
    """(device name, dense bf16 peak FLOP/s or None when unknown / CPU)."""
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    return name, next((peak for key, peak in BF16_PEAK if key in name), None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


class Setup:
    """Sizes of one run: real (GPU) or tiny (reduced replicas, CPU tests)."""

    def __init__(self, tiny: bool, device: torch.device):
        self.tiny = tiny
        self.device = device
        self.full_size = not tiny
        self.sd_size = 64 if tiny else 512
        self.xl_size = 64 if tiny else 1024
        self.batch = 2 if tiny else 16
        self.xl_batch = 1 if tiny else 4
        self.warmup = 1 if tiny else 3
        self.steps = 2 if tiny else 10
        self.gen_steps = 2 if tiny else 50
        self.text_len = 77
        self.autocast_dtype = torch.bfloat16


def _text_inputs(setup: Setup, text_encoders, batch: int):
    ids = torch.randint(0, text_encoders[0].config.vocab_size, (batch, setup.text_len))
    return ids.to(setup.device)


def _autocast(setup: Setup):
    return torch.autocast(setup.device.type, dtype=setup.autocast_dtype)


# -- 1. SD2-depth training ---------------------------------------------------------------------


def sd2_train_step_fn(setup: Setup, modules: dict, cached_latents: bool, unet_call):
    """A closure running one training step on a batch (returns the loss tensor)."""
    vae, text_encoder = modules["vae"], modules["text_encoders"][0]
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    latent = setup.sd_size // factor
    dev = setup.device
    scale = vae.config.scaling_factor

    def step(batch: int):
        with _autocast(setup):
            if cached_latents:
                latents = torch.randn(batch, 4, latent, latent, device=dev)  # [B, 4, h, w]
            else:
                image = torch.rand(batch, 3, setup.sd_size, setup.sd_size, device=dev) * 2 - 1
                with torch.no_grad():
                    latents = vae.encode(image.to(vae.dtype)).latent_dist.mean.float() * scale
            with torch.no_grad():
                ctx = text_encoder(_text_inputs(setup, [text_encoder], batch))[0]
            depth = torch.rand(batch, 1, latent, latent, device=dev) * 2 - 1
            noise = torch.randn_like(latents)
            t = torch.randint(0, 1000, (batch,), device=dev)
            x = torch.cat([latents + noise, depth], dim=1)  # [B, 5, h, w]
            pred = unet_call(x, t, ctx).sample
            loss = torch.nn.functional.mse_loss(pred.float(), noise)
        loss.backward()
        return loss

    return step


def model_flops_per_sample(step) -> int:
    """FLOPs of one real step at batch 1 (forward, backward, recomputation)."""
    with FlopCounterMode(display=False) as counter:
        step(1)
    return int(counter.get_total_flops())


def time_training(setup: Setup, step, params, batch: int) -> dict:
    optimizer = torch.optim.AdamW(params, lr=1e-6, fused=setup.device.type == "cuda")

    def full_step():
        step(batch)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(setup.warmup):
        full_step()
    sync(setup.device)
    start = time.perf_counter()
    for _ in range(setup.steps):
        full_step()
    sync(setup.device)
    seconds = (time.perf_counter() - start) / setup.steps
    return dict(batch=batch, step_s=seconds, img_per_s=batch / seconds)


def bench_sd2_training(setup: Setup, compile_options: list[bool], policy: str) -> list[dict]:
    modules = build_modules(
        "sd2-depth",
        full_size=setup.full_size,
        device=setup.device,
        parts=("unet", "vae", "text_encoders"),
    )
    unet = modules["unet"].train()
    frozen_dtype = torch.bfloat16 if setup.device.type == "cuda" else torch.float32
    modules["vae"].to(frozen_dtype).requires_grad_(False)
    modules["text_encoders"][0].to(frozen_dtype).requires_grad_(False)
    enable_selective_checkpointing(unet, policy)
    rows = []
    for compiled in compile_options:
        unet_call = torch.compile(unet) if compiled else unet
        for cached in (True, False):
            row = dict(case="sd2-depth train", size=setup.sd_size, cached_latents=cached)
            row.update(compile=compiled, policy=policy)
            step = sd2_train_step_fn(setup, modules, cached, unet_call)
            row["model_flops_per_sample"] = model_flops_per_sample(step) if not compiled else None
            unet.zero_grad(set_to_none=True)
            reset_peak(setup.device)
            try:
                row.update(time_training(setup, step, unet.parameters(), setup.batch))
            except torch.OutOfMemoryError:
                row["error"] = f"out of memory at batch {setup.batch}"
            row["peak_mem_GiB"] = peak_gib(setup.device)
            unet.zero_grad(set_to_none=True)
            rows.append(row)
    # Compiled rows reuse the eager FLOP count (same model work).
    eager = {r["cached_latents"]: r["model_flops_per_sample"] for r in rows if not r["compile"]}
    for r in rows:
        if r["model_flops_per_sample"] is None:
            r["model_flops_per_sample"] = eager.get(r["cached_latents"])
    return rows


# -- 2. generation latency --------------------------------------------------------------------


def bench_sd2_generation(setup: Setup) -> dict:
    modules = build_modules(
        "sd2-depth",
        full_size=setup.full_size,
        device=setup.device,
        parts=("unet", "vae", "text_encoders"),
    )
    dtype = torch.bfloat16 if setup.device.type == "cuda" else torch.float32
    unet, vae = modules["unet"].to(dtype).eval(), modules["vae"].to(dtype).eval()
    text_encoder = modules["text_encoders"][0].to(dtype).eval()
    scheduler = DDIMScheduler(**real_configs.SD_SCHEDULER)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    latent = setup.sd_size // factor
    dev = setup.device

    @torch.no_grad()
    def generate():
        ids = _text_inputs(setup, [text_encoder], 2)  # prompt + negative prompt
        ctx = text_encoder(ids)[0]
        depth = torch.zeros(2, 1, latent, latent, device=dev, dtype=dtype)
        latents = torch.randn(1, 4, latent, latent, device=dev, dtype=dtype)
        scheduler.set_timesteps(setup.gen_steps)
        for t in scheduler.timesteps:
            x = torch.cat([torch.cat([latents] * 2), depth], dim=1)  # [2, 5, h, w]
            uncond, cond = unet(x, t.to(dev), ctx).sample.chunk(2)
            eps = uncond + 7.5 * (cond - uncond)
            latents = scheduler.step(eps, t, latents).prev_sample
        return vae.decode(latents / vae.config.scaling_factor).sample

    generate()  # warm-up (kernels, allocator)
    sync(dev)
    reset_peak(dev)
    start = time.perf_counter()
    generate()
    sync(dev)
    row = dict(case="sd2-depth generate", size=setup.sd_size, steps=setup.gen_steps)
    row.update(latency_s=time.perf_counter() - start, peak_mem_GiB=peak_gib(dev))
    return row


# -- 3. SDXL depth ControlNet ------------------------------------------------------------------


def bench_sdxl_controlnet(setup: Setup, policy: str, controlnet: str = "full") -> dict:
    # LEAD: once depth2img's ControlNet conditioner and SDXL family are on main, replace this
    # closure with the project's training step (Lightning module's training_step on a synthetic
    # batch) so the benchmark measures our code; until then it measures the same work built from
    # diffusers modules directly.
    modules = build_modules(
        "sdxl",
        full_size=setup.full_size,
        device=setup.device,
        controlnet=controlnet,
        parts=("unet", "controlnet"),
    )
    frozen_dtype = torch.bfloat16 if setup.device.type == "cuda" else torch.float32
    unet = modules["unet"].to(frozen_dtype).requires_grad_(False)
    cn = modules["controlnet"].train()
    for module in (unet, cn):
        enable_selective_checkpointing(module, policy)
    cfg = unet.config
    pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
    latent = setup.xl_size // 8
    dev = setup.device

    def step(batch: int):
        with _autocast(setup):
            latents = torch.randn(batch, 4, latent, latent, device=dev)  # cached latents
            ctx = torch.randn(batch, setup.text_len, cfg.cross_attention_dim, device=dev)
            added = dict(
                text_embeds=torch.randn(batch, pooled, device=dev),
                time_ids=torch.tensor(
                    [[setup.xl_size] * 2 + [0, 0] + [setup.xl_size] * 2] * batch, device=dev
                ).float(),
            )
            depth = torch.rand(batch, 3, setup.xl_size, setup.xl_size, device=dev)
            noise = torch.randn_like(latents)
            t = torch.randint(0, 1000, (batch,), device=dev)
            x = latents + noise
            down, mid = cn(
                x, t, ctx, controlnet_cond=depth, added_cond_kwargs=added, return_dict=False
            )
            pred = unet(
                x,
                t,
                ctx,
                added_cond_kwargs=added,
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
            ).sample
            loss = torch.nn.functional.mse_loss(pred.float(), noise)
        loss.backward()
        return loss

    row = dict(case=f"sdxl depth controlnet-{controlnet} train", size=setup.xl_size, policy=policy)
    row.update(cached_latents=True, compile=False)
    row["model_flops_per_sample"] = model_flops_per_sample(step)
    cn.zero_grad(set_to_none=True)
    reset_peak(dev)
    try:
        row.update(time_training(setup, step, cn.parameters(), setup.xl_batch))
    except torch.OutOfMemoryError:
        row["error"] = f"out of memory at batch {setup.xl_batch}"
    row["peak_mem_GiB"] = peak_gib(dev)
    return row


# -- report ------------------------------------------------------------------------------------


def add_mfu(rows: list[dict], peak: float | None) -> None:
    for r in rows:
        flops, ips = r.get("model_flops_per_sample"), r.get("img_per_s")
        r["model_tflops_per_s"] = flops * ips / 1e12 if flops and ips else None
        r["mfu"] = flops * ips / peak if flops and ips and peak else None


def print_table(report: dict) -> None:
    print(f"\ndevice: {report['device']} (bf16 dense peak {report['bf16_peak_tflops']} TF/s)")
    print(
        f"{'case':34s}{'px':>5s}{'cache':>6s}{'comp':>5s}{'policy':>13s}{'batch':>6s}"
        f"{'img/s':>8s}{'TF/s':>8s}{'MFU':>7s}{'peak GiB':>9s}"
    )
    for r in report["train"]:
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else "-"
        tfs = f"{r['model_tflops_per_s']:.1f}" if r.get("model_tflops_per_s") else "-"
        ips = f"{r['img_per_s']:.2f}" if r.get("img_per_s") else r.get("error", "-")
        mem = f"{r['peak_mem_GiB']:.1f}" if r.get("peak_mem_GiB") else "-"
        print(
            f"{r['case']:34s}{r['size']:5d}{str(r['cached_latents'])[:1]:>6s}"
            f"{str(r['compile'])[:1]:>5s}{r['policy']:>13s}{r.get('batch', 0):6d}{ips:>8s}"
            f"{tfs:>8s}{mfu:>7s}{mem:>9s}"
        )
    for g in report["generate"]:
        mem = f", peak {g['peak_mem_GiB']:.1f} GiB" if g.get("peak_mem_GiB") else ""
        print(f"{g['case']} {g['size']} px, {g['steps']} steps + CFG: {g['latency_s']:.2f} s{mem}")
    for s in report["skipped"]:
        print(f"skipped: {s}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="reduced models (CPU smoke test)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile cases")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--batch", type=int, default=None, help="SD2-depth training batch")
    parser.add_argument("--xl-batch", type=int, default=None, help="SDXL ControlNet batch")
    parser.add_argument("--policy", choices=POLICIES, default="none", help="SD2 checkpointing")
    parser.add_argument(
        "--xl-policy", choices=POLICIES, default="attention", help="SDXL ControlNet checkpointing"
    )
    parser.add_argument("--budget-s", type=float, default=450.0, help="skip cases after this")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/gpu.json"))
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA GPU is visible; use --tiny --device cpu")
    if device.type == "cpu" and not args.tiny:
        parser.error("full-size models need a GPU; on CPU pass --tiny")
    setup = Setup(args.tiny, device)
    setup.batch = args.batch or setup.batch
    setup.xl_batch = args.xl_batch or setup.xl_batch
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    name, peak = bf16_peak(device)
    start = time.perf_counter()
    report = dict(device=name, bf16_peak_tflops=peak / 1e12 if peak else None, tiny=args.tiny)
    report.update(torch=torch.__version__, train=[], generate=[], skipped=[])
    compile_options = [False] if args.no_compile else [False, True]

    def within_budget(label: str) -> bool:
        if time.perf_counter() - start < args.budget_s:
            return True
        report["skipped"].append(f"{label} (time budget {args.budget_s:.0f} s used)")
        return False

    report["train"] += bench_sd2_training(setup, compile_options, args.policy)
    if within_budget("sd2-depth generation"):
        report["generate"].append(bench_sd2_generation(setup))
    if within_budget("sdxl depth controlnet"):
        report["train"].append(bench_sdxl_controlnet(setup, args.xl_policy))
    add_mfu(report["train"], peak)
    report["wall_s"] = time.perf_counter() - start
    print_table(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out} ({report['wall_s']:.0f} s)")
    return report


if __name__ == "__main__":
    main()
