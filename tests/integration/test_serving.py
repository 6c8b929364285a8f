"""depth2img-serve as a real process on 127.0.0.1 with the shipped model: API, parity, errors.

One server per module (loading takes a few seconds); requests use 64 px inputs and few steps.
"""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import time

import numpy as np
import pytest
import requests
from PIL import Image

from depth2img.serving.process import ServerProcess

pytestmark = pytest.mark.slow
STEPS = 4
SERVER_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_png(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A 16-bit depth map (near at the bottom), a matching RGB image, files and bytes."""
    folder = tmp_path_factory.mktemp("serving_inputs")
    rows, cols = np.mgrid[0:64, 0:64]
    depth = (60000 - 800 * rows + 40 * np.abs(cols - 32)).astype(np.uint16)  # distance
    image = np.stack([rows * 3, cols * 3, 255 - rows * 2], axis=-1).astype(np.uint8)
    files = {"depth": folder / "scene_depth.png", "image": folder / "scene.png"}
    files["depth"].write_bytes(png_bytes(depth))
    files["image"].write_bytes(png_bytes(image))
    return {
        "folder": folder,
        "files": files,
        "depth_png": files["depth"].read_bytes(),
        "image_png": files["image"].read_bytes(),
    }


@pytest.fixture(scope="module")
def server():
    args = ["--model", "shipped", "--quiet", "--threads", "1", "--max-body-mb", "2"]
    with ServerProcess(args, env=SERVER_ENV) as process:
        yield process
        assert process.alive(), process.log()


@pytest.fixture(scope="module")
def generator():
    from depth2img.inference import Depth2ImgGenerator

    return Depth2ImgGenerator.from_pretrained("shipped")


def post(server, body=None, **kwargs) -> requests.Response:
    return requests.post(f"{server.url}/v1/generate", json=body, timeout=120, **kwargs)


def test_healthz_page_and_openapi(server):
    health = requests.get(f"{server.url}/healthz", timeout=10)
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["model"] == "shipped" and health.json()["device"] == "cpu"
    page = requests.get(server.url, timeout=10)
    assert page.status_code == 200 and 'id="generate-form"' in page.text
    assert requests.get(f"{server.url}/static/app.js", timeout=10).status_code == 200
    schema = requests.get(f"{server.url}/openapi.json", timeout=10).json()
    body = schema["paths"]["/v1/generate"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    fields = schema["components"]["schemas"]["GenerateRequest"]["properties"]
    assert {"prompt", "negative_prompt", "seed", "strength", "image", "depth"} <= set(fields)
    assert requests.get(f"{server.url}/docs", timeout=10).status_code == 200


def test_json_request_gives_the_pixels_of_the_python_api_and_the_cli(
    server, inputs, generator, tmp_path
):
    from depth2img.cli.generate import main as generate_main

    request = {
        "prompt": "a street at night",
        "negative_prompt": "blurry",
        "depth": b64(inputs["depth_png"]),
        "depth_kind": "depth",
        "seed": 5,
        "num_images": 2,
        "num_inference_steps": STEPS,
        "guidance_scale": 6.0,
    }
    response = post(server, request)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["seeds"] == [5, 6] and answer["depth_source"] == "given"
    assert (answer["width"], answer["height"]) == (64, 64)
    assert answer["timings"]["batch_images"] == 2  # served alone: exact parity
    served = [decode_png(image) for image in answer["images"]]

    api = generator(
        "a street at night",
        depth=str(inputs["files"]["depth"]),
        depth_kind="depth",
        negative_prompt="blurry",
        seed=5,
        num_images=2,
        num_inference_steps=STEPS,
        guidance_scale=6.0,
    )
    argv = ["--model", "shipped", "--prompt", "a street at night", "--negative-prompt", "blurry"]
    argv += ["--depth", str(inputs["files"]["depth"]), "--depth-kind", "depth", "--seed", "5"]
    argv += ["--num-images", "2", "--steps", str(STEPS), "--guidance-scale", "6.0"]
    argv += ["--device", "cpu", "--out", str(tmp_path / "cli")]
    assert generate_main(argv) == 0
    for k in range(2):
        np.testing.assert_array_equal(served[k], np.asarray(api.images[k]))
        cli = np.asarray(Image.open(tmp_path / "cli" / f"scene_depth_{k}.png").convert("RGB"))
        np.testing.assert_array_equal(served[k], cli)
    assert not np.array_equal(served[0], served[1])  # two seeds, two images
    depth_used = decode_png(answer["depth"])
    assert depth_used.shape == (64, 64)
    assert depth_used[-1].mean() > depth_used[0].mean() + 50  # near (bottom rows) is white


def test_multipart_and_png_answers_match_json(server, inputs):
    fields = {"prompt": "snowy road", "seed": "9", "strength": "0.75", "depth_kind": "depth"}
    fields["num_inference_steps"] = str(STEPS)
    as_json = post(
        server,
        {**fields, "image": b64(inputs["image_png"]), "depth": b64(inputs["depth_png"])},
    )
    assert as_json.status_code == 200, as_json.text
    files = {
        "image": ("scene.png", inputs["image_png"], "image/png"),
        "depth": ("scene_depth.png", inputs["depth_png"], "image/png"),
    }
    as_form = requests.post(f"{server.url}/v1/generate", data=fields, files=files, timeout=120)
    assert as_form.status_code == 200, as_form.text
    as_png = requests.post(
        f"{server.url}/v1/generate",
        data=fields,
        files=files,
        headers={"Accept": "image/png"},
        timeout=120,
    )
    assert as_png.status_code == 200 and as_png.headers["content-type"] == "image/png"
    assert as_png.headers["x-seed"] == "9"
    expected = decode_png(as_json.json()["images"][0])
    np.testing.assert_array_equal(decode_png(as_form.json()["images"][0]), expected)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(as_png.content))), expected)


def test_image_only_estimates_depth_like_the_python_api(server, inputs, generator):
    request = {"prompt": "aerial view", "image": b64(inputs["image_png"]), "seed": 1}
    response = post(server, {**request, "num_inference_steps": STEPS, "strength": 0.9})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["depth_source"].startswith("estimated:")
    api = generator(
        "aerial view",
        image=str(inputs["files"]["image"]),
        seed=1,
        num_inference_steps=STEPS,
        strength=0.9,
    )
    assert api.params[0]["depth_source"] == answer["depth_source"]
    np.testing.assert_array_equal(decode_png(answer["images"][0]), np.asarray(api.images[0]))


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def bad_requests(inputs) -> list[tuple[str, dict, tuple[int, ...], str]]:
    """(case, requests.post kwargs, accepted statuses, a word the error must contain)."""
    depth = b64(inputs["depth_png"])
    image = b64(inputs["image_png"])
    ok = {"prompt": "a road", "depth": depth, "num_inference_steps": STEPS}
    wide_depth = b64(png_bytes(np.full((32, 64), 300, np.uint16)))
    color_depth = b64(png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)))
    too_big_depth = b64(png_bytes(np.zeros((1100, 1100), np.uint8)))
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), "gray").save(jpeg, format="JPEG")
    pickled = b64(_npy_bytes(np.array([{"a": 1}], dtype=object)))
    all_nan = b64(_npy_bytes(np.full((64, 64), np.nan, np.float32)))
    js = lambda body: {"json": body}  # noqa: E731
    return [
        ("missing prompt", js({"depth": depth}), (422,), "prompt"),
        ("blank prompt", js({**ok, "prompt": "   "}), (422,), "prompt"),
        ("corrupt base64", js({**ok, "depth": "@@not base64@@"}), (400,), "base64"),
        ("image not an image", js({**ok, "image": b64(b"hello")}), (400,), "image"),
        ("depth is a JPEG", js({**ok, "depth": b64(jpeg.getvalue())}), (400,), "depth"),
        (
            "depth of another aspect",
            js({**ok, "image": image, "depth": wide_depth}),
            (422,),
            "aspect",
        ),
        ("color depth map", js({**ok, "depth": color_depth}), (400,), "channel"),
        ("pickled npy", js({**ok, "depth": pickled}), (400,), "pickle"),
        ("all-NaN depth", js({**ok, "depth": all_nan}), (422,), "valid"),
        ("strength 0", js({**ok, "image": image, "strength": 0}), (422,), "strength"),
        ("strength 1.5", js({**ok, "strength": 1.5}), (422,), "strength"),
        (
            "ControlNet scale on a concat model",
            js({**ok, "controlnet_conditioning_scale": 2.0}),
            (422,),
            "ControlNet models",
        ),
        (
            "control start after end",
            js({**ok, "control_guidance_start": 0.8, "control_guidance_end": 0.2}),
            (422,),
            "control_guidance_start",
        ),
        ("unknown init latents", js({**ok, "init_latents": "median"}), (422,), "init_latents"),
        (
            "strength too low for steps",
            js({**ok, "image": image, "strength": 0.1}),
            (422,),
            "strength",
        ),
        ("steps 0", js({**ok, "num_inference_steps": 0}), (422,), "num_inference_steps"),
        ("steps above limit", js({**ok, "num_inference_steps": 100000}), (422,), "limit"),
        (
            "steps not a number",
            js({**ok, "num_inference_steps": "many"}),
            (422,),
            "num_inference_steps",
        ),
        ("output too large", js({**ok, "width": 100000, "height": 100000}), (422,), "pixels"),
        ("only width", js({**ok, "width": 64}), (422,), "height"),
        ("depth too many pixels", js({**ok, "depth": too_big_depth}), (422,), "pixels"),
        ("too many images", js({**ok, "num_images": 100}), (422,), "num_images"),
        ("no image and no depth", js({"prompt": "x"}), (422,), "depth"),
        ("unknown field", js({**ok, "promt": "typo"}), (422,), "promt"),
        ("negative seed", js({**ok, "seed": -1}), (422,), "seed"),
        ("unknown depth kind", js({**ok, "depth_kind": "metric"}), (422,), "depth_kind"),
        (
            "NaN guidance",
            {
                "data": json.dumps({**ok, "guidance_scale": float("nan")}),
                "headers": {"content-type": "application/json"},
            },
            (422,),
            "guidance",
        ),
        (
            "body not JSON",
            {"data": b"{prompt", "headers": {"content-type": "application/json"}},
            (400,),
            "JSON",
        ),
        ("body a JSON list", js([ok]), (422,), "object"),
        (
            "text/plain body",
            {"data": b"hi", "headers": {"content-type": "text/plain"}},
            (415,),
            "content type",
        ),
        ("body over the limit", js({**ok, "depth": "A" * (3 * 1024 * 1024)}), (413,), "limit"),
        (
            "png for two images",
            {**js({**ok, "num_images": 2}), "headers": {"Accept": "image/png"}},
            (406,),
            "one image",
        ),
        (
            "empty upload",
            {"data": {"prompt": "x"}, "files": {"depth": ("d.png", b"")}},
            (400,),
            "empty",
        ),
    ]


def test_bad_inputs_get_one_line_4xx_and_the_server_stays_healthy(server, inputs):
    cases = bad_requests(inputs)
    assert len(cases) >= 15
    failures = []
    for name, kwargs, statuses, word in cases:
        response = requests.post(f"{server.url}/v1/generate", timeout=60, **kwargs)
        try:
            error = response.json()["error"]
        except (ValueError, KeyError):
            failures.append(
                f"{name}: {response.status_code} without an error field: {response.text[:200]}"
            )
            continue
        if response.status_code not in statuses or word.lower() not in error.lower():
            failures.append(f"{name}: {response.status_code} {error!r}")
        if "\n" in error or "Traceback" in error or len(error) > 400:
            failures.append(f"{name}: not one clear line: {error!r}")
    assert not failures, "\n".join(failures)
    wrong_method = requests.get(f"{server.url}/v1/generate", timeout=10)
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()
    assert server.alive()
    assert requests.get(f"{server.url}/healthz", timeout=10).json()["status"] == "ok"
    good = post(
        server, {"prompt": "a road", "depth": b64(inputs["depth_png"]), "num_inference_steps": 2}
    )
    assert good.status_code == 200
    assert "Traceback" not in server.log()


def test_init_latents_mean_gives_the_python_api_pixels(server, inputs, generator):
    request = {
        "prompt": "a road",
        "image": b64(inputs["image_png"]),
        "depth": b64(inputs["depth_png"]),
        "depth_kind": "depth",
        "strength": 0.5,
        "seed": 3,
        "num_inference_steps": STEPS,
    }
    served = {}
    for how in ("sample", "mean"):
        response = post(server, {**request, "init_latents": how})
        assert response.status_code == 200, response.text
        served[how] = decode_png(response.json()["images"][0])
    api = generator(
        "a road",
        image=str(inputs["files"]["image"]),
        depth=str(inputs["files"]["depth"]),
        depth_kind="depth",
        strength=0.5,
        seed=3,
        num_inference_steps=STEPS,
        init_latents_from="mean",
    )
    np.testing.assert_array_equal(served["mean"], np.asarray(api.images[0]))
    assert not np.array_equal(served["mean"], served["sample"])


def test_controlnet_server_takes_conditioning_scale_and_guidance_window(inputs):
    """A ControlNet model served with its options: pixels equal the Python API's."""
    from depth2img.inference import Depth2ImgGenerator

    args = ["--model", "shipped-sd-controlnet", "--quiet", "--threads", "1"]
    request = {
        "prompt": "a street",
        "depth": b64(inputs["depth_png"]),
        "depth_kind": "depth",
        "seed": 1,
        "num_inference_steps": STEPS,
    }
    options = {
        "controlnet_conditioning_scale": 2.0,
        "control_guidance_start": 0.25,
        "control_guidance_end": 0.75,
    }
    with ServerProcess(args, env=SERVER_ENV) as process:
        plain = post(process, request)
        tuned = post(process, {**request, **options})
        assert plain.status_code == 200 and tuned.status_code == 200, tuned.text
    generator = Depth2ImgGenerator.from_pretrained("shipped-sd-controlnet")
    api = generator(
        "a street",
        depth=str(inputs["files"]["depth"]),
        depth_kind="depth",
        seed=1,
        num_inference_steps=STEPS,
        **options,
    )
    tuned_image = decode_png(tuned.json()["images"][0])
    np.testing.assert_array_equal(tuned_image, np.asarray(api.images[0]))
    assert not np.array_equal(tuned_image, decode_png(plain.json()["images"][0]))


def test_full_queue_answers_503_with_retry_after(inputs):
    """One request running, one waiting (max-queue 1): the third gets 503 + Retry-After."""
    args = ["--model", "shipped", "--quiet", "--threads", "1", "--max-batch", "1"]
    args += ["--max-queue", "1", "--batch-wait-ms", "0"]
    long_request = {"prompt": "a road", "depth": b64(inputs["depth_png"]), "seed": 0}
    long_request["num_inference_steps"] = 40  # seconds of work: the test acts meanwhile
    with ServerProcess(args, env=SERVER_ENV) as busy:
        answers = {}

        def send(name):
            answers[name] = post(busy, long_request)

        def queue():
            return requests.get(f"{busy.url}/healthz", timeout=10).json()["queue"]

        def wait_for(condition):
            deadline = time.monotonic() + 60
            while not condition(queue()):
                assert time.monotonic() < deadline, queue()
                time.sleep(0.02)

        running = threading.Thread(target=send, args=("running",))
        running.start()
        wait_for(lambda q: q["running"] == 1)
        waiting = threading.Thread(target=send, args=("waiting",))
        waiting.start()
        wait_for(lambda q: q["waiting"] == 1)
        refused = post(busy, {**long_request, "num_inference_steps": 1})
        assert refused.status_code == 503
        assert int(refused.headers["Retry-After"]) >= 1
        assert "retry" in refused.json()["error"]
        running.join(120)
        waiting.join(120)
        assert answers["running"].status_code == 200 and answers["waiting"].status_code == 200
        assert queue()["waiting"] == 0
        assert busy.alive()
