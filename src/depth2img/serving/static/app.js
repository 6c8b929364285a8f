// depth2img page: posts the form as multipart/form-data to /v1/generate and shows the answer.
// Plain browser JavaScript, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const form = $("generate-form");

function depthMode() {
  return form.querySelector("input[name=depth_mode]:checked").value;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function png(b64) {
  return "data:image/png;base64," + b64;
}

async function loadHealth() {
  try {
    const response = await fetch("/healthz");
    const health = await response.json();
    $("model-info").textContent = `model ${health.model} on ${health.device}`;
  } catch (err) {
    $("model-info").textContent = "server not reachable";
  }
}

// The multipart body: only fields the user filled in (the server uses its defaults otherwise).
function buildBody() {
  const body = new FormData();
  for (const name of ["prompt", "negative_prompt", "num_inference_steps", "guidance_scale",
                      "seed", "num_images", "strength"]) {
    const value = $(name).value.trim();
    if (value !== "") body.append(name, value);
  }
  const image = $("image").files[0];
  if (image) body.append("image", image);
  if (depthMode() === "upload") {
    const depth = $("depth").files[0];
    if (!depth) throw new Error("choose a depth map file, or pick 'Estimate it from the image'");
    body.append("depth", depth);
    body.append("depth_kind", $("depth_kind").value);
  } else if (!image) {
    throw new Error("choose an init image to estimate the depth from");
  }
  return body;
}

function showResult(result) {
  $("depth-preview").src = png(result.depth);
  $("depth-caption").textContent = `depth used (${result.depth_source}; near = white)`;
  $("depth-figure").hidden = false;
  $("inputs-heading").hidden = false;
  $("images-heading").hidden = false;
  const images = $("images");
  images.replaceChildren();
  result.images.forEach((b64, i) => {
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    img.src = png(b64);
    img.alt = `generated image, seed ${result.seeds[i]}`;
    img.className = "generated";
    const caption = document.createElement("figcaption");
    const link = document.createElement("a");
    link.href = img.src;
    link.download = `depth2img_seed${result.seeds[i]}.png`;
    link.textContent = `seed ${result.seeds[i]} · download`;
    caption.append(link);
    figure.append(img, caption);
    images.append(figure);
  });
  $("placeholder").hidden = true;
  const t = result.timings;
  $("timings").textContent =
    `${result.width}x${result.height} px · generated in ${t.generate_s.toFixed(2)} s ` +
    `(batch of ${t.batch_images} images) · queued ${t.queue_s.toFixed(2)} s · ` +
    `total ${t.total_s.toFixed(2)} s`;
  $("timings").hidden = false;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  showError("");
  let body;
  try {
    body = buildBody();
  } catch (err) {
    showError(err.message);
    return;
  }
  $("submit").disabled = true;
  $("status").textContent = "generating…";
  try {
    const response = await fetch("/v1/generate", { method: "POST", body });
    const result = await response.json();
    if (!response.ok) {
      const retry = response.headers.get("Retry-After");
      showError(result.error + (retry ? ` (retry in ${retry} s)` : ""));
      $("status").textContent = `HTTP ${response.status}`;
      return;
    }
    showResult(result);
    $("status").textContent = "done";
  } catch (err) {
    showError(`request failed: ${err.message}`);
    $("status").textContent = "";
  } finally {
    $("submit").disabled = false;
  }
});

$("image").addEventListener("change", () => {
  const file = $("image").files[0];
  $("input-figure").hidden = !file;
  if (file) $("input-preview").src = URL.createObjectURL(file);
});

for (const radio of form.querySelectorAll("input[name=depth_mode]")) {
  radio.addEventListener("change", () => {
    $("depth-upload").hidden = depthMode() !== "upload";
  });
}

$("strength").addEventListener("input", () => {
  $("strength-value").textContent = Number($("strength").value).toFixed(2);
});

loadHealth();
