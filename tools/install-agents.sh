#!/usr/bin/env bash
# Install the pinned agent CLIs (tools/agents/package.json + package-lock.json) into .tools/agents/node_modules.
# Used by tests/test_real_agents_*.py and tests/test_real_gemini.py. Idempotent: does nothing when the installed
# versions already match. Binaries end up at .tools/agents/node_modules/.bin/{claude,codex,gemini}. Needs Node.js 20+
# with npm; about 870 MB on disk. Install scripts stay blocked except claude's (allowScripts in package.json): gemini's
# optional keytar / node-pty ship prebuilt binaries and headless runs need neither.
set -euo pipefail

here="${BASH_SOURCE[0]%/*}"
[[ "$here" == "${BASH_SOURCE[0]}" ]] && here=.
root="$(cd "$here/.." && pwd)"
src="$root/tools/agents"
dest="$root/.tools/agents"
bin="$dest/node_modules/.bin"

die() { echo "install-agents: $*" >&2; exit 1; }

command -v npm >/dev/null 2>&1 || die "npm not found on PATH; install Node.js (20 or newer, with npm) and run tools/install-agents.sh again"
command -v node >/dev/null 2>&1 || die "node not found on PATH; install Node.js (20 or newer) and run tools/install-agents.sh again"
[[ -f "$src/package.json" && -f "$src/package-lock.json" ]] || die "missing $src/package.json or package-lock.json"

# Prints "name@version" for every pinned dependency whose installed version in $1 (default: $dest) differs.
stale() {
    node -e '
        const fs = require("fs"), path = require("path");
        const [src, dest] = process.argv.slice(1);
        const wanted = JSON.parse(fs.readFileSync(path.join(src, "package.json"), "utf8")).dependencies;
        for (const [name, version] of Object.entries(wanted)) {
            let have = null;
            try { have = JSON.parse(fs.readFileSync(path.join(dest, "node_modules", name, "package.json"), "utf8")).version; }
            catch (e) { have = null; }
            if (have !== version) console.log(`${name}@${version}`);
        }' "$src" "${1:-$dest}"
}

up_to_date() {
    [[ -z "$(stale)" && -x "$bin/claude" && -x "$bin/codex" && -x "$bin/gemini" ]] && cmp -s "$src/package-lock.json" "$dest/package-lock.json"
}

# `tool --version` from $2 (a node_modules/.bin); gemini writes under ~/.gemini even for --version, so it gets a
# scratch home (and no self-relaunch).
version() {
    GEMINI_CLI_HOME="$check_home" GEMINI_CLI_NO_RELAUNCH=true "$2/$1" --version 2>/dev/null
}

mkdir -p "$dest"
if command -v flock >/dev/null 2>&1; then  # two `make` jobs must not run npm ci into the same folder at once
    exec 9>"$dest/.install.lock"
    flock 9
fi

if up_to_date; then
    exit 0
fi

# npm ci into a staging folder, check it, then swap it in: the CLIs already installed keep working meanwhile (other
# test runs may be using them) and a failed install leaves the previous one untouched.
stage="$dest/.staging"
check_home="$(mktemp -d)"
trap 'rm -rf "$check_home" "$stage" "$dest/node_modules.old"' EXIT
rm -rf "$stage" "$dest/node_modules.old"
mkdir -p "$stage"
echo "install-agents: installing $(stale | tr '\n' ' ')into .tools/agents (npm ci, about 870 MB)..." >&2
cp "$src/package.json" "$src/package-lock.json" "$stage/"
if ! log="$(cd "$stage" && npm ci --no-audit --no-fund --loglevel=error 2>&1)"; then
    echo "$log" >&2
    die "npm ci failed in .tools/agents (see the output above); the previous install is unchanged"
fi
for tool in claude codex gemini; do
    [[ -x "$stage/node_modules/.bin/$tool" ]] || die "npm ci finished but node_modules/.bin/$tool is missing"
    version "$tool" "$stage/node_modules/.bin" >/dev/null || die "$tool --version failed after npm ci; the install looks broken"
done
[[ -z "$(stale "$stage")" ]] || die "npm ci installed versions other than tools/agents/package.json: $(stale "$stage" | tr '\n' ' ')"

rm -f "$dest/package-lock.json"  # until the swap is complete the install counts as stale
if [[ -d "$dest/node_modules" ]]; then
    mv "$dest/node_modules" "$dest/node_modules.old"
fi
mv "$stage/node_modules" "$dest/node_modules"
cp "$stage/package.json" "$dest/package.json"
cp "$stage/package-lock.json" "$dest/package-lock.json"
up_to_date || die "the installed CLIs do not match tools/agents after the swap (remove .tools/agents and retry)"
echo "install-agents: ok ($(version claude "$bin" | head -n1); codex $(version codex "$bin" | head -n1);" \
     "gemini $(version gemini "$bin" | head -n1))" >&2
