#!/usr/bin/env bash
# depth2img-serve from Bash: upload a depth map (multipart), get the PNG back.
# usage: examples/client.sh DEPTH_FILE OUT.png [PROMPT]
# The server: DEPTH2IMG_URL (default http://127.0.0.1:8000).
set -euo pipefail
url="${DEPTH2IMG_URL:-http://127.0.0.1:8000}"
curl --fail-with-body --silent --show-error "$url/v1/generate" \
    -H "Accept: image/png" \
    -F "prompt=${3:-a street at night}" \
    -F "depth=@$1" \
    -F "depth_kind=inverse" \
    -F "seed=0" \
    -F "num_inference_steps=20" \
    -D "$2.headers" \
    -o "$2"
echo "wrote $2 (seed $(grep -i '^x-seed:' "$2.headers" | tr -d '\r' | cut -d' ' -f2))"
rm -f "$2.headers"
