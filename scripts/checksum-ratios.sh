#!/usr/bin/env bash
# What checksums keep of each case's speed (off / on, 1.00 = free), measured call
# against call in one run: `benches/checksum_ratios.rs`. S3 cases use the server
# BLOCKSTORE_S3_ENDPOINT names (e.g. RGW from scripts/rgw.sh), else moto.
# Usage: scripts/checksum-ratios.sh [FILTER]   (BLOCKSTORE_RATIO_SECS per case, 20;
# BLOCKSTORE_RATIO_CHUNK_KIB the filesystem's checksum_chunk_kib, 8; TMPDIR where the
# filesystem cases run, e.g. an XFS mount)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench checksum_ratios -- "${1:-}"
