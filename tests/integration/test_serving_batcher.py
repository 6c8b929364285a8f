"""The micro-batcher (no model) and the engine's batching rule (shipped model, no server)."""

from __future__ import annotations

import asyncio
import io
import threading

import numpy as np
import pytest
from PIL import Image

from depth2img.serving.batcher import MicroBatcher, QueueFull


def _run(coro):
    return asyncio.run(coro)


def test_batches_group_equal_keys_up_to_max_batch():
    calls: list[list[str]] = []
    gate = threading.Event()

    def run_batch(items):
        gate.wait(5)  # hold the first batch so the rest queue up behind it
        calls.append(list(items))
        return [f"done:{item}" for item in items]

    async def main():
        batcher = MicroBatcher(run_batch, max_batch=3, max_queue=10, max_wait_s=0)
        batcher.start()
        jobs = [("first", "a", 1), ("a1", "a", 1), ("b1", "b", 1), ("a2", "a", 1)]
        jobs += [("a3", "a", 1), ("a4", "a", 1)]
        tasks = []
        for item, key, size in jobs:
            ticket = batcher.admit()
            tasks.append(asyncio.create_task(batcher.submit(ticket, item, key, size)))
            await asyncio.sleep(0.01)  # "first" starts alone, the others queue
        gate.set()
        results = await asyncio.gather(*tasks)
        await batcher.stop()
        return results

    results = _run(main())
    assert [r[0] for r in results] == [f"done:{j}" for j in ("first", "a1", "b1", "a2", "a3", "a4")]
    # oldest first; same key only; at most 3 images per call; b waits its turn, not starved
    assert calls == [["first"], ["a1", "a2", "a3"], ["b1"], ["a4"]]
    batch_sizes = [r[1].batch_images for r in results]
    assert batch_sizes == [1, 3, 1, 3, 3, 1]


def test_full_queue_raises_with_retry_after_and_frees_places():
    release = threading.Event()

    def run_batch(items):
        release.wait(5)
        return items

    async def main():
        batcher = MicroBatcher(run_batch, max_batch=1, max_queue=2, max_wait_s=0)
        batcher.start()
        running = asyncio.create_task(batcher.submit(batcher.admit(), "run", "k", 1))
        await asyncio.sleep(0.05)  # now running: no longer counts against the queue
        waiting = [
            asyncio.create_task(batcher.submit(batcher.admit(), f"w{i}", "k", 1)) for i in (1, 2)
        ]
        with pytest.raises(QueueFull) as full:
            batcher.admit()
        assert full.value.retry_after_s >= 1
        assert batcher.stats()["waiting"] == 2
        release.set()
        await asyncio.gather(running, *waiting)
        assert batcher.stats()["waiting"] == 0
        batcher.admit().release()  # places are free again
        await batcher.stop()

    _run(main())


def test_one_failing_item_does_not_fail_its_batch():
    gate = threading.Event()

    def run_batch(items):
        gate.wait(5)
        if "bad" in items:
            raise ValueError("bad item")
        return [item.upper() for item in items]

    async def main():
        batcher = MicroBatcher(run_batch, max_batch=8, max_queue=8, max_wait_s=0)
        batcher.start()
        first = asyncio.create_task(batcher.submit(batcher.admit(), "x", "k", 1))
        await asyncio.sleep(0.02)
        rest = [
            asyncio.create_task(batcher.submit(batcher.admit(), item, "k", 1))
            for item in ("ok", "bad", "fine")
        ]
        await asyncio.sleep(0.02)
        gate.set()
        results = await asyncio.gather(first, *rest, return_exceptions=True)
        await batcher.stop()
        return results

    first, ok, bad, fine = _run(main())
    assert first[0] == "X" and ok[0] == "OK" and fine[0] == "FINE"
    assert isinstance(bad, ValueError)


@pytest.fixture(scope="module")
def shipped_generator():
    from depth2img.inference import Depth2ImgGenerator

    return Depth2ImgGenerator.from_pretrained("shipped")


def _depth_png(seed: int) -> bytes:
    rows, cols = np.mgrid[0:64, 0:64]
    depth = 20000 + 300 * rows + 100 * ((cols + 7 * seed) % 64)
    buffer = io.BytesIO()
    Image.fromarray(depth.astype(np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_engine_batch_keeps_each_request_its_own_images(shipped_generator, tmp_path):
    """Different prompts, negative prompts, seeds, depth maps and image counts in one call.

    Alone, a request gets exactly the Python API's pixels; in a batch, at most one level off on
    a few pixels (CPU kernels round differently for other batch sizes).
    """
    from depth2img.serving.engine import GenerationEngine
    from depth2img.serving.schemas import ServeLimits, parse_request

    engine = GenerationEngine(shipped_generator, ServeLimits())
    specs = [
        {"prompt": "a street at night", "seed": 11, "num_images": 2},
        {"prompt": "snowy road", "negative_prompt": "blurry", "seed": 3},
        {"prompt": "endoscopy, bleeding", "seed": 2**31},
    ]
    jobs = []
    for k, spec in enumerate(specs):
        fields = {**spec, "num_inference_steps": 3, "depth_kind": "depth"}
        jobs.append(engine.prepare(parse_request(fields, engine.limits), depth_bytes=_depth_png(k)))
    assert len({job.batch_key for job in jobs}) == 1
    batched = engine.run_batch(jobs)
    assert [len(r.images) for r in batched] == [2, 1, 1]
    assert all(r.batch_images == 4 for r in batched)
    for k, (spec, job, result) in enumerate(zip(specs, jobs, batched)):
        path = tmp_path / f"d{k}.png"
        path.write_bytes(_depth_png(k))
        alone = shipped_generator(
            spec["prompt"],
            depth=str(path),
            depth_kind="depth",
            negative_prompt=spec.get("negative_prompt"),
            seed=spec["seed"],
            num_images=spec.get("num_images", 1),
            num_inference_steps=3,
        )
        [served_alone] = engine.run_batch([job])
        for in_batch, by_itself, reference in zip(result.images, served_alone.images, alone.images):
            reference = np.asarray(reference).astype(int)
            np.testing.assert_array_equal(np.asarray(by_itself), reference)
            diff = np.abs(np.asarray(in_batch).astype(int) - reference)
            assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    # the requests really differ (a batch that mixed them up would fail above)
    first, second = (np.asarray(r.images[0]).astype(int) for r in batched[:2])
    assert np.abs(first - second).max() > 10
