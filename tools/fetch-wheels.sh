#!/usr/bin/env bash
# The wheelhouse the tests install from with `pip --no-index` (no network at test time): the wheels tools/wheels.txt
# pins (pytest and its dependencies, for the Python sample-project tests) and those tools/wheels-orchard.txt pins
# (orchard's runtime dependencies and build backend, for the install tests), downloaded once into .tools/wheels;
# skipped while both lists are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.tools/wheels
stamp="$dest/.stamp"
lists=(tools/wheels.txt tools/wheels-orchard.txt)
want="$(cat "${lists[@]}" | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    exit 0
fi
echo "fetch-wheels: downloading the wheels ${lists[*]} pin into $dest ..."
rm -rf "$dest"
mkdir -p "$dest"
requirements=()
for list in "${lists[@]}"; do
    requirements+=(-r "$list")
done
.venv/bin/python -m pip download --quiet --disable-pip-version-check --only-binary=:all: --no-deps \
    --dest "$dest" "${requirements[@]}" </dev/null
echo "$want" > "$stamp"
echo "fetch-wheels: ok ($(ls "$dest"/*.whl | wc -l) wheels)"
