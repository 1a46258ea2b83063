#!/usr/bin/env bash
# A local S3 server for trying the CLI: moto on loopback.
#   scripts/moto.sh start PORT [BUCKET...]   starts moto on 127.0.0.1:PORT (installing it
#                                            into .venv first if it is not there) and
#                                            makes the buckets
#   scripts/moto.sh stop PORT                stops it
# moto keeps everything in memory and accepts any keys.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=${1:?usage: scripts/moto.sh start PORT [BUCKET...] | stop PORT}
port=${2:?a port}
pidfile=".moto-$port.pid"
case "$cmd" in
start)
  moto=$(command -v moto_server || true)
  if [ -z "$moto" ]; then
    if [ ! -x .venv/bin/moto_server ]; then
      echo "scripts/moto.sh: installing moto[server] into .venv" >&2
      python3 -m venv .venv
      .venv/bin/pip install --quiet --disable-pip-version-check 'moto[server]'
    fi
    moto=.venv/bin/moto_server
  fi
  "$moto" -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" && break
    sleep 0.1
  done
  curl -s -o /dev/null "http://127.0.0.1:$port/" || { echo "moto did not start on port $port" >&2; exit 1; }
  shift 2
  for bucket in "$@"; do
    curl -s -f -o /dev/null -X PUT "http://127.0.0.1:$port/$bucket"
  done
  echo "moto on http://127.0.0.1:$port${*:+ with bucket(s) $*}"
  ;;
stop)
  [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  rm -f "$pidfile"
  ;;
*)
  echo "usage: scripts/moto.sh start PORT [BUCKET...] | stop PORT" >&2
  exit 2
  ;;
esac
