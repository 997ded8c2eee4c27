#!/usr/bin/env bash
# Install the distribution packages the tests need beyond Python, git and Node: bubblewrap (the agents' sandbox,
# tests/test_sandbox.py and every sandboxed engine test) and sqlite3 (the command line the workstream guide's users
# read `.state/orchestration.db` with, tests/test_workstream_compat.py), and headless Chromium with its WebDriver
# (/usr/bin/chromium, /usr/bin/chromedriver: the browser tests, tests/browser.py). Idempotent: does nothing when
# `bwrap` works and the rest is found. Uses apt-get as root (an update first, only when something is missing; no
# recommended packages, chromium's would bring a desktop's notification daemon); anywhere else it says what to
# install and fails.
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
if [[ ! -x /usr/bin/chromium ]]; then
    missing+=(chromium fonts-liberation) # the font: readable text in the tests' screenshots without recommends
    elsewhere+=(chromium)
fi
if [[ ! -x /usr/bin/chromedriver ]]; then
    missing+=(chromium-driver)
    elsewhere+=(chromedriver)
fi
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "install-system: installing ${missing[*]} (apt-get)..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq </dev/null >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
    works || die "bubblewrap was installed but cannot create a sandbox here"
    command -v sqlite3 >/dev/null 2>&1 || die "sqlite3 was installed but is not on PATH"
    [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]] || die "chromium and chromium-driver were installed but /usr/bin/chromium or /usr/bin/chromedriver is missing"
    echo "install-system: ok ($(bwrap --version), sqlite3 $(sqlite3 --version | cut -d' ' -f1), $(/usr/bin/chromium --version 2>/dev/null | head -1))" >&2
    exit 0
fi
die "missing: ${missing[*]}: install it (Debian/Ubuntu: sudo apt-get install ${missing[*]}; Fedora: sudo dnf install ${elsewhere[*]}; Arch: sudo pacman -S ${elsewhere[*]}; the browser tests expect /usr/bin/chromium and /usr/bin/chromedriver) and run make test again"
