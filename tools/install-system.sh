#!/usr/bin/env bash
# Install the distribution packages the tests need beyond Python, git and Node: bubblewrap (the agents' sandbox,
# tests/test_sandbox.py and every sandboxed engine test) and sqlite3 (the command line the workstream guide's users
# read `.state/orchestration.db` with, tests/test_workstream_compat.py). Idempotent: does nothing when `bwrap` works
# and `sqlite3` is found. Uses apt-get as root (after an update); anywhere else it says what to install and fails.
set -euo pipefail

die() { echo "install-system: $*" >&2; exit 1; }

works() { command -v bwrap >/dev/null 2>&1 && bwrap --ro-bind / / --dev /dev --proc /proc --unshare-pid --die-with-parent -- /bin/true >/dev/null 2>&1; }

missing=()   # Debian package names
elsewhere=() # Fedora's and Arch's
if ! works; then
    if command -v bwrap >/dev/null 2>&1; then
        die "bwrap is installed but cannot create a sandbox here ($(bwrap --ro-bind / / --unshare-pid -- /bin/true 2>&1 | head -1)); the sandbox needs unprivileged user namespaces or root"
    fi
    missing+=(bubblewrap)
    elsewhere+=(bubblewrap)
fi
if ! command -v sqlite3 >/dev/null 2>&1; then
    missing+=(sqlite3)
    elsewhere+=(sqlite)
fi
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "install-system: installing ${missing[*]} (apt-get)..." >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    works || die "bubblewrap was installed but cannot create a sandbox here"
    command -v sqlite3 >/dev/null 2>&1 || die "sqlite3 was installed but is not on PATH"
    echo "install-system: ok ($(bwrap --version), sqlite3 $(sqlite3 --version | cut -d' ' -f1))" >&2
    exit 0
fi
die "missing: ${missing[*]}: install it (Debian/Ubuntu: sudo apt-get install ${missing[*]}; Fedora: sudo dnf install ${elsewhere[*]}; Arch: sudo pacman -S ${elsewhere[*]}) and run make test again"
