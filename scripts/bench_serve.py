"""Load test of ``depth2img-serve``: N concurrent clients against 127.0.0.1.

For each client count: every client sends requests back to back (its own prompt, seed and
depth map; 64 px depth-only by default) for ``--duration`` seconds, then requests/s, p50/p95
latency, errors and the server's CPU seconds per request are reported. The client counts run
``--rounds`` times, interleaved (1, 8, 1, 8, ...), and the ratio uses the median per count, so
a change in the load of a shared machine hits both sides. Then ``--rss-requests`` requests at the largest client count,
with the server's resident memory (RSS) read before and after. Goals (issue 16, shipped model,
2-core CPU): 0 errors at 8 clients; throughput at 8 clients >= 1.5x that at 1 client (request
batching); RSS growth < 10 % over 500 requests.

Usage:
  python scripts/bench_serve.py                              # starts a shipped-model server
  python scripts/bench_serve.py --clients 1 8 --duration 30 --rss-requests 500
  python scripts/bench_serve.py --server-args "--max-batch 1"  # batching off, for comparison
  python scripts/bench_serve.py --url http://127.0.0.1:8000 --pid 1234   # a running server
Writes JSON (default outputs/bench/serve.json) and prints a table.
"""

from __future__ import annotations

import argparse
import base64
import functools
import io
import json
import os
import platform
import shlex
import sys
import threading
import time
from pathlib import Path

import numpy as np
import requests
from PIL import Image


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--url", default=None, help="a running server (default: start one)")
    p.add_argument("--pid", type=int, default=None, help="its process id, for RSS (with --url)")
    p.add_argument("--model", default="shipped", help="model of the started server")
    p.add_argument(
        "--server-args",
        default="--threads 1",
        help="extra depth2img-serve flags (default: '--threads 1': one torch thread, the "
        "fastest setting on a busy shared 2-core CPU)",
    )
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8], help="client counts")
    p.add_argument("--duration", type=float, default=30.0, help="seconds per client count")
    p.add_argument("--rounds", type=int, default=2, help="interleaved repeats of the counts")
    p.add_argument(
        "--rss-requests",
        type=int,
        default=500,
        help="requests for the memory check at the largest client count (0: skip)",
    )
    p.add_argument("--warmup", type=int, default=4, help="requests before measuring")
    p.add_argument("--steps", type=int, default=20, help="denoising steps per request")
    p.add_argument("--size", type=int, default=64, help="depth map size in px")
    p.add_argument("--out", default="outputs/bench/serve.json")
    return p.parse_args(argv)


@functools.lru_cache(maxsize=64)
def depth_png(index: int, size: int) -> str:
    """A distinct 16-bit depth map per client (a tilted plane with a bump), base64."""
    rows, cols = np.mgrid[0:size, 0:size] / size
    bump = np.exp(-((rows - 0.5) ** 2 + (cols - (index % 5) / 5) ** 2) * 20)
    depth = (20000 + 30000 * rows + 15000 * bump).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(depth).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


PROMPTS = ["a street at night", "a snowy road", "aerial view of a village", "endoscopy"]


def make_request(client: int, k: int, args) -> dict:
    return {
        "prompt": PROMPTS[client % len(PROMPTS)],
        "depth": depth_png(client, args.size),
        "seed": 1000 * client + k,
        "num_inference_steps": args.steps,
    }


def rss_mb(pid: int | None) -> float | None:
    """Resident memory of ``pid`` in MB (Linux /proc), None when unknown."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except Exception:  # noqa: BLE001 - psutil missing or process gone
        return None


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds used by ``pid`` so far (Linux /proc), None when unknown."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def run_load(url: str, clients: int, args, *, duration: float | None, total: int | None, pid=None):
    """``clients`` threads sending back to back until ``duration`` s or ``total`` requests."""
    latencies: list[float] = []
    errors: list[str] = []
    batch_sizes: list[int] = []
    lock = threading.Lock()
    sent = [0]
    deadline = time.perf_counter() + duration if duration else None

    def client(index: int) -> None:
        session = requests.Session()
        k = 0
        while True:
            with lock:
                if total is not None and sent[0] >= total:
                    return
                sent[0] += 1
            if deadline is not None and time.perf_counter() >= deadline:
                return
            body = make_request(index, k, args)
            k += 1
            start = time.perf_counter()
            try:
                response = session.post(f"{url}/v1/generate", json=body, timeout=300)
                elapsed = time.perf_counter() - start
                with lock:
                    if response.status_code == 200:
                        latencies.append(elapsed)
                        batch_sizes.append(response.json()["timings"]["batch_images"])
                    else:
                        errors.append(f"{response.status_code}: {response.text[:200]}")
            except requests.RequestException as err:
                with lock:
                    errors.append(f"{type(err).__name__}: {err}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    cpu_start = cpu_seconds(pid)
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    cpu_end = cpu_seconds(pid)
    cpu_per_request = None
    if cpu_start is not None and cpu_end is not None and latencies:
        cpu_per_request = round((cpu_end - cpu_start) / len(latencies), 3)
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {
        "clients": clients,
        "seconds": round(wall, 2),
        "requests_ok": len(latencies),
        "errors": len(errors),
        "error_examples": errors[:3],
        "requests_per_s": round(len(latencies) / wall, 3),
        "p50_s": round(float(np.percentile(lat, 50)), 3),
        "p95_s": round(float(np.percentile(lat, 95)), 3),
        "mean_batch_images": round(float(np.mean(batch_sizes)), 2) if batch_sizes else None,
        "server_cpu_s_per_request": cpu_per_request,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    server = None
    url, pid = args.url, args.pid
    if url is None:
        from depth2img.serving.process import ServerProcess

        server_args = ["--model", args.model, "--quiet", *shlex.split(args.server_args)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        started = time.perf_counter()
        server = ServerProcess(server_args, env=env)
        url, pid = server.url, server.pid
        print(f"server {url} (pid {pid}) up in {time.perf_counter() - started:.1f} s", flush=True)
    try:
        health = requests.get(f"{url}/healthz", timeout=10).json()
        result = {
            "url": url,
            "model": health.get("model"),
            "device": health.get("device"),
            "server_args": args.server_args if server else None,
            "steps": args.steps,
            "size": args.size,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "load_average_start": os.getloadavg(),
            "rss_mb_after_load": rss_mb(pid),
        }
        run_load(url, 1, args, duration=None, total=args.warmup)
        result["rss_mb_after_warmup"] = rss_mb(pid)
        levels = []
        for _ in range(args.rounds):
            for clients in args.clients:
                level = run_load(url, clients, args, duration=args.duration, total=None, pid=pid)
                levels.append(level)
                print(json.dumps(level), flush=True)
        result["levels"] = levels
        summary = {}
        for clients in args.clients:
            mine = [level for level in levels if level["clients"] == clients]
            summary[clients] = {
                "requests_per_s_median": float(np.median([lv["requests_per_s"] for lv in mine])),
                "errors": sum(lv["errors"] for lv in mine),
            }
            cpu = [lv["server_cpu_s_per_request"] for lv in mine]
            if all(c is not None for c in cpu):
                summary[clients]["server_cpu_s_per_request_median"] = float(np.median(cpu))
        result["summary"] = summary
        most = max(args.clients)
        if 1 in summary and most > 1 and summary[1]["requests_per_s_median"] > 0:
            ratio = summary[most]["requests_per_s_median"] / summary[1]["requests_per_s_median"]
            result["speedup"] = {f"{most}_vs_1_clients_requests_per_s": round(ratio, 2)}
            if "server_cpu_s_per_request_median" in summary[most]:
                cpu_ratio = (
                    summary[1]["server_cpu_s_per_request_median"]
                    / summary[most]["server_cpu_s_per_request_median"]
                )
                result["speedup"][f"{most}_vs_1_clients_cpu_per_request"] = round(cpu_ratio, 2)
        if args.rss_requests:
            before = rss_mb(pid)
            memory = run_load(url, most, args, duration=None, total=args.rss_requests, pid=pid)
            after = rss_mb(pid)
            memory.update(rss_mb_before=before, rss_mb_after=after)
            if before and after:
                memory["rss_growth_pct"] = round(100.0 * (after - before) / before, 2)
            result["memory"] = memory
            print(json.dumps(memory), flush=True)
        result["load_average_end"] = os.getloadavg()
        result["server_alive"] = server.alive() if server else None
    finally:
        if server is not None:
            server.stop()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
