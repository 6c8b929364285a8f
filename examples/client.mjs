// depth2img-serve from JavaScript (Node >= 18: built-in fetch, no packages needed).
// usage: node examples/client.mjs DEPTH_FILE OUT_DIR [PROMPT]
// The server: DEPTH2IMG_URL (default http://127.0.0.1:8000).
import { readFile, writeFile, mkdir } from "node:fs/promises";

const [depthFile, outDir = "results", prompt = "a street at night"] = process.argv.slice(2);
const url = process.env.DEPTH2IMG_URL ?? "http://127.0.0.1:8000";

const request = {
  prompt,
  depth: (await readFile(depthFile)).toString("base64"),
  depth_kind: "inverse",
  num_inference_steps: 20,
  guidance_scale: 7.5,
  seed: 0,
  num_images: 2,
};

const response = await fetch(`${url}/v1/generate`, {
  method: "POST",
  headers: { "Content-Type": "application/json" },
  body: JSON.stringify(request),
});
const answer = await response.json();
if (!response.ok) {
  const retry = response.headers.get("Retry-After");
  console.error(`error ${response.status}: ${answer.error}` + (retry ? ` (retry in ${retry} s)` : ""));
  process.exit(1);
}

await mkdir(outDir, { recursive: true });
for (const [i, image] of answer.images.entries()) {
  await writeFile(`${outDir}/seed${answer.seeds[i]}.png`, Buffer.from(image, "base64"));
}
console.log(`wrote ${answer.images.length} images to ${outDir} (seeds ${answer.seeds.join(", ")})`);
