#!/usr/bin/env bash
# Builds the Python messages app into a component that imports
# gcp:db-connector/connector (compose it with the connector to run it):
#   examples/python-messages/build.sh [OUT.wasm]   (default: ./python_messages.wasm)
# Needs Python 3 with pip and componentize-py (requirements-build.txt), on PATH
# or named by $COMPONENTIZE_PY; $PYTHON runs pip. Work files: $BUILD_DIR
# (default ./build), where the app's packages stay until requirements.txt changes.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=$(realpath -m "${1:-$here/python_messages.wasm}")
build=$(realpath -m "${BUILD_DIR:-$here/build}")
componentize=${COMPONENTIZE_PY:-componentize-py}
python=${PYTHON:-python3}

# The app's packages, for the CPython 3.14 inside the component (wheels only,
# checked against the hashes in requirements.txt).
packages=$build/site-packages
sum=$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)
if [ "$(cat "$packages/.requirements.sha256" 2>/dev/null)" != "$sum" ]; then
  rm -rf "$packages"
  "$python" -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps --require-hashes \
    --only-binary=:all: --platform any --platform manylinux2014_x86_64 \
    --python-version 3.14 --implementation cp --target "$packages" -r "$here/requirements.txt"
  # Native speed-ups cannot load in wasm; each package falls back to Python.
  find "$packages" -name '*.so' -delete
  echo "$sum" >"$packages/.requirements.sha256"
fi

# The app's own modules, alone on their path entry (the component holds every
# file under each one).
rm -rf "$build/app" "$build/wit"
mkdir -p "$build/app" "$build/wit/deps/gcp-db-connector"
cp "$here"/*.py "$build/app/"
# The WIT: this world, the connector's package and the WASI packages it uses.
cp "$here/wit/world.wit" "$build/wit/"
cp -r "$here/../../wit/deps/." "$build/wit/deps/"
cp "$here/../../wit/connector.wit" "$build/wit/deps/gcp-db-connector/"

"$componentize" -q -d "$build/wit" -w messages componentize app \
  -p "$build/app" -p "$packages" -o "$out"
echo "built $out"
