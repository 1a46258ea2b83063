#!/usr/bin/env bash
# A throw-away one-node Ceph cluster with radosgw on loopback, for the S3 tests and
# benchmarks: one monitor, one OSD on memstore (data in RAM, capped by MEMSTORE_BYTES),
# radosgw with the beast frontend (tcp_nodelay on: small replies would otherwise stall
# ~40 ms on delayed ACKs). Credentials: test / testtesttest. No authentication between
# the daemons, which needs the "crc secure" messenger modes below.
#
#   scripts/rgw.sh start DIR [PORT]   # default port 7480; prints the endpoint
#   scripts/rgw.sh stop DIR
#   scripts/rgw.sh install            # apt packages: radosgw ceph-mon ceph-osd
set -euo pipefail

install() {
  if ! command -v radosgw >/dev/null || ! command -v ceph-mon >/dev/null || ! command -v ceph-osd >/dev/null || ! command -v curl >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends radosgw ceph-mon ceph-osd curl >/dev/null
  fi
}

stop() {
  local dir=$1
  for d in rgw osd mon; do
    [ -f "$dir/$d.pid" ] && kill "$(cat "$dir/$d.pid")" 2>/dev/null || true
  done
  for d in rgw osd mon; do
    if [ -f "$dir/$d.pid" ]; then
      pid=$(cat "$dir/$d.pid")
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$dir/$d.pid"
    fi
  done
}

start() {
  local dir port monport fsid conf
  dir=$(realpath -m "$1"); port=${2:-7480}; monport=${MONPORT:-$((port + 1))}
  stop "$dir"
  rm -rf "$dir"; mkdir -p "$dir"/{mon/ceph-a,osd,rgw,run,log}
  fsid=$(cat /proc/sys/kernel/random/uuid)
  conf="$dir/ceph.conf"
  cat > "$conf" <<CONF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$monport
mon initial members = a
public network = 127.0.0.0/8
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc secure
ms client mode = crc secure
ms mon service mode = crc secure
ms service mode = crc secure
ms cluster mode = crc secure
ms mon cluster mode = crc secure
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 1
# A CI machine's disk may be fuller than the monitor's 5 % default allows.
mon data avail crit = 0
run dir = $dir/run
log file = $dir/log/\$name.log
admin socket = $dir/run/\$name.asok
ms bind ipv6 = false
[mon]
mon data = $dir/mon/\$cluster-\$id
[osd]
osd data = $dir/osd/\$cluster-\$id
osd objectstore = memstore
memstore device bytes = ${MEMSTORE_BYTES:-4294967296}
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:$port tcp_nodelay=1
rgw data = $dir/rgw
# Server-side encryption on plain loopback HTTP, with the test KMS (keys for tests
# only): SSE-C, and SSE-KMS with key id testkey-1.
rgw crypt require ssl = false
rgw crypt s3 kms backend = testing
rgw crypt s3 kms encryption keys = testkey-1=YmxvY2tzdG9yZSB0ZXN0IGttcyBrZXkgb25lIDMyYiE= testkey-2=YmxvY2tzdG9yZSB0ZXN0IGttcyBrZXkgdHdvIDMyYiE=
# Virtual-hosted addressing: BUCKET.localhost:PORT.
rgw dns name = localhost
CONF
  local c=(-c "$conf")
  # Several steps below are quiet on success; if one fails, say which and show the logs.
  trap 'echo "rgw.sh: start failed at line $LINENO; logs in $dir/log" >&2;
        tail -n 15 "$dir"/log/*.out "$dir"/log/*.log 2>/dev/null >&2; df -h "$dir" >&2' ERR
  monmaptool --create --addv a "[v2:127.0.0.1:$monport]" --fsid "$fsid" "$dir/monmap" >/dev/null
  ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-mon "${c[@]}" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/mon.keyring"
  ceph-mon "${c[@]}" -i a -f >"$dir/log/mon.out" 2>&1 & echo $! >"$dir/mon.pid"
  local osd
  osd=$(timeout 60 ceph "${c[@]}" osd create)
  mkdir -p "$dir/osd/ceph-$osd"
  ceph-osd "${c[@]}" -i "$osd" --mkfs >/dev/null 2>&1
  timeout 30 ceph "${c[@]}" osd crush add "osd.$osd" 1.0 host=localhost >/dev/null 2>&1
  timeout 30 ceph "${c[@]}" osd crush move localhost root=default >/dev/null 2>&1
  ceph-osd "${c[@]}" -i "$osd" -f >"$dir/log/osd.out" 2>&1 & echo $! >"$dir/osd.pid"
  radosgw "${c[@]}" -n client.rgw -f >"$dir/log/rgw.out" 2>&1 & echo $! >"$dir/rgw.pid"
  for _ in $(seq 1 900); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  curl -s -o /dev/null "http://127.0.0.1:$port/" || { echo "radosgw did not start; see $dir/log" >&2; exit 1; }
  timeout 60 radosgw-admin "${c[@]}" -n client.rgw user create --uid=test --display-name=test \
    --access-key=test --secret-key=testtesttest >/dev/null 2>&1
  echo "http://127.0.0.1:$port"
}

case "${1:-}" in
  install) install ;;
  start) shift; start "$@" ;;
  stop) shift; stop "$(realpath -m "$1")" ;;
  *) echo "usage: $0 install | start DIR [PORT] | stop DIR" >&2; exit 2 ;;
esac
