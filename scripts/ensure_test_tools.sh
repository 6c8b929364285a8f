#!/usr/bin/env bash
# Install the OS tools the serving tests drive: curl, Node.js >= 18 (examples/client.mjs) and
# Chromium + chromedriver (the headless-browser test of the page). `make test` runs this.
#
#   bash scripts/ensure_test_tools.sh     # apt-get installs what is missing (needs root/sudo)
#
# Environment:
#   DEPTH2IMG_TEST_TOOLS_OPTIONAL=1    if a tool cannot be installed, print a loud warning and
#                                      exit 0 (those tests then skip with the reason); default:
#                                      exit 1
#   DEPTH2IMG_TEST_TOOLS_NO_INSTALL=1  never call apt-get; only report what is missing
set -euo pipefail

log() { echo "[ensure_test_tools] $*" >&2; }

fail() {
    echo "[ensure_test_tools] ERROR: $*" >&2
    if [[ "${DEPTH2IMG_TEST_TOOLS_OPTIONAL:-0}" == 1 ]]; then
        echo "################################################################" >&2
        echo "# WARNING: serving test tools missing; the client/browser tests #" >&2
        echo "# will be SKIPPED (DEPTH2IMG_TEST_TOOLS_OPTIONAL=1).            #" >&2
        echo "################################################################" >&2
        exit 0
    fi
    echo "[ensure_test_tools] (set DEPTH2IMG_TEST_TOOLS_OPTIONAL=1 to continue without them)" >&2
    exit 1
}

node_ok() {
    local node major
    node="$(command -v node || command -v nodejs || true)"
    [[ -n "$node" ]] || return 1
    major="$("$node" --version 2>/dev/null | sed -E 's/^v([0-9]+).*/\1/')"
    [[ "$major" =~ ^[0-9]+$ ]] && ((major >= 18))
}

missing_packages() {
    local missing=()
    command -v curl >/dev/null || missing+=(curl)
    node_ok || missing+=(nodejs)
    [[ -x /usr/bin/chromium ]] || missing+=(chromium)
    [[ -x /usr/bin/chromedriver ]] || missing+=(chromium-driver)
    echo "${missing[@]}"
}

missing="$(missing_packages)"
if [[ -z "$missing" ]]; then
    log "curl, node $(node --version), chromium and chromedriver are present"
    exit 0
fi
[[ "${DEPTH2IMG_TEST_TOOLS_NO_INSTALL:-0}" == 1 ]] &&
    fail "missing: $missing (DEPTH2IMG_TEST_TOOLS_NO_INSTALL=1); apt-get install $missing"
command -v apt-get >/dev/null || fail "missing: $missing and no apt-get; install them yourself"
SUDO=""
if [[ "$(id -u)" != 0 ]]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        fail "missing: $missing; installing needs root: sudo apt-get install $missing"
    fi
fi
log "installing $missing with apt-get (once) ..."
apt_log="$(mktemp -t depth2img-apt.XXXXXX.log)"
$SUDO apt-get update -qq >"$apt_log" 2>&1 || fail "apt-get update failed (no network?), see $apt_log"
# shellcheck disable=SC2086  # $missing is a list of package names
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing \
    >>"$apt_log" 2>&1 || fail "apt-get install $missing failed, see $apt_log"
still="$(missing_packages)"
[[ -z "$still" ]] || fail "still missing after apt-get install: $still (see $apt_log)"
log "installed: $missing"
