#!/usr/bin/env bash
# Runs the README's worked example exactly as written: the first ```sh block after the
# "worked example" marker, in the repository's root, with bash -e (a failing line fails).
set -euo pipefail
cd "$(dirname "$0")/.."
block=$(awk '/<!-- worked example/{m=1; next} m && /^```sh/{f=1; next} f && /^```/{exit} f' README.md)
[ -n "$block" ] || { echo "readme-example.sh: no worked example block in README.md" >&2; exit 1; }
printf '%s\n' "$block"
echo "----"
bash -euo pipefail -c "$block"
