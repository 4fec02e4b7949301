#!/usr/bin/env bash
# Builds sonde as one statically linked binary (glibc linked in with crt-static, so the
# image needs no libc) and, unless --binary-only is given, the image FROM scratch around it
# (docker/Dockerfile.scratch). Nothing is pulled: the image holds only this binary.
#
#   docker/build-static.sh [--binary-only] [IMAGE]     IMAGE defaults to sonde:local
#
# The build uses its own target directory (target/static) so it does not invalidate the
# debug build's artifacts; the binary lands in target/static/x86_64-unknown-linux-gnu/release/sonde
# (printed on the last line).
set -euo pipefail
cd "$(dirname "$0")/.."

binary_only=0
if [ "${1:-}" = "--binary-only" ]; then
  binary_only=1
  shift
fi
image=${1:-sonde:local}
target=$(rustc -vV | sed -n 's/^host: //p')
case "$target" in
  *-linux-gnu) ;;
  *) echo "build-static.sh: a *-linux-gnu host is needed for crt-static, not $target" >&2; exit 1 ;;
esac

# --target makes RUSTFLAGS apply to the binary only, not to build scripts and proc macros
# (which cannot be static).
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --release --locked --bin sonde --target "$target" --target-dir target/static >&2
binary=target/static/$target/release/sonde

# A static binary has no program interpreter (no dynamic loader) and needs no libraries.
if readelf -l "$binary" | grep -q 'Requesting program interpreter'; then
  echo "build-static.sh: $binary is dynamically linked" >&2
  exit 1
fi

if [ "$binary_only" -eq 0 ]; then
  context=$(mktemp -d)
  trap 'rm -rf "$context"' EXIT
  # Line tables are for backtraces on the build host; the image gets the stripped binary.
  strip -o "$context/sonde" "$binary"
  docker build -q -f docker/Dockerfile.scratch -t "$image" "$context" >&2
  echo "build-static.sh: built image $image" >&2
fi
echo "$binary"
