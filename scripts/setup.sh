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
# The viewer test: Orthanc with DICOMweb as the PACS, Chromium for OHIF.
[ -x /usr/sbin/Orthanc ] || need+=(orthanc)
[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || need+=(orthanc-dicomweb)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs npm)
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

# npm packages, pinned, in build/node: dcmjs (the parser OHIF uses) and playwright-core (drives
# Debian's Chromium; its own browser download is never used).
node_dir="$build/node"
for pkg in dcmjs@0.52.2 playwright-core@1.64.1; do
  name=${pkg%@*}
  version=${pkg##*@}
  if ! grep -qs "\"version\": \"$version\"" "$node_dir/node_modules/$name/package.json"; then
    echo "setup: installing $pkg in $node_dir"
    mkdir -p "$node_dir"
    npm install --silent --no-audit --no-fund --prefix "$node_dir" "$pkg" >/dev/null
  fi
done

# The OHIF viewer build (@ohif/app ships dist/), unpacked in build/ohif, never committed.
ohif="$build/ohif"
if ! grep -qs '"version": "3.13.2"' "$ohif/package/package.json"; then
  echo "setup: downloading @ohif/app 3.13.2 into $ohif"
  rm -rf "$ohif"
  mkdir -p "$ohif"
  (cd "$ohif" && npm pack --silent @ohif/app@3.13.2 >/dev/null && tar xzf ohif-app-3.13.2.tgz && rm ohif-app-3.13.2.tgz)
fi
