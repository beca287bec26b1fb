#!/usr/bin/env bash
# The cargo-fuzz targets of fuzz/ (PDU reader, data set check and parser, series reader), each for
# FUZZ_SECONDS (60 by default), from a seed corpus made afresh: a small phantom study in every
# transfer syntax pulmo writes, the real samples under ../shared/data/real (files under 1 MB),
# the hostile samples under ../shared/data/hostile (two files of each folder), and the PDUs in fuzz/seeds/pdu. A crash, a
# panic, a stack overflow, a leak or an allocation over 512 MB fails it (libFuzzer with
# AddressSanitizer), and the input that did it is left under fuzz/artifacts/.
# Part of `make test`; installs cargo-fuzz (pinned) into build/cargo.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/build"
secs=${FUZZ_SECONDS:-60}
cargo_fuzz="$build/cargo/bin/cargo-fuzz"
if ! "$cargo_fuzz" --version 2>/dev/null | grep -q '0\.13\.2'; then
  echo "fuzz: installing cargo-fuzz 0.13.2 into $build/cargo"
  cargo install --quiet --locked --root "$build/cargo" cargo-fuzz@0.13.2
fi

corpus="$build/fuzz-corpus"
rm -rf "$corpus"
mkdir -p "$corpus/pdu" "$corpus/dataset" "$corpus/series"
cp "$root"/fuzz/seeds/pdu/* "$corpus/pdu/"
pulmo="$root/target/release/pulmo"
[ -x "$pulmo" ] || cargo build --release --locked --manifest-path "$root/Cargo.toml"
for ts in implicit explicit deflated rle jpeg-ls; do
  "$pulmo" phantom --out "$corpus/phantom-$ts" --seed 7 --size small --transfer-syntax "$ts" >/dev/null
  # Three slices of each: the corpus is about structure, not about many alike images.
  find "$corpus/phantom-$ts/dicom" -name '*.dcm' | sort | sed -n '1,3p' |
    while read -r f; do cp "$f" "$corpus/series/$ts-$(basename "$f")"; done
done
shared="$root/../shared/data"
find "$shared/real" "$shared/hostile" -type f -size -1024k ! -name '*.md' ! -name '*.json' \
  ! -name '*.xml' ! -name '*.txt' ! -name '*.nrrd' | sort |
  awk '{ d = $0; sub(/\/[^\/]*$/, "", d); if (n[d]++ < 2) print }' |
  while read -r f; do cp "$f" "$corpus/series/$(echo "$f" | sha256sum | cut -c1-16).dcm"; done
cp "$corpus"/series/* "$corpus/dataset/"
rm -rf "$corpus"/phantom-*

cd "$root/fuzz"
# libFuzzer's instrumentation uses rustc flags that only nightly allows; the toolchain here is
# stable, and no other can be fetched.
export RUSTC_BOOTSTRAP=1
for target in pdu dataset series; do
  echo "fuzz: $target for ${secs} s"
  log="$build/fuzz-$target.log"
  status=0
  "$cargo_fuzz" run --release "$target" "$corpus/$target" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 \
    -print_final_stats=1 >"$log" 2>&1 || status=$?
  # What it covered: the last status line and the final stats.
  grep -E '^#[0-9]+[[:space:]]+(DONE|pulse)|^stat::(number_of_executed_units|peak_rss_mb)' "$log" | tail -n 3 || true
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$log" >&2
    echo "fuzz: $target failed (exit $status); the input is under fuzz/artifacts/$target" >&2
    exit 1
  fi
done
echo "fuzz: 3 targets, ${secs} s each, no failure"
