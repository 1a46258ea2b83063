#!/usr/bin/env bash
# Prints what checksums keep of each case's speed (time off / time on, 1.00 = free),
# from the medians of the last `cargo bench --bench checksums` run.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - <<'PY'
import json, pathlib
root = pathlib.Path("target/criterion")
for group in sorted(root.glob("checksums_*")):
    def mean(mode):
        f = group / mode / "new" / "estimates.json"
        return json.loads(f.read_text())["median"]["point_estimate"] if f.exists() else None
    on, off = mean("crc32c"), mean("off")
    if on and off:
        print(f"{group.name:40} on {on/1e3:10.1f} µs  off {off/1e3:10.1f} µs  off/on {off/on:5.2f}")
PY
