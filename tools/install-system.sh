#!/usr/bin/env bash
# Install the distribution packages the tests need beyond Python, git and Node: bubblewrap (the agents' sandbox,
# tests/test_sandbox.py and every sandboxed engine test). Idempotent: does nothing when `bwrap` works already. Uses
# apt-get as root (after an update); anywhere else it says what to install and fails.
set -euo pipefail

die() { echo "install-system: $*" >&2; exit 1; }

works() { command -v bwrap >/dev/null 2>&1 && bwrap --ro-bind / / --dev /dev --proc /proc --unshare-pid --die-with-parent -- /bin/true >/dev/null 2>&1; }

if works; then
    exit 0
fi
if command -v bwrap >/dev/null 2>&1; then
    die "bwrap is installed but cannot create a sandbox here ($(bwrap --ro-bind / / --unshare-pid -- /bin/true 2>&1 | head -1)); the sandbox needs unprivileged user namespaces or root"
fi
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "install-system: installing bubblewrap (apt-get)..." >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
    works || die "bubblewrap was installed but cannot create a sandbox here"
    echo "install-system: ok ($(bwrap --version))" >&2
    exit 0
fi
die "bubblewrap is missing: install it (Debian/Ubuntu: sudo apt-get install bubblewrap; Fedora: sudo dnf install bubblewrap; Arch: sudo pacman -S bubblewrap) and run make test again"
