#!/usr/bin/env bash
# Install the pinned aider (tools/aider/requirements.txt) into an isolated venv at .tools/aider/venv.
# Used by tests/test_real_aider.py. Idempotent: does nothing when the pinned version is already installed.
# The binary ends up at .tools/aider/venv/bin/aider. Needs Python 3.10-3.12 with the venv module (set AIDER_PYTHON to
# choose the interpreter) and access to the PyPI registry; about 690 MB on disk, 1-2 minutes.
set -euo pipefail

here="${BASH_SOURCE[0]%/*}"
[[ "$here" == "${BASH_SOURCE[0]}" ]] && here=.
root="$(cd "$here/.." && pwd)"
req="$root/tools/aider/requirements.txt"
dest="$root/.tools/aider"
venv="$dest/venv"
stamp="$dest/requirements.txt"  # the requirements the venv was last installed from

die() { echo "install-aider: $*" >&2; exit 1; }

[[ -f "$req" ]] || die "missing $req"
pinned="$(sed -n 's/^aider-chat==\([^[:space:];#]*\).*/\1/p' "$req")"
[[ -n "$pinned" ]] || die "$req must pin aider-chat==<version>"

installed() {
    "$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("aider-chat"))' 2>/dev/null || true
}

up_to_date() {
    [[ -x "$venv/bin/aider" ]] && cmp -s "$req" "$stamp" && [[ "$(installed)" == "$pinned" ]]
}

# The first interpreter aider supports (3.10-3.12) that can create venvs.
pick_python() {
    local candidate candidates=(python3.11 python3.12 python3.10 python3)
    [[ -n "${AIDER_PYTHON:-}" ]] && candidates=("$AIDER_PYTHON")
    for candidate in "${candidates[@]}"; do
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys, venv, ensurepip; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))' \
            >/dev/null 2>&1; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

mkdir -p "$dest"
if command -v flock >/dev/null 2>&1; then  # two `make` jobs must not pip install into the same venv at once
    exec 9>"$dest/.install.lock"
    flock 9
fi

if up_to_date; then
    exit 0
fi

started=$SECONDS
echo "install-aider: installing aider-chat==$pinned into .tools/aider/venv (pip, about 690 MB)..." >&2
if ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then  # missing or broken (e.g. its Python went away)
    if ! python="$(pick_python)"; then
        [[ -n "${AIDER_PYTHON:-}" ]] && die "AIDER_PYTHON=$AIDER_PYTHON is not a Python 3.10-3.12 with the venv module (aider-chat $pinned needs one)"
        die "no Python 3.10-3.12 with the venv module found on PATH (aider-chat $pinned needs one); set AIDER_PYTHON=/path/to/python3.11 and run tools/install-aider.sh again"
    fi
    rm -rf "$venv"
    if ! log="$("$python" -m venv "$venv" 2>&1)"; then
        echo "$log" >&2
        die "could not create the venv at $venv with $python"
    fi
fi
rm -f "$stamp"
if ! log="$("$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req" 2>&1)"; then
    echo "$log" | grep -v "^WARNING: Location '.*' is ignored" >&2 || true
    die "pip install -r tools/aider/requirements.txt failed in .tools/aider/venv (see the output above)"
fi

[[ -x "$venv/bin/aider" ]] || die "pip finished but $venv/bin/aider is missing"
version="$("$venv/bin/aider" --version 2>/dev/null | head -n1)" \
    || die "$venv/bin/aider --version failed; the install looks broken (remove .tools/aider and retry)"
[[ "$version" == "aider $pinned" ]] || die "installed '$version', expected 'aider $pinned'"
cp "$req" "$stamp"
echo "install-aider: ok (aider $pinned, $(du -sh "$venv" 2>/dev/null | cut -f1), $((SECONDS - started)) s)" >&2
