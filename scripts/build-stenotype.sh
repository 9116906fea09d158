#!/usr/bin/env bash
# build-stenotype.sh: build stenographer's capture program, stenotype, for
# capbench's `stenotype` configuration (docs/benchmarks.md), so that stenod's
# capture is measured against it in the same rounds.
#
# Usage: scripts/build-stenotype.sh [DEST]   (default DEST: /usr/local/bin/stenotype)
#
# Run as root on Debian 12. It installs the C++ libraries stenotype links
# (missing ones only), takes stenographer's source, release v1.0.1, from the
# Go module proxy (stenographer is a Go module and its zip carries
# stenotype/), and builds it with stenographer's own Makefile, unchanged.
# Nothing of it enters stenod's build or tests.
set -euo pipefail

readonly VERSION=v1.0.1
readonly DEST=${1:-/usr/local/bin/stenotype}
readonly PACKAGES=(g++ make libleveldb-dev libsnappy-dev libaio-dev libseccomp-dev)

die() { echo "build-stenotype: $*" >&2; exit 1; }
log() { echo "build-stenotype: $*" >&2; }

command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || die "go not found (scripts/provision.sh installs it)"

missing=()
for p in "${PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	log "installing ${missing[*]}"
	apt-get -q update
	DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends "${missing[@]}"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Outside any module, so that stenod's go.mod is not touched.
src=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "github.com/google/stenographer@$VERSION" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[[ -d $src/stenotype ]] || die "github.com/google/stenographer@$VERSION: no stenotype/ in the module ($src)"
cp -r "$src/stenotype" "$work/stenotype"
chmod -R u+w "$work/stenotype"
log "building stenotype from github.com/google/stenographer@$VERSION"
make -s -C "$work/stenotype" -j"$(nproc)" stenotype >&2
install -D -m 0755 "$work/stenotype/stenotype" "$DEST"
log "installed $DEST"
