#!/usr/bin/env bash
# The cost of instrumentation when nobody listens: the memory store's 4 KiB read (the
# cheapest call there is) built with no features, with `tracing` (no subscriber), and
# with `tracing` + `metrics` (no recorder), in one run; prints the medians and ratios.
# Extra arguments go to criterion (e.g. --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
run() { cargo bench -q --bench overhead --no-default-features "${@:2}" -- memory_4KiB/read --save-baseline "$1" $EXTRA >/dev/null; }
EXTRA="$*"
run plain
run traced --features tracing
run metered --features tracing,metrics
python3 - "${CARGO_TARGET_DIR:-target}/criterion/memory_4KiB/read" <<'PY'
import json, sys
d = sys.argv[1]
m = {b: json.load(open(f"{d}/{b}/estimates.json"))["median"]["point_estimate"]
     for b in ("plain", "traced", "metered")}
print(f"memory 4 KiB read, median of each build:")
print(f"  no features                    {m['plain']:8.1f} ns")
print(f"  tracing, no subscriber         {m['traced']:8.1f} ns  {m['traced'] / m['plain']:.3f}x")
print(f"  tracing + metrics, no recorder {m['metered']:8.1f} ns  {m['metered'] / m['plain']:.3f}x")
PY
