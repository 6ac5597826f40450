#!/usr/bin/env bash
# Starts Valkey 8.1 (which has `SET ... IFEQ`) on 127.0.0.1:PORT on a Debian 12 machine, whose
# own packages stop at Redis 7.0 and, in backports, Valkey 8.0. The binary comes from Debian 13's
# packages with the C library it was built for, unpacked under DIR (nothing is installed) and
# run through that library's own loader. For profile/script-costs.mjs:
#
#   bash profile/valkey-trixie.sh [PORT=6399] [DIR=/tmp/valkey-trixie]   # prints the server's PID
#   REDIS_URL=redis://127.0.0.1:6399 node profile/script-costs.mjs
#   kill <PID>
set -euo pipefail
port="${1:-6399}"
dir="${2:-/tmp/valkey-trixie}"
lib="$dir/root/usr/lib/x86_64-linux-gnu"
if [ ! -x "$dir/root/usr/bin/valkey-server" ]; then
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/debs"
  cat > "$dir/trixie.sources" <<'SOURCES'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  apt=(-o Dir::Etc::sourcelist=/dev/null -o "Dir::Etc::sourceparts=$dir" -o "Dir::State::Lists=$dir/lists"
    -o "Dir::Cache=$dir/cache" -o APT::Architecture=amd64)
  apt-get "${apt[@]}" update > /dev/null
  (cd "$dir/debs" && apt-get "${apt[@]}" download valkey-tools libc6 libatomic1 libjemalloc2 liblzf1 \
    libssl3t64 libsystemd0 libcap2 libgcrypt20 liblz4-1 liblzma5 libzstd1 libgpg-error0 > /dev/null 2>&1)
  for deb in "$dir"/debs/*.deb; do dpkg -x "$deb" "$dir/root"; done
  # The server is the binary valkey-check-rdb is a name of; it reads its mode from its name.
  cp "$dir/root/usr/bin/valkey-check-rdb" "$dir/root/usr/bin/valkey-server"
fi
"$lib/ld-linux-x86-64.so.2" --library-path "$lib" --argv0 valkey-server "$dir/root/usr/bin/valkey-server" \
  --port "$port" --bind 127.0.0.1 --save "" --appendonly no > "$dir/valkey-$port.log" 2>&1 &
echo $!
