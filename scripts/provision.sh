#!/usr/bin/env bash
# provision.sh: install everything stenod's build and tests need on Debian 12.
#
# Run as root, from anywhere: on a developer machine, in CI (.ci/run) and in
# the dev VM (vagrant/Vagrantfile). Idempotent: a second run finds everything
# in place, skips apt entirely and finishes in a few seconds.
#
# What it does, in order:
#   1. installs the Debian packages below that are missing (apt is not touched
#      when none is);
#   2. mounts bpffs at /sys/fs/bpf if it is not mounted;
#   3. checks that a Go at least as new as go.mod's `go` line is on PATH or at
#      /usr/local/go/bin; if there is none, installs Debian's golang-go only if
#      it is new enough, else explains how to install Go and fails;
#   4. installs staticcheck (pinned) into GOBIN, or $(go env GOPATH)/bin.
#
# Environment:
#   GOBIN                 where staticcheck goes (default: $(go env GOPATH)/bin)
#   STENOD_SKIP_BPFFS=1   do not try to mount bpffs (unprivileged containers)
#
# It never downloads anything but Debian packages (apt) and Go modules (go
# install, through the Go module proxy configured for the go command).
set -euo pipefail

# staticcheck release to install: honnef.co/go/tools module version.
readonly STATICCHECK_VERSION=v0.8.2

# Debian packages, one per line, with what needs them.
readonly PACKAGES=(
	clang           # bpf2go compiles bpf/*.c
	llvm            # llvm-strip, used by bpf2go
	libbpf-dev      # bpf/bpf_helpers.h and friends
	bpftool         # inspecting pinned maps and programs; BTF dumps; the documented recipes (TestBpftoolRecipes)
	jq              # the documented bpftool | jq recipes (TestBpftoolRecipes)
	tshark          # Wireshark's expert analysis of generated traffic (testutil.WiresharkProblems)
	linux-libc-dev  # linux/bpf.h, linux/if_xdp.h
	libc6-dev       # libc headers for clang; cgo for go test -race
	gcc             # cgo for go test -race
	tcpdump         # the reference for query answers
	tcpreplay       # replaying test captures onto an interface
	nfdump          # nfcapd, the IPFIX collector of the export test (cmd/stenod TestIPFIXNfcapd)
	prometheus      # promtool check metrics on a running sensor's /metrics (cmd/stenod TestStatusDemo); its server is not started
	netsniff-ng     # trafgen: line-rate synthetic traffic
	iproute2        # ip netns, veth
	ethtool         # NIC queues, offloads
	curl            # talking to the HTTP API in tests
	chromium        # the web page's browser test, headless (cmd/stenod TestWebPage)
	ca-certificates
	openssl         # test certificates
	make
	git
	procps          # pgrep, sysctl
	util-linux      # mount, losetup, taskset
	e2fsprogs       # mkfs.ext4 for loop-mounted test filesystems
	libcap2-bin     # setcap, capsh
	hyperfine       # benchmarks of whole commands
	adduser         # the Debian package's postinst (make deb-check installs it)
	systemd         # systemd-analyze verify of the packaged unit (make deb-check)
	man-db          # man: the packaged manual page (make deb-check)
	lintian         # checks the Debian package (make deb-check)
)

log() { printf '==> %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() {
	printf 'ERROR: %s\n' "$*" >&2
	exit 1
}

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
start=$SECONDS

[[ $(id -u) -eq 0 ]] || die "run as root (sudo $0)"
command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian 12 only"
if [[ -r /etc/os-release ]]; then
	# shellcheck disable=SC1091
	. /etc/os-release
	if [[ ${ID:-} != debian || ${VERSION_ID:-} != 12 ]]; then
		warn "tested on Debian 12 only; this is ${PRETTY_NAME:-unknown}"
	fi
fi

export DEBIAN_FRONTEND=noninteractive
# Wait for a concurrent apt or dpkg instead of failing at once.
readonly APT_OPTS=(-o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

# --- 1. Debian packages -----------------------------------------------------

missing_packages() {
	local p status
	for p in "${PACKAGES[@]}"; do
		status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
		[[ $status == ii* ]] || printf '%s\n' "$p"
	done
}

mapfile -t missing < <(missing_packages)
if ((${#missing[@]} == 0)); then
	log "packages: all ${#PACKAGES[@]} present, apt skipped"
else
	log "packages: installing ${#missing[@]} missing: ${missing[*]}"
	apt-get "${APT_OPTS[@]}" -q update
	apt-get "${APT_OPTS[@]}" -q install -y --no-install-recommends "${missing[@]}"
	mapfile -t still < <(missing_packages)
	((${#still[@]} == 0)) || die "packages still missing after apt-get install: ${still[*]}"
	log "packages: installed ${missing[*]}"
	# Installing prometheus enables its server (port 9090); only promtool
	# is wanted. A prometheus that was here before is left as it was.
	if [[ " ${missing[*]} " == *" prometheus "* ]] && [[ -d /run/systemd/system ]]; then
		systemctl disable --now prometheus.service >/dev/null 2>&1 || warn "could not stop prometheus.service"
		log "packages: prometheus.service disabled (only promtool is used)"
	fi
fi

# --- 2. bpffs -----------------------------------------------------------------

if [[ ${STENOD_SKIP_BPFFS:-} == 1 ]]; then
	log "bpffs: skipped (STENOD_SKIP_BPFFS=1)"
elif mountpoint -q /sys/fs/bpf; then
	log "bpffs: already mounted at /sys/fs/bpf"
elif mkdir -p /sys/fs/bpf 2>/dev/null && mount -t bpf bpf /sys/fs/bpf; then
	log "bpffs: mounted at /sys/fs/bpf"
else
	warn "bpffs: could not mount at /sys/fs/bpf (no CAP_SYS_ADMIN?); tests that pin maps will fail or skip"
fi

# --- 3. Go ----------------------------------------------------------------------

# version_ge A B: A >= B for Go versions without the "go" prefix (1.26.8, 1.27rc1).
version_ge() {
	[[ $(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1) == "$2" ]]
}

# go_version GO: the version of the go binary GO itself, never a toolchain it
# would switch to for this module.
go_version() {
	local v
	v=$(GOTOOLCHAIN=local "$1" env GOVERSION 2>/dev/null) || return 1
	printf '%s\n' "${v#go}"
}

go_required=$(awk '$1 == "go" { print $2; exit }' "$repo_root/go.mod")
[[ -n $go_required ]] || die "no go line in $repo_root/go.mod"

# Prefer /usr/local/go (where the official tarball goes), then whatever is on PATH.
[[ -x /usr/local/go/bin/go ]] && export PATH="/usr/local/go/bin:$PATH"

go_ok=false
if command -v go >/dev/null; then
	go_bin=$(command -v go)
	have=$(go_version "$go_bin") || die "$go_bin does not run"
	if version_ge "$have" "$go_required"; then
		log "go: $go_bin is go$have (go.mod needs >= go$go_required)"
		go_ok=true
	else
		warn "go: $go_bin is go$have, older than go$go_required that go.mod needs"
	fi
else
	warn "go: not found on PATH nor at /usr/local/go/bin"
fi

if ! $go_ok; then
	# Debian's golang-go, if the configured archives (backports included) carry
	# a new enough one. Bookworm's own is 1.19.
	candidate=$(apt-cache policy golang-go 2>/dev/null | awk '$1 == "Candidate:" { print $2 }')
	debian_go=${candidate#*:}   # drop the epoch: 2:1.19~1 -> 1.19~1
	debian_go=${debian_go%%[~+-]*} # 1.19~1 -> 1.19
	if [[ -n $debian_go && $candidate != "(none)" ]] && version_ge "$debian_go" "$go_required"; then
		log "go: installing Debian's golang-go $candidate"
		apt-get "${APT_OPTS[@]}" -q install -y --no-install-recommends golang-go
		hash -r
		go_ok=true
	else
		cat >&2 <<EOF
ERROR: stenod needs Go >= $go_required (the go line in go.mod) and none was
found; Debian's golang-go here is ${candidate:-not available}, too old.
Install Go $go_required or newer at /usr/local/go, then run this script again:
  - from the official Linux tarball on the Go project's download page:
      rm -rf /usr/local/go && tar -C /usr/local -xzf go$go_required.linux-amd64.tar.gz
  - or, with any Go >= 1.21 at hand (for example bookworm-backports'
    golang-1.2x-go), let it fetch the toolchain through the Go module proxy:
      GOTOOLCHAIN=go$go_required go version
      rm -rf /usr/local/go
      cp -a "\$(GOTOOLCHAIN=go$go_required go env GOROOT)" /usr/local/go
and put /usr/local/go/bin on PATH. vagrant/Vagrantfile does the second for the VM.
EOF
		exit 1
	fi
fi

go_bin=$(command -v go)
have=$(go_version "$go_bin")
version_ge "$have" "$go_required" || die "go: $go_bin is go$have, need >= go$go_required"

# --- 4. staticcheck -------------------------------------------------------------

if [[ -n ${GOBIN:-} ]]; then
	gobin=$GOBIN
else
	gopath=$(GOTOOLCHAIN=local go env GOPATH)
	[[ -n $gopath ]] || die "go env GOPATH is empty (HOME unset?); set GOBIN"
	gobin=${gopath%%:*}/bin
fi
staticcheck_bin=$gobin/staticcheck
want=${STATICCHECK_VERSION#v}
if [[ -x $staticcheck_bin ]] && "$staticcheck_bin" -version 2>/dev/null | grep -qF "($want)"; then
	log "staticcheck: $staticcheck_bin is already $STATICCHECK_VERSION"
else
	log "staticcheck: installing $STATICCHECK_VERSION into $gobin"
	mkdir -p "$gobin"
	# From / so that no go.mod around us has a say in the build.
	(cd / && GOBIN=$gobin GOTOOLCHAIN=local go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION")
	"$staticcheck_bin" -version >/dev/null || die "staticcheck: $staticcheck_bin does not run"
	log "staticcheck: installed $staticcheck_bin"
fi
case ":$PATH:" in
*":$gobin:"*) ;;
*) log "note: $gobin is not on PATH; add it, or call $staticcheck_bin" ;;
esac

# --- 5. the service user ------------------------------------------------------

# stenod run, started as root, drops to this user once capture is set up
# (docs/operations.md); the demo of `make run` shows it.
if id stenod >/dev/null 2>&1; then
	log "user: stenod exists"
else
	useradd --system --user-group --home-dir /var/lib/stenod --shell /usr/sbin/nologin stenod
	log "user: created the system user stenod"
fi

log "done in $((SECONDS - start))s: go$have at $go_bin, staticcheck at $staticcheck_bin"
