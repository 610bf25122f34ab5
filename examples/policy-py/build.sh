#!/usr/bin/env sh
# Builds dist/policy.wasm: a virtualenv in .venv (first run only) with the
# pinned componentize-py, then the component, WASI stubbed (it imports nothing).
# Usage: ./build.sh   (needs python3 with venv; Debian: apt-get install python3-venv)
set -eu
cd "$(dirname "$0")"
if [ ! -x .venv/bin/componentize-py ]; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
fi
mkdir -p dist
.venv/bin/componentize-py --quiet --wit-path wit --world policy \
  componentize app --python-path src --stub-wasi --output dist/policy.wasm
echo "wrote $(pwd)/dist/policy.wasm"
