#!/usr/bin/env bash
# Installs what `make demo` and `make test` need, idempotently: Debian packages (when missing and
# running as root) and a Python venv under build/ with the pinned validators.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/build"

need=()
command -v dcmdump >/dev/null 2>&1 || need+=(dcmtk)
command -v dciodvfy >/dev/null 2>&1 || need+=(dicom3tools)
command -v cmake >/dev/null 2>&1 || need+=(cmake)   # builds CharLS (JPEG-LS) for dicom-rs
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if ((${#need[@]})); then
  if [ "$(id -u)" -eq 0 ]; then
    echo "setup: installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup: missing ${need[*]}; install them with: sudo apt-get install ${need[*]}" >&2
    exit 1
  fi
fi

venv="$build/venv"
stamp="$venv/.installed-$(sha256sum "$root/scripts/requirements.txt" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: creating the Python venv in $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/scripts/requirements.txt"
  touch "$stamp"
fi

# dcmjs (the parser OHIF uses), pinned, in build/node.
node_dir="$build/node"
if [ ! -f "$node_dir/node_modules/dcmjs/package.json" ] || \
   ! grep -q '"version": "0.52.2"' "$node_dir/node_modules/dcmjs/package.json"; then
  command -v npm >/dev/null 2>&1 || { echo "setup: npm is missing (apt-get install nodejs npm)" >&2; exit 1; }
  echo "setup: installing dcmjs 0.52.2 in $node_dir"
  mkdir -p "$node_dir"
  npm install --silent --no-audit --no-fund --prefix "$node_dir" dcmjs@0.52.2 >/dev/null
fi
