"""The documented clients (curl, Python, Node) and the web page, run against a live server.

Node >= 18 and Chromium + chromedriver come from the OS packages (``make test`` runs
scripts/ensure_test_tools.sh); where they cannot be installed these tests skip with the reason.
Set ``DEPTH2IMG_DOCS_SCREENSHOT=docs/serving_page.png`` to refresh the screenshot in the docs.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from depth2img.serving.process import ServerProcess

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SERVER_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
INSTALL_HINT = "run `bash scripts/ensure_test_tools.sh` (make test does)"


@pytest.fixture(scope="module")
def server():
    with ServerProcess(["--model", "shipped", "--quiet", "--threads", "1"], env=SERVER_ENV) as s:
        yield s
        assert s.alive(), s.log()


@pytest.fixture(scope="module")
def generator():
    from depth2img.inference import Depth2ImgGenerator

    return Depth2ImgGenerator.from_pretrained("shipped")


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A synthetic endoscopy render: image PNG, exact depth (.npy, distance) and 8-bit PNG."""
    from depth2img.data.synthetic import render_sample

    folder = tmp_path_factory.mktemp("client_inputs")
    sample = render_sample("endoscopy", 3, size=64, seed=0)
    Image.fromarray(sample.image).save(folder / "scene.png")
    np.save(folder / "scene_depth.npy", sample.depth.astype(np.float32))
    near_high = 1.0 / sample.depth
    gray = (near_high - near_high.min()) / (near_high.max() - near_high.min()) * 255
    Image.fromarray(gray.round().astype(np.uint8)).save(folder / "scene_inverse.png")
    return {"folder": folder, "caption": sample.caption, "kind": sample.depth_kind}


def _reference(generator, prompt, depth, seed, num_images=1, **kwargs):
    result = generator(prompt, depth=str(depth), seed=seed, num_images=num_images, **kwargs)
    return [np.asarray(image) for image in result.images]


def _run(command, server, timeout=300):
    env = {**os.environ, "DEPTH2IMG_URL": server.url}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_docs_show_the_example_clients_verbatim():
    docs = (ROOT / "docs" / "serving.md").read_text()
    for name in ("client.sh", "client.py", "client.mjs"):
        assert (EXAMPLES / name).read_text().strip() in docs, f"docs/serving.md lacks {name}"


def test_curl_example(server, scene, generator, tmp_path):
    if shutil.which("curl") is None:
        pytest.skip(f"curl is not installed: {INSTALL_HINT}")
    depth = scene["folder"] / "scene_inverse.png"
    out = tmp_path / "curl.png"
    stdout = _run(["bash", str(EXAMPLES / "client.sh"), str(depth), str(out), "a tunnel"], server)
    assert "seed 0" in stdout
    [expected] = _reference(generator, "a tunnel", depth, 0, num_inference_steps=20)
    np.testing.assert_array_equal(np.asarray(Image.open(out)), expected)


def test_python_example(server, scene, generator, tmp_path):
    depth = scene["folder"] / "scene_inverse.png"
    command = [sys.executable, str(EXAMPLES / "client.py"), "--url", server.url]
    command += ["--depth", str(depth), "--seed", "4", "--num-images", "2", "--out", str(tmp_path)]
    _run(command, server)
    expected = _reference(
        generator,
        "a street at night",
        depth,
        4,
        num_images=2,
        negative_prompt="blurry",
        num_inference_steps=20,
    )
    for k, seed in enumerate((4, 5)):
        served = np.asarray(Image.open(tmp_path / f"seed{seed}.png"))
        np.testing.assert_array_equal(served, expected[k])
    assert Image.open(tmp_path / "depth_used.png").size == (64, 64)


def _node_or_skip() -> str:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip(f"Node.js is not installed: {INSTALL_HINT}")
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
    major = int(re.match(r"v(\d+)", version).group(1))
    if major < 18:
        pytest.skip(f"Node.js {version.strip()} has no built-in fetch (need >= 18): {INSTALL_HINT}")
    return node


def test_node_example(server, scene, generator, tmp_path):
    node = _node_or_skip()
    depth = scene["folder"] / "scene_inverse.png"
    stdout = _run([node, str(EXAMPLES / "client.mjs"), str(depth), str(tmp_path), "a cave"], server)
    assert "seeds 0, 1" in stdout
    expected = _reference(generator, "a cave", depth, 0, num_images=2, num_inference_steps=20)
    for k in range(2):
        served = np.asarray(Image.open(tmp_path / f"seed{k}.png"))
        np.testing.assert_array_equal(served, expected[k])


CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture
def browser(tmp_path):
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            pytest.skip(f"{path} is missing (Debian package {package}): {INSTALL_HINT}")
    selenium = pytest.importorskip("selenium", reason="selenium is in the dev extra")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert selenium
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download drivers
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_window_size(1280, 1000)
    try:
        yield driver
    finally:
        driver.quit()


def test_web_page_generates_an_image(server, scene, generator, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as until
    from selenium.webdriver.support.ui import Select, WebDriverWait

    browser.get(server.url)
    WebDriverWait(browser, 30).until(
        lambda d: "model shipped" in d.find_element(By.ID, "model-info").text
    )
    prompt = "endoscopy, a pink tunnel"
    browser.find_element(By.ID, "prompt").send_keys(prompt)
    for field, value in (("num_inference_steps", "8"), ("seed", "7"), ("num_images", "2")):
        element = browser.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)
    browser.find_element(By.ID, "depth").send_keys(str(scene["folder"] / "scene_depth.npy"))
    Select(browser.find_element(By.ID, "depth_kind")).select_by_value(scene["kind"])
    browser.find_element(By.ID, "image").send_keys(str(scene["folder"] / "scene.png"))
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 120).until(
        until.presence_of_all_elements_located((By.CSS_SELECTOR, "img.generated"))
    )
    WebDriverWait(browser, 10).until(
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('img.generated, #depth-preview')]"
            ".every(img => img.complete && img.naturalWidth === 64)"
        )
    )
    assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None
    assert browser.find_element(By.ID, "depth-figure").is_displayed()
    shown = [
        img.get_attribute("src") for img in browser.find_elements(By.CSS_SELECTOR, "img.generated")
    ]
    assert len(shown) == 2
    expected = _reference(
        generator,
        prompt,
        scene["folder"] / "scene_depth.npy",
        7,
        num_images=2,
        image=str(scene["folder"] / "scene.png"),
        depth_kind=scene["kind"],
        num_inference_steps=8,
        strength=0.8,
    )
    for src, reference in zip(shown, expected):
        assert src.startswith("data:image/png;base64,")
        pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))))
        np.testing.assert_array_equal(pixels, reference)

    browser.execute_script("window.scrollTo(0, 0)")
    screenshot = tmp_path / "serving_page.png"
    browser.save_screenshot(str(screenshot))
    assert Image.open(screenshot).size[0] >= 1000
    target = os.environ.get("DEPTH2IMG_DOCS_SCREENSHOT")
    if target:
        shutil.copyfile(screenshot, ROOT / target)


def test_web_page_shows_server_errors(server, browser):
    """A bad request shows the server's one-line error on the page (no silent failure)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server.url)
    browser.find_element(By.ID, "prompt").send_keys("x")
    browser.find_element(By.CSS_SELECTOR, "input[value=estimate]").click()
    browser.find_element(By.ID, "submit").click()  # estimate without an image: caught in the page
    error = browser.find_element(By.ID, "error")
    WebDriverWait(browser, 10).until(lambda d: error.is_displayed())
    assert "init image" in error.text
    steps = browser.find_element(By.ID, "num_inference_steps")
    steps.clear()
    steps.send_keys("100000")
    browser.find_element(By.CSS_SELECTOR, "input[value=upload]").click()
    browser.find_element(By.ID, "depth").send_keys(str(ROOT / "docs" / "demo_grid.png"))
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 30).until(lambda d: "limit" in error.text)
    assert "num_inference_steps" in error.text
