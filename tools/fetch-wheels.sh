#!/usr/bin/env bash
# The wheelhouse the Python sample-project tests install from with `pip --no-index` (no network at test time):
# the wheels tools/wheels.txt pins, downloaded once into .tools/wheels; skipped while that list is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.tools/wheels
stamp="$dest/.stamp"
want="$(sha256sum tools/wheels.txt | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    exit 0
fi
echo "fetch-wheels: downloading the wheels tools/wheels.txt pins into $dest ..."
rm -rf "$dest"
mkdir -p "$dest"
.venv/bin/python -m pip download --quiet --disable-pip-version-check --only-binary=:all: --no-deps \
    --dest "$dest" -r tools/wheels.txt
echo "$want" > "$stamp"
echo "fetch-wheels: ok ($(ls "$dest"/*.whl | wc -l) wheels)"
