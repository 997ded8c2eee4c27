#!/usr/bin/env bash
# Install the pinned agent CLIs (tools/agents/package.json + package-lock.json) into .tools/agents/node_modules.
# Used by tests/test_real_agents_smoke.py. Idempotent: does nothing when the installed versions already match.
# Binaries end up at .tools/agents/node_modules/.bin/{claude,codex}. Needs Node.js with npm; about 770 MB on disk.
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

# Prints "name@version" for every pinned dependency whose installed version differs (nothing when all match).
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
        }' "$src" "$dest"
}

up_to_date() {
    [[ -z "$(stale)" && -x "$bin/claude" && -x "$bin/codex" ]] && cmp -s "$src/package-lock.json" "$dest/package-lock.json"
}

mkdir -p "$dest"
if command -v flock >/dev/null 2>&1; then  # two `make` jobs must not run npm ci into the same folder at once
    exec 9>"$dest/.install.lock"
    flock 9
fi

if up_to_date; then
    exit 0
fi

echo "install-agents: installing $(stale | tr '\n' ' ')into .tools/agents (npm ci, about 770 MB)..." >&2
cp "$src/package.json" "$src/package-lock.json" "$dest/"
if ! log="$(cd "$dest" && npm ci --no-audit --no-fund --loglevel=error 2>&1)"; then
    echo "$log" >&2
    die "npm ci failed in .tools/agents (see the output above)"
fi

for tool in claude codex; do
    [[ -x "$bin/$tool" ]] || die "npm ci finished but $bin/$tool is missing"
    "$bin/$tool" --version >/dev/null 2>&1 || die "$bin/$tool --version failed; the install looks broken (remove .tools/agents and retry)"
done
[[ -z "$(stale)" ]] || die "installed versions do not match tools/agents/package.json: $(stale | tr '\n' ' ')"
echo "install-agents: ok ($("$bin/claude" --version 2>/dev/null | head -n1); codex $("$bin/codex" --version 2>/dev/null | head -n1))" >&2
