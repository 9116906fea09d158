#!/usr/bin/env bash
# deb.sh: build the Debian package dist/stenod_VERSION_ARCH.deb.
#
#   bash scripts/deb.sh           build it (make deb); its path goes to stdout
#   bash scripts/deb.sh version   print the package version only
#
# Needs git, go, dpkg-deb and gzip: nothing beyond what `make build` needs on
# Debian (dpkg is essential). No root: dpkg-deb --root-owner-group makes every
# file root's. No network but the Go module proxy, for go build's modules.
#
# VERSION, from git describe:
#   on tag v1.2.3                          1.2.3
#   4 commits after v1.2.3                 1.2.3+git20261203.153531.072bd53
#   no v* tag                              0.0~git20261203.153531.072bd53
#   uncommitted changes                    ... +dirty (or .dirty after a +)
# (the commit's date and time in UTC, then its hash: later commits sort
# later; a pre-release tag v1.3.0-rc1 becomes 1.3.0~rc1, before 1.3.0).
# The binary reports the same version ('stenod version').
# ARCH: dpkg --print-architecture, which must be the one Go builds for.
#
# What goes where: packaging/debian/ holds the control template, conffiles
# and the maintainer scripts; the rest comes from the tree and the binary
# (docs/operations.md, "Installing the Debian package", has the list).
#
# Environment:
#   DEB_MAINTAINER     the Maintainer field (default: HEAD's author)
#   SOURCE_DATE_EPOCH  timestamps in the package (default: HEAD's commit time)
#   MAKE               the make that builds bin/stenod (default: make)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'deb: %s\n' "$*" >&2; }
die() {
	printf 'deb: ERROR: %s\n' "$*" >&2
	exit 1
}

export PATH="/usr/local/go/bin:$PATH"
export LC_ALL=C TZ=UTC

git rev-parse --is-inside-work-tree >/dev/null 2>&1 || die "$(pwd) is not a git work tree: the version comes from git describe"

deb_version() {
	local hash stamp describe tag rest n v
	hash=$(git rev-parse --short=7 HEAD)
	stamp=$(git log -1 --format=%cd --date=format-local:%Y%m%d.%H%M%S HEAD)
	if describe=$(git describe --tags --long --match 'v[0-9]*' HEAD 2>/dev/null); then
		# v1.2.3-4-g072bd53 (the tag may hold dashes itself: v1.3.0-rc1-4-g...)
		tag=${describe%-*-g*}
		rest=${describe#"$tag"-}
		n=${rest%%-*}
		v=${tag#v}
		v=${v//-/\~}
		if [[ $n != 0 ]]; then
			v+="+git$stamp.$hash"
		fi
	else
		v="0.0~git$stamp.$hash"
	fi
	if ! git diff --quiet HEAD --; then
		if [[ $v == *+* ]]; then v+=".dirty"; else v+="+dirty"; fi
	fi
	[[ $v =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || die "version '$v' (from '${describe:-no tag}') is not a valid Debian version"
	printf '%s\n' "$v"
}

if [[ ${1:-} == version ]]; then
	deb_version
	exit 0
fi
[[ $# -eq 0 ]] || die "usage: $0 [version]"

for c in go dpkg dpkg-deb gzip md5sum; do
	command -v "$c" >/dev/null || die "$c not found"
done

version=$(deb_version)
commit=$(git rev-parse --short HEAD)
arch=$(dpkg --print-architecture)
declare -A goarch_of=([amd64]=amd64 [arm64]=arm64 [i386]=386 [ppc64el]=ppc64le [riscv64]=riscv64 [s390x]=s390x)
goarch=$(go env GOARCH)
[[ ${goarch_of[$arch]:-} == "$goarch" ]] || die "dpkg's architecture $arch is not Go's GOARCH $goarch: build on the target architecture"
maintainer=${DEB_MAINTAINER:-$(git log -1 --format='%an <%ae>' HEAD)}
[[ $maintainer =~ ^[^\<\>]+\ \<[^\<\>@]+@[^\<\>]+\>$ ]] || die "Maintainer '$maintainer' is not 'Name <address>': set DEB_MAINTAINER"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct HEAD)}

log "building stenod $version for $arch"
# Stripped (-s -w: no symbol table, no DWARF), as Debian ships binaries;
# panics and profiles still name functions and lines (Go's pclntab stays).
"${MAKE:-make}" --no-print-directory build VERSION="$version" COMMIT="$commit" EXTRA_LDFLAGS="-s -w" >&2
bin=bin/stenod

mkdir -p dist
stage=$(mktemp -d dist/.stage.XXXXXX)
trap 'rm -rf "$stage"' EXIT
umask 022
chmod 0755 "$stage"

# --- files ---------------------------------------------------------------------

install -D -m 0755 "$bin" "$stage/usr/bin/stenod"

# The unit of make install, for /usr/bin (and the manual page).
unit=$stage/lib/systemd/system/stenod.service
install -d "$(dirname "$unit")"
sed -e 's|/usr/local/bin/stenod|/usr/bin/stenod|g' \
	-e 's|^Documentation=file:///usr/local/share/doc/stenod/|Documentation=man:stenod(1) file:///usr/share/doc/stenod/|' \
	etc/systemd/stenod.service >"$unit"
chmod 0644 "$unit"
if grep -n /usr/local "$unit" >&2; then
	die "etc/systemd/stenod.service: a /usr/local path is left for the package (above): teach scripts/deb.sh its /usr path"
fi
grep -q '^ExecStart=/usr/bin/stenod run ' "$unit" || die "the unit's ExecStart does not start /usr/bin/stenod run"

install -D -m 0644 etc/sysusers.d/stenod.conf "$stage/usr/lib/sysusers.d/stenod.conf"
install -D -m 0644 etc/stenod.json "$stage/etc/stenod/config.json"

doc=$stage/usr/share/doc/stenod
install -d "$doc"
install -m 0644 README.md docs/*.md "$doc/"

# copyright: ours, then the licence of everything linked into the binary.
{
	cat packaging/debian/copyright.in
	gomodcache=$(go env GOMODCACHE)
	gover=$(go version "$bin" | awk '{ print $2 }')
	printf '\n\n--- The Go standard library and runtime (%s) ---\n\n' "$gover"
	cat "$(go env GOROOT)/LICENSE"
	# "dep PATH VERSION SUM", with "=> PATH VERSION SUM" after a replaced one.
	go version -m "$bin" | awk '$1 == "dep" || $1 == "=>" { print $1, $2, $3 }' |
		awk '$1 == "=>" { last = $2 " " $3; next } { if (last != "") print last; last = $2 " " $3 } END { if (last != "") print last }' |
		while read -r path ver; do
			if [[ $path == /* || $path == ./* || $path == ../* ]]; then
				dir=$path
			else
				# The module cache escapes capitals: Foo -> !foo (GNU sed's \L).
				# shellcheck disable=SC2001
				dir=$gomodcache/$(sed 's/[A-Z]/!\L&/g' <<<"$path")@$(sed 's/[A-Z]/!\L&/g' <<<"$ver")
			fi
			mapfile -t lic < <(find "$dir" -maxdepth 1 -type f \( -iname 'licen[cs]e*' -o -iname 'copying*' -o -iname 'notice*' \) | sort)
			((${#lic[@]} > 0)) || die "no licence file in $dir (module $path $ver): go mod download, then make deb again"
			for f in "${lic[@]}"; do
				printf '\n\n--- %s %s: %s ---\n\n' "$path" "$ver" "$(basename "$f")"
				# Debian has the Apache licence's text: point to it (Policy 12.5).
				if grep -q 'Apache License' "$f" && grep -q 'Version 2.0, January 2004' "$f" &&
					grep -q 'END OF TERMS AND CONDITIONS' "$f"; then
					printf 'Apache License, Version 2.0: see /usr/share/common-licenses/Apache-2.0.\n'
				else
					cat "$f"
				fi
			done
		done
} >"$doc/copyright"
chmod 0644 "$doc/copyright"

date_r=$(date -R -d "@$SOURCE_DATE_EPOCH")
dirty=""
git diff --quiet HEAD -- || dirty=", with uncommitted changes"
printf 'stenod (%s) unstable; urgency=medium\n\n  * Built from git commit %s\n    (%s)%s.\n\n -- %s  %s\n' \
	"$version" "$(git rev-parse HEAD)" "$(git describe --tags --always HEAD)" "$dirty" "$maintainer" "$date_r" |
	gzip -9n >"$doc/changelog.gz"

install -d "$stage/usr/share/man/man1" "$stage/usr/share/bash-completion/completions"
"$bin" help --man | gzip -9n >"$stage/usr/share/man/man1/stenod.1.gz"
"$bin" help --completion bash >"$stage/usr/share/bash-completion/completions/stenod"
chmod 0644 "$stage/usr/share/man/man1/stenod.1.gz" "$stage/usr/share/bash-completion/completions/stenod"

# --- control ---------------------------------------------------------------------

install -d -m 0755 "$stage/DEBIAN"
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$stage/DEBIAN/"
install -m 0644 packaging/debian/conffiles "$stage/DEBIAN/"
install -D -m 0644 packaging/debian/lintian-overrides "$stage/usr/share/lintian/overrides/stenod"
while read -r f; do
	[[ -f $stage$f ]] || die "conffile $f is not in the package"
done <packaging/debian/conffiles
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/md5sums"
# Installed-Size as dpkg-gencontrol counts it: KiB per file, rounded up, and 1 per directory.
size=$(cd "$stage" && find . -path ./DEBIAN -prune -o \( -type f -printf '%s\n' \) -o \( -type d -printf '1024\n' \) |
	awk '{ kib += int(($1 + 1023) / 1024) } END { print kib }')
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@INSTALLED_SIZE@|$size|" -e "s|@MAINTAINER@|$maintainer|" \
	packaging/debian/control.in >"$stage/DEBIAN/control"
chmod 0644 "$stage/DEBIAN/control"
if grep -n '@[A-Z_]*@' "$stage/DEBIAN/control" >&2; then
	die "packaging/debian/control.in: a placeholder is left (above)"
fi

# Every timestamp the commit's: the same tree builds the same package.
find "$stage" -newermt "@$SOURCE_DATE_EPOCH" -print0 | xargs -0r touch --no-dereference --date="@$SOURCE_DATE_EPOCH"

out=dist/stenod_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$out" >&2
log "built $out ($(du -h "$out" | cut -f1))"
printf '%s\n' "$out"
