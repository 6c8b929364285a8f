"""depth2img-serve from Python: JSON request with base64 files, images written as PNG.

usage: python examples/client.py --depth scene_depth.png [--image scene.jpg] --out results/
The server: --url (default http://127.0.0.1:8000).
"""

import argparse
import base64
import pathlib

import requests


def b64(path):
    return base64.b64encode(pathlib.Path(path).read_bytes()).decode("ascii")


parser = argparse.ArgumentParser()
parser.add_argument("--url", default="http://127.0.0.1:8000")
parser.add_argument("--prompt", default="a street at night")
parser.add_argument("--depth", help="depth map: 16/8-bit gray PNG, .npy or TIFF")
parser.add_argument("--image", help="init image (depth is estimated from it without --depth)")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--num-images", type=int, default=1)
parser.add_argument("--out", default="results")
args = parser.parse_args()

request = {
    "prompt": args.prompt,
    "negative_prompt": "blurry",
    "num_inference_steps": 20,
    "guidance_scale": 7.5,
    "seed": args.seed,
    "num_images": args.num_images,
    "strength": 0.8,
}
if args.depth:
    request["depth"] = b64(args.depth)
    request["depth_kind"] = "inverse"  # near is high; "depth" for distances
if args.image:
    request["image"] = b64(args.image)

response = requests.post(f"{args.url}/v1/generate", json=request, timeout=600)
if response.status_code == 503:
    raise SystemExit(f"busy, retry in {response.headers['Retry-After']} s")
if not response.ok:
    raise SystemExit(f"error {response.status_code}: {response.json()['error']}")
answer = response.json()

out = pathlib.Path(args.out)
out.mkdir(parents=True, exist_ok=True)
for seed, image in zip(answer["seeds"], answer["images"]):
    (out / f"seed{seed}.png").write_bytes(base64.b64decode(image))
(out / "depth_used.png").write_bytes(base64.b64decode(answer["depth"]))
print(f"wrote {len(answer['images'])} images to {out}, timings {answer['timings']}")
