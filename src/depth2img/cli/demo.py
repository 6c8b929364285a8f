"""``make demo`` / ``depth2img-demo``: the main job on the embedded default, end to end.

1. render synthetic aerial shards (train + held-out val scenes),
2. fine-tune the shipped tiny depth2img base on them (``depth2img-train``),
3. evaluate the base and the fine-tuned model on the held-out scenes with the same samples and
   seeds (``depth2img-eval``: depth consistency with floor, chance and a layout prior, FD/KID),
4. generate a sample grid from the fine-tuned checkpoint (``depth2img-generate``),
5. write ``outputs/demo/report.md`` and ``report.html``: base vs fine-tuned paired per image
   (scene-clustered CIs), depth read only when the judge separates floor from chance.

Each step runs the real command-line tool in a child process, so what the demo does is exactly
what a user would type, and each tool's progress bar is shown as it runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from depth2img.cli.demo_report import write_demo_report
from depth2img.cli.demo_structure import demo_references
from depth2img.paths import REPO_ROOT

DEFAULT_OUT = REPO_ROOT / "outputs" / "demo"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="depth2img-demo",
        description=(
            "Fine-tune the shipped tiny depth2img model on synthetic aerial scenes, evaluate it "
            "against the base model, generate samples and write a report (CPU, ~6 minutes on 2 cores)."
        ),
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--train-samples", type=int, default=1200, help="aerial training samples")
    parser.add_argument("--val-samples", type=int, default=120, help="held-out aerial samples")
    parser.add_argument("--size", type=int, default=64, help="image size (the tiny model: 64)")
    parser.add_argument(
        "--steps",
        type=int,
        default=1400,
        help="fine-tuning steps (1400 at the recipe's LoRA LR 5e-3 matched 2400 at 2e-3 on FD and "
        "KID with the shipped models, docs/benchmarks.md 'The demo')",
    )
    parser.add_argument(
        "--recipe",
        choices=("lora", "full"),
        default="lora",
        help="fine-tuning recipe (lora: rank-8 adapters + conv_in; measured better than a full "
        "fine-tune on FD, KID and judge-free structure, docs/benchmarks.md 'The demo')",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="global batch size")
    parser.add_argument("--eval-samples", type=int, default=64, help="evaluated images per model")
    parser.add_argument(
        "--sample-steps", type=int, default=20, help="denoising steps for eval and samples"
    )
    parser.add_argument("--workers", type=int, default=2, help="processes for rendering/loading")
    parser.add_argument("--keep", action="store_true", help="reuse outputs of an earlier run")
    return parser.parse_args(argv)


def run_step(title: str, command: list[str], log_path: Path) -> float:
    """Run one tool, streaming its output to the terminal and a log; exit on failure."""
    print(f"\n==> {title}\n    $ {' '.join(command)}", flush=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            log.write(line)
        code = process.wait()
    seconds = time.perf_counter() - start
    if code != 0:
        print(f"\nerror: step '{title}' failed (exit {code}); its log: {log_path}", file=sys.stderr)
        raise SystemExit(code)
    print(f"    done in {seconds:.0f} s", flush=True)
    return seconds


def tool(module: str) -> list[str]:
    """The command line of one of our tools, run with this interpreter."""
    return [sys.executable, "-m", f"depth2img.cli.{module}"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    if out.exists() and not args.keep:
        print(f"removing the previous demo output {out} (use --keep to reuse it)")
        shutil.rmtree(out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    shards = out / "shards" / "aerial"
    run_dir = out / "train" / "demo"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    timings: dict[str, float] = {}
    started = time.perf_counter()
    total = args.train_samples + args.val_samples

    if not (shards / "val" / "manifest.json").is_file():
        timings["render shards"] = run_step(
            "1/5 render synthetic aerial scenes (exact height maps) into WebDataset shards",
            tool("shards")
            + ["synth", "--domain", "aerial", "--num-samples", str(total)]
            + ["--size", str(args.size), "--val-fraction", f"{args.val_samples / total:.4f}"]
            + ["--out", str(shards), "--samples-per-shard", "400", "--seed", "1"]
            + ["--workers", str(args.workers), "--overwrite"],
            out / "logs" / "shards.log",
        )
    # Always run: a finished run dir resumes at max_steps and stops at once; a partial one resumes.
    if True:
        timings["fine-tune"] = run_step(
            "2/5 fine-tune the shipped tiny depth2img base on aerial scenes",
            tool("train")
            + ["experiment=aerial_finetune", f"recipe={args.recipe}", "run_name=demo"]
            + [f"paths.output_dir={out}"]
            + [f"data.train_shards={shards / 'train'}", f"data.val_shards={shards / 'val'}"]
            + [f"data.size={args.size}", f"data.global_batch_size={args.batch_size}"]
            + [f"data.num_workers={args.workers}", f"trainer.max_steps={args.steps}"]
            + [f"trainer.val_check_interval={args.steps}"],
            out / "logs" / "train.log",
        )
    evals = {}
    for name, model in (("base", "shipped"), ("finetuned", str(ckpt))):
        eval_dir = out / f"eval_{name}"
        timings[f"evaluate {name}"] = run_step(
            f"{3 if name == 'base' else 4}/5 evaluate the {name} model on held-out aerial scenes",
            tool("evaluate")
            + [f"model_source={model}", f"shards={shards / 'val'}", f"out_dir={eval_dir}"]
            + [f"eval.num_samples={args.eval_samples}", f"eval.size={args.size}"]
            + [f"eval.steps={args.sample_steps}", f"paths.output_dir={out}"]
            # Realism on appearance features: the judge's (fd_tiny) ignore colour by design.
            + ["eval.extractor=vae"],
            out / "logs" / f"eval_{name}.log",
        )
        evals[name] = json.loads((eval_dir / "metrics.json").read_text())
    timings["generate"] = run_step(
        "5/5 generate a sample grid from the fine-tuned checkpoint",
        tool("generate")
        + ["--model", str(ckpt), "--shards", str(shards / "val"), "--max-samples", "8"]
        + ["--steps", str(args.sample_steps), "--seed", "0", "--grid", "--overwrite"]
        + ["--out", str(out / "samples"), "--device", "cpu"],
        out / "logs" / "generate.log",
    )
    print("\n==> judge-free structure measures", flush=True)
    start = time.perf_counter()
    references = demo_references(
        {name: out / f"eval_{name}" for name in evals}, shards / "val", args.eval_samples, args.size
    )
    timings["reference measures"] = time.perf_counter() - start
    timings["total"] = time.perf_counter() - started
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    report = write_demo_report(out, evals, timings, settings, references)
    print(f"\nDemo finished in {timings['total'] / 60:.1f} min. Report: {report}")
    print(f"HTML version: {report.with_suffix('.html')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
