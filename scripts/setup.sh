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
