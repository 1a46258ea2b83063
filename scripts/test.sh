#!/usr/bin/env bash
# The test command: installs what the tests need when it is not there yet (moto, the S3
# tests' default server, into .venv; as root on Debian, the tools of the mount tests),
# then runs every test of the workspace with cargo. Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
# The filesystem tests loop-mount ext4, xfs and btrfs and trace one test with strace:
# as root on Debian, fetch what is missing (other machines: set BLOCKSTORE_NO_MOUNT=1).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && [ -z "${BLOCKSTORE_NO_MOUNT:-}" ]; then
  if ! command -v strace >/dev/null || ! command -v mkfs.ext4 >/dev/null \
    || ! command -v mkfs.xfs >/dev/null || ! command -v mkfs.btrfs >/dev/null; then
    echo "scripts/test.sh: installing strace, e2fsprogs, xfsprogs, btrfs-progs for the filesystem tests"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq strace e2fsprogs xfsprogs btrfs-progs >/dev/null
  fi
fi
if ! command -v moto_server >/dev/null 2>&1 && [ ! -x .venv/bin/moto_server ]; then
  echo "scripts/test.sh: installing moto[server] into .venv for the S3 tests"
  if ! python3 -m venv .venv 2>/dev/null; then
    # Debian's system Python keeps venv in a separate package.
    rm -rf .venv
    if command -v apt-get >/dev/null 2>&1; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
    python3 -m venv .venv
  fi
  .venv/bin/pip install --quiet --disable-pip-version-check 'moto[server]'
fi
# Features beyond the defaults that have tests of their own: metrics (the library's
# counters and the Prometheus example), fuse (the blockfs example's end-to-end test
# mounts it: root and /dev/fuse needed).
exec cargo test --features blockstore/metrics,blockstore-examples/metrics,blockstore-examples/fuse "$@"
