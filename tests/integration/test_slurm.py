"""Real SLURM jobs on the local one-node cluster (``slurm/local_cluster.sh start``).

Each test submits ``slurm/train.sbatch`` (or ``eval.sbatch``) with ``sbatch`` exactly as a user
would, with CPU overrides: 2 tasks -> 2 Lightning DDP ranks over gloo, the random tiny model at
32 px, a handful of steps. The jobs write small JSON files through the callbacks in
``slurm_job_callbacks.py`` (weight hashes per rank, progress). Polling uses ``scontrol show job``
and files only (no accounting database), always with a deadline; a job that overruns is
cancelled and its log is shown.

The whole module is skipped, with the reason, when ``sinfo`` does not answer.
Budget: 6 job starts of 2 Python processes each (~30-60 s apiece, mostly imports): measured
5.2 min on 2 CPU cores shared with other work (7.5 min under load average ~7).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TRAIN_SBATCH = REPO / "slurm" / "train.sbatch"
EVAL_SBATCH = REPO / "slurm" / "eval.sbatch"
SLURM_DIR = Path(os.environ.get("DEPTH2IMG_SLURM_DIR", "/tmp/depth2img-slurm"))
CALLBACKS = "tests.integration.slurm_job_callbacks"
REQUEUE_CALLBACK = "depth2img.training.slurm_requeue.SlurmRequeueCallback"
TERMINAL_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
}
# Generous: two Python processes importing torch + Lightning + diffusers on 2 shared cores.
JOB_TIMEOUT_S = 300
# CPU-only 2-rank allocation (the script's #SBATCH defaults ask for 8 GPUs).
CPU_2_RANKS = ["--gpus-per-node=0", "--ntasks-per-node=2", "--cpus-per-task=1"]


# ---------------------------------------------------------------------------- cluster access


def slurm_env(extra: dict | None = None) -> dict:
    """The environment for SLURM commands and jobs.

    Drops inherited ``SLURM_*`` variables (pytest itself may run inside a job), points
    ``SLURM_CONF`` at the local cluster when the caller did not set it, and pins what the jobs
    need: this Python, the repo on ``PYTHONPATH`` (for the test callbacks), offline hubs.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    if "SLURM_CONF" in os.environ:
        env["SLURM_CONF"] = os.environ["SLURM_CONF"]
    elif (SLURM_DIR / "slurm.conf").is_file():
        env["SLURM_CONF"] = str(SLURM_DIR / "slurm.conf")
    env.update(
        DEPTH2IMG_PYTHON=sys.executable,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
    )
    env.update(extra or {})
    return env


def cluster_problem() -> str | None:
    """Why the local cluster cannot be used, or None when ``sinfo`` shows a usable node."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "sbatch/sinfo not installed"
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%t"],
            env=slurm_env(),
            capture_output=True,
            text=True,
            timeout=15,
        )
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 15 s"
    states = out.stdout.split()
    if out.returncode != 0 or not states:
        return f"sinfo failed: {(out.stderr or out.stdout).strip()[:200]}"
    if not any(s.rstrip("*~#") in {"idle", "mix", "alloc", "comp"} for s in states):
        return f"no usable node (states: {' '.join(states)})"
    return None


@pytest.fixture(scope="module")
def cluster() -> dict:
    problem = cluster_problem()
    if problem:
        pytest.skip(
            f"local SLURM cluster not available ({problem}); start it as root with "
            "`bash slurm/local_cluster.sh start`"
        )
    return slurm_env()


def run(cmd: list[str], env: dict, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, **kwargs)


def submit(script: Path, sbatch_args: list[str], overrides: list[str], env: dict, cwd: Path) -> str:
    """``sbatch`` the script from ``cwd`` (logs to ``cwd/logs``); returns the job id."""
    (cwd / "logs").mkdir(parents=True, exist_ok=True)
    cmd = [
        "sbatch",
        "--parsable",
        f"--output={cwd}/logs/%x-%j.out",
        *sbatch_args,
        str(script),
        *overrides,
    ]
    out = run(cmd, env, cwd=cwd)
    assert out.returncode == 0, f"sbatch failed: {out.stderr}\n{' '.join(cmd)}"
    return out.stdout.strip().split(";")[0]


def job_info(job_id: str, env: dict) -> dict[str, str]:
    """``scontrol show job -o`` as a dict (JobState, Restarts, ExitCode, ...); {} if unknown."""
    out = run(["scontrol", "show", "job", "-o", job_id], env)
    if out.returncode != 0:
        return {}
    return dict(re.findall(r"(\w+)=(\S*)", out.stdout))


def job_log(cwd: Path, job_id: str) -> str:
    logs = sorted((cwd / "logs").glob(f"*-{job_id}.out"))
    return logs[0].read_text(errors="replace") if logs else "<no job log>"


def wait_until(condition, timeout_s: float, what: str, job_id: str, env: dict, cwd: Path):
    """Poll ``condition()`` every 0.5 s; on timeout cancel the job and fail with its log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.5)
    info = job_info(job_id, env)
    run(["scancel", job_id], env)
    pytest.fail(
        f"job {job_id}: {what} not reached within {timeout_s:.0f} s "
        f"(state {info.get('JobState')}, restarts {info.get('Restarts')})\n"
        f"--- job log (last 4000 chars) ---\n{job_log(cwd, job_id)[-4000:]}"
    )


def wait_for_end(job_id: str, env: dict, cwd: Path, timeout_s: float = JOB_TIMEOUT_S) -> dict:
    """Wait until the job is in a terminal state; returns its ``scontrol`` info.

    A requeued job is PENDING/RUNNING again, never terminal, until its last start ends.
    """

    def finished():
        info = job_info(job_id, env)
        return info if info.get("JobState") in TERMINAL_STATES else None

    return wait_until(finished, timeout_s, "the end of the job", job_id, env, cwd)


def assert_completed(info: dict, job_id: str, cwd: Path) -> None:
    ok = info.get("JobState") == "COMPLETED" and info.get("ExitCode") == "0:0"
    assert ok, (
        f"job {job_id} ended {info.get('JobState')} exit {info.get('ExitCode')}\n"
        f"--- job log (last 6000 chars) ---\n{job_log(cwd, job_id)[-6000:]}"
    )


# ---------------------------------------------------------------------------- data + overrides


def write_shards(folder: Path, counts: list[int], seed: int) -> Path:
    """Synthetic street shards at 32 px, one shard per entry of ``counts`` (+ manifest)."""
    from depth2img.data.shard_format import read_manifest, write_manifest
    from depth2img.data.synth_shards import write_synthetic_shards

    shards: dict[str, int] = {}
    for index, count in enumerate(counts):
        part = folder / f"part{index}"
        write_synthetic_shards(
            part, "street", count, size=32, seed=seed + index, samples_per_shard=count
        )
        for tar in sorted(part.glob("*.tar")):
            target = folder / f"shard-{index:06d}.tar"
            tar.rename(target)
            shards[target.name] = read_manifest(part)["shards"][tar.name]
        shutil.rmtree(part)
    write_manifest(folder, shards)
    return folder


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> dict[str, Path]:
    """Even train shards (2 x 8), uneven train shards (7, 5, 3) and an odd val set (5)."""
    root = tmp_path_factory.mktemp("slurm_shards")
    return {
        "even": write_shards(root / "even", [8, 8], seed=0),
        "uneven": write_shards(root / "uneven", [7, 5, 3], seed=10),
        "val": write_shards(root / "val", [5], seed=20),
    }


def train_overrides(
    train_shards: Path,
    out: Path,
    max_steps: int,
    ckpt_every: int,
    val_shards: Path | None = None,
    num_workers: int = 0,
    sleep_s: float = 0.0,
) -> list[str]:
    """Hydra overrides: tiny model, 32 px, global batch 4 (2 per rank), test callbacks."""
    val = [
        f"data.val_shards={val_shards}",
        "trainer.limit_val_batches=2",
        f"trainer.val_check_interval={max(1, max_steps // 2)}",
        "model.val_num_inference_steps=2",
    ]
    no_val = ["data.val_shards=null", "trainer.limit_val_batches=0"]
    return [
        "experiment=street_tiny",
        "trainer=ddp_cpu",
        f"data.train_shards={train_shards}",
        "data.size=32",
        "data.global_batch_size=4",
        f"data.num_workers={num_workers}",
        f"trainer.max_steps={max_steps}",
        "trainer.log_every_n_steps=1",
        "trainer.enable_model_summary=false",
        *(val if val_shards else no_val),
        f"callbacks.model_checkpoint.every_n_train_steps={ckpt_every}",
        "callbacks.image_grid=null",
        f"+callbacks.weight_hash._target_={CALLBACKS}.WeightHashCallback",
        f"+callbacks.weight_hash.out_dir={out}",
        f"+callbacks.progress._target_={CALLBACKS}.ProgressCallback",
        f"+callbacks.progress.out_dir={out}",
        f"+callbacks.progress.sleep_s={sleep_s}",
        # `++`: add, or override once configs/callbacks/default.yaml enables it itself.
        f"++callbacks.slurm_requeue._target_={REQUEUE_CALLBACK}",
    ]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def run_dir_of(outputs: Path, job_id: str) -> Path:
    """The run dir keyed on the job id (``<output_dir>/train/<experiment>-<job id>``)."""
    found = sorted((outputs / "train").glob(f"*-{job_id}"))
    assert len(found) == 1, f"expected one run dir for job {job_id} under {outputs}: {found}"
    return found[0]


def checkpoint_step(path: Path) -> int:
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


# ---------------------------------------------------------------------------- tests


def test_sbatch_ddp_uneven_shards_identical_weights(cluster, shards, tmp_path):
    """(a)+(c) train.sbatch, 2 srun tasks -> 2 gloo DDP ranks on uneven shards.

    3 shards of 7/5/3 samples, 2 DataLoader workers per rank and an odd validation set (5
    samples over 2 ranks): the job must end (no collective left waiting on a rank that ran out
    of data) within the deadline, both ranks at exactly ``max_steps`` with identical weights.
    """
    out, outputs = tmp_path / "hashes", tmp_path / "outputs"
    env = slurm_env({"DEPTH2IMG_OUTPUT_DIR": str(outputs)})
    # 15 samples // global batch 4 = 3 batches per epoch per rank: 6 steps cross an epoch end.
    max_steps = 6
    overrides = train_overrides(
        shards["uneven"], out, max_steps, ckpt_every=3, val_shards=shards["val"], num_workers=2
    )
    job = submit(TRAIN_SBATCH, CPU_2_RANKS, overrides + ["logger=csv"], env, tmp_path)
    assert_completed(wait_for_end(job, env, tmp_path), job, tmp_path)

    ends = {r: read_json(out / f"weights-r{r}-restart0-end.json") for r in (0, 1)}
    starts = {r: read_json(out / f"weights-r{r}-restart0-start.json") for r in (0, 1)}
    for r in (0, 1):
        assert ends[r]["world_size"] == 2 and ends[r]["job_id"] == job
        assert ends[r]["global_step"] == max_steps
    assert starts[0]["sha256"] == starts[1]["sha256"], "DDP did not start from equal weights"
    assert ends[0]["sha256"] == ends[1]["sha256"], "ranks diverged: gradients not all-reduced"
    assert ends[0]["sha256"] != starts[0]["sha256"], "weights did not change during training"

    # Everything of the run in the run dir keyed on the job id.
    run_dir = run_dir_of(outputs, job)
    assert checkpoint_step(run_dir / "checkpoints" / "last.ckpt") == max_steps
    metrics = (run_dir / "csv" / "metrics.csv").read_text()
    assert "train/loss" in metrics and "val/loss" in metrics
    log = job_log(tmp_path, job)
    assert "tasks/node=2" in log, log[-2000:]


def test_preemption_requeue_and_sigusr1_resume_same_run(cluster, shards, tmp_path):
    """(b) Two preemptions of one job, each resumed in the same run dir to exactly max_steps.

    1. ``scontrol requeue`` (what preemption by the scheduler does: SIGTERM, then SIGKILL after
       ``KillWait``) -> the restarted job (same id) resumes from ``checkpoints/last.ckpt``: the
       one saved on SIGTERM, or the periodic one if SIGKILL came first;
    2. ``scancel --signal=USR1`` (what ``--signal=SIGUSR1@90`` sends before the time limit) ->
       ``SlurmRequeueCallback`` saves ``last.ckpt`` at the next step boundary on both ranks and
       requeues the job itself; the restart resumes from exactly that step. (Lightning's own
       handler deadlocks here: it saves inside the signal handler while the other rank waits in
       the gradient all-reduce.)
    The W&B run id stays the same across the three starts.
    """
    out, outputs = tmp_path / "hashes", tmp_path / "outputs"
    env = slurm_env({"DEPTH2IMG_OUTPUT_DIR": str(outputs)})
    max_steps, ckpt_every = 20, 4
    overrides = train_overrides(shards["even"], out, max_steps, ckpt_every, sleep_s=0.3)
    # Rank 0 of the first restart waits at the first step just past a periodic checkpoint until
    # the test has sent SIGUSR1, so the signal lands at a step of its own every time.
    hold = [
        "+callbacks.progress.hold_restart=1",
        f"+callbacks.progress.hold_every={ckpt_every}",
        f"+callbacks.progress.hold_below={max_steps - 3}",
    ]
    job = submit(TRAIN_SBATCH, CPU_2_RANKS, [*overrides, *hold, "logger=many"], env, tmp_path)

    def progress_at(restart: int, accept):
        def check():
            path = out / "progress.json"
            if not path.is_file():
                return None
            progress = read_json(path)
            step = progress["global_step"]
            return step if progress["restart"] == restart and accept(step) else None

        return check

    # 1. Past the first checkpoint (step 4), well before the end.
    wait_until(progress_at(0, lambda s: 5 <= s < 12), JOB_TIMEOUT_S, "step 5", job, env, tmp_path)
    assert run(["scontrol", "requeue", job], env).returncode == 0
    # 2. After the restart, at a step just past a periodic checkpoint (rank 0 holds there until
    #    released), so that the SIGUSR1 checkpoint is at a step of its own.
    wait_until(
        progress_at(1, lambda s: s % ckpt_every == 1 and s < max_steps - 3),
        JOB_TIMEOUT_S,
        "a step after the first restart",
        job,
        env,
        tmp_path,
    )
    usr1 = run(["scancel", "--signal=USR1", job], env)
    assert usr1.returncode == 0, usr1.stderr
    time.sleep(1.0)  # let the signal reach both ranks' handlers before rank 0 moves on
    (out / "release").touch()
    info = wait_for_end(job, env, tmp_path)
    assert_completed(info, job, tmp_path)
    assert info["Restarts"] == "2"

    run_dir = run_dir_of(outputs, job)
    starts = [read_json(out / f"weights-r0-restart{n}-start.json") for n in range(3)]
    assert starts[0]["global_step"] == 0
    log = job_log(tmp_path, job)
    # Restart 1 resumed from last.ckpt, not from scratch: the SIGTERM save if it made it before
    # SIGKILL, else the newest periodic one.
    on_term = re.findall(r"saved \S+ at step (\d+) \(SIGTERM\)", log)
    assert starts[1]["global_step"] >= ckpt_every
    if on_term:
        assert starts[1]["global_step"] == int(on_term[0])
    else:
        assert starts[1]["global_step"] % ckpt_every == 0
    # Restart 2 resumed from the checkpoint written on SIGUSR1, at the step it was written.
    saved = re.findall(r"saved (\S+) at step (\d+) \(SIGUSR1\)", log)
    assert len(saved) == 1, f"no (or several) SIGUSR1 checkpoints in the job log:\n{log[-3000:]}"
    assert Path(saved[0][0]) == run_dir / "checkpoints" / "last.ckpt"
    assert int(saved[0][1]) > starts[1]["global_step"]
    assert starts[2]["global_step"] == int(saved[0][1])
    assert "requeueing SLURM job" in log
    # Requeues and preemption are normal ends: one log line each, no tracebacks.
    assert "Error executing job" not in log and "Traceback" not in log, log[-3000:]
    assert not list(run_dir.glob("hpc_ckpt_*.ckpt")), "Lightning's own SIGUSR1 handler ran"

    ends = [read_json(out / f"weights-r{r}-restart2-end.json") for r in (0, 1)]
    assert [e["global_step"] for e in ends] == [max_steps, max_steps]
    assert ends[0]["sha256"] == ends[1]["sha256"]
    assert checkpoint_step(run_dir / "checkpoints" / "last.ckpt") == max_steps

    # One W&B run continued across the requeues: one id, one offline run folder per start.
    run_id = (run_dir / "wandb_run_id.txt").read_text().strip()
    wandb_runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 3, wandb_runs
    assert all(p.name.endswith(f"-{run_id}") for p in wandb_runs), (run_id, wandb_runs)
    for n in range(3):  # one log, appended to by every start
        assert f"(restart {n})" in log


def test_eval_one_and_two_ranks_give_the_same_metrics(
    cluster, tiny_model_dir, street_eval_shards, tmp_path
):
    """(d) eval.sbatch with 1 task and with 2 tasks (gloo) on the same fixed set: same numbers."""
    env = slurm_env()
    common = [
        f"model_source={tiny_model_dir}",
        f"shards={street_eval_shards}",
        f"depth_estimator.source={tiny_model_dir}",
        "cache_dir=null",
        "device=cpu",
        "eval.num_samples=4",
        "eval.batch_size=2",
        "eval.steps=2",
        "eval.num_grid=2",
        "progress=false",
    ]
    one_rank = ["--gpus-per-node=0", "--ntasks-per-node=1", "--cpus-per-task=1"]
    # Both submitted at once: the 2-CPU node runs them one after the other.
    jobs = {
        1: submit(EVAL_SBATCH, one_rank, [*common, f"out_dir={tmp_path}/r1"], env, tmp_path),
        2: submit(EVAL_SBATCH, CPU_2_RANKS, [*common, f"out_dir={tmp_path}/r2"], env, tmp_path),
    }
    for job in jobs.values():
        assert_completed(wait_for_end(job, env, tmp_path), job, tmp_path)

    one = read_json(tmp_path / "r1" / "metrics.json")
    two = read_json(tmp_path / "r2" / "metrics.json")
    assert one["world_size"] == 1 and two["world_size"] == 2
    assert one["N"] == two["N"] == 4
    assert sorted(p.name for p in (tmp_path / "r2" / "images").glob("*.png")) == [
        f"{i:05d}.png" for i in range(4)
    ]
    assert set(one["metrics"]) == set(two["metrics"])
    for key, value in one["metrics"].items():
        assert two["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
