#!/usr/bin/env bash
# Install the Debian tools the independent checks need (DESIGN.md, "Independent checks"):
# pdfsig and pdftoppm (poppler-utils), qpdf, zbarimg (zbar-tools), certutil (libnss3-tools),
# chromium for the browser tests (Playwright drives /usr/bin/chromium), and softhsm2, the
# PKCS#11 token the key-handling tests keep a stamping key on.
# Silent and quick when everything is present; never prompts (CI, no terminal).
set -euo pipefail

readonly COMMANDS=(pdfsig pdftoppm qpdf zbarimg certutil chromium softhsm2-util)
readonly PACKAGES=(poppler-utils qpdf zbar-tools libnss3-tools chromium softhsm2)

missing_commands() {
    local command_name
    for command_name in "${COMMANDS[@]}"; do
        command -v "$command_name" >/dev/null 2>&1 || printf '%s ' "$command_name"
    done
}

missing="$(missing_commands)"
if [[ -z "$missing" ]]; then
    exit 0
fi

fail() {
    echo "ensure-system-deps: $*" >&2
    echo "ensure-system-deps: install them yourself with:" \
        "apt-get install -y ${PACKAGES[*]}" >&2
    exit 1
}

echo "ensure-system-deps: missing ${missing% }; installing ${PACKAGES[*]}" >&2

command -v apt-get >/dev/null 2>&1 || fail "apt-get not found (not Debian/Ubuntu?)."

as_root=()
if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || fail "not root and sudo is not installed."
    # -n: fail instead of prompting for a password when there is no terminal.
    as_root=(sudo -n)
fi

# A concurrent apt run (another terminal, an image build) holds the dpkg lock; wait for it
# instead of failing at once.
apt_options=(-q -y -o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0)

"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get "${apt_options[@]}" update </dev/null >&2 \
    || fail "apt-get update failed."
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get "${apt_options[@]}" install --no-install-recommends "${PACKAGES[@]}" </dev/null >&2 \
    || fail "apt-get install failed."

missing="$(missing_commands)"
if [[ -n "$missing" ]]; then
    fail "still missing after install: ${missing% } (is /usr/bin on PATH?)."
fi
