#!/usr/bin/env bash
# deb-check.sh: build the Debian package, install it with apt, check what it
# installed, remove and purge it, and check what is left.
#
# `make ci` runs it (make deb-check) after the tests. It installs a system
# package, so it runs only under CI (CI=true, as for the tests: any
# non-empty CI), as root (under CI anything else is a failure); elsewhere it
# says so and does nothing. To run it on a
# machine of your own: sudo CI=true make deb-check.
#
# It leaves the machine as it found it:
#   - it refuses to start when the package stenod is installed (purging it
#     would remove someone's sensor);
#   - what `make install` put in the package's way (/etc/stenod, and
#     /etc/systemd/system/stenod.service, which would hide the package's
#     unit) is moved aside and put back at the end; /usr/local/bin/stenod
#     is left alone (the checks call /usr/bin/stenod by its path);
#   - the user stenod (scripts/provision.sh creates it, the tests use it)
#     stays: purge keeps it, and it is removed at the end only when it did
#     not exist before; the tests' own users (stenod-test, ...) are never
#     touched;
#   - the spool it writes for the check is removed at the end, and
#     /var/lib/stenod too when it did not exist before.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '==> deb-check: %s\n' "$*"; }
die() {
	printf 'deb-check: FAIL: %s\n' "$*" >&2
	exit 1
}

if [[ -z ${CI:-} ]]; then
	log "skipped: it installs and purges the package stenod, so it runs only under CI=true (sudo CI=true make deb-check)"
	exit 0
fi
[[ $(id -u) -eq 0 ]] || die "needs root (it installs a package)"

export DEBIAN_FRONTEND=noninteractive
readonly APT_OPTS=(-o DPkg::Lock::Timeout=600 -q -y --no-install-recommends)
readonly BIN=/usr/bin/stenod UNIT=/lib/systemd/system/stenod.service STATE=/var/lib/stenod
readonly WORK=$STATE/deb-check # the spool the check writes, as the user stenod
readonly INPUT=testdata/pcaps/chrissanders-packets/udp_dnsrequest.pcapng

pkg_status() { dpkg-query -W -f='${db:Status-Abbrev}' stenod 2>/dev/null | tr -d ' ' || true; }

case $(pkg_status) in
"" | un) ;;
*) die "the package stenod is installed here ($(pkg_status)): this check installs and purges it; run it where it is not (apt-get purge stenod)" ;;
esac

had_state=false
[[ -e $STATE ]] && had_state=true
had_user=false
id stenod >/dev/null 2>&1 && had_user=true
aside=$(mktemp -d /tmp/stenod-deb-check.XXXXXX)
moved=()
installed=false

cleanup() {
	local rc=$?
	set +e
	if $installed && [[ -n $(pkg_status) && $(pkg_status) != un ]]; then
		log "cleanup: purging the package"
		apt-get "${APT_OPTS[@]}" purge stenod >/dev/null
	fi
	rm -rf "$WORK"
	$had_state || rm -rf "$STATE"
	if ! $had_user && id stenod >/dev/null 2>&1; then
		userdel stenod
		getent group stenod >/dev/null && groupdel stenod
	fi
	for p in "${moved[@]}"; do
		rm -rf "$p"
		mv "$aside$p" "$p" && log "cleanup: put back $p"
	done
	rm -rf "$aside"
	exit $rc
}
trap cleanup EXIT

for p in /etc/stenod /etc/systemd/system/stenod.service; do
	if [[ -e $p || -L $p ]]; then
		mkdir -p "$aside$(dirname "$p")"
		mv "$p" "$aside$p"
		moved+=("$p")
		log "moved $p aside (make install's?); it is put back at the end"
	fi
done

# --- build and install ---------------------------------------------------------

deb=$(MAKE=${MAKE:-make} bash scripts/deb.sh)
version=$(bash scripts/deb.sh version)
log "built $deb"
if command -v lintian >/dev/null; then
	log "lintian"
	lintian --fail-on error,warning "$deb"
else
	log "lintian: not installed, skipped (scripts/provision.sh installs it)"
fi

log "apt-get install ./$deb"
installed=true
apt-get "${APT_OPTS[@]}" install "./$deb"

# --- what the package installed -------------------------------------------------

[[ $(pkg_status) == ii ]] || die "after install the package's status is '$(pkg_status)', want ii"
got=$(dpkg-query -W -f='${Version}' stenod)
[[ $got == "$version" ]] || die "installed version $got, want $version"
out=$("$BIN" version)
[[ $out == "stenod $version (commit "* ]] || die "stenod version says '$out', want version $version"
log "stenod version: $out"
# Into a variable, not through grep -q: grep leaving at the first line
# would cut stenod off with SIGPIPE, which pipefail reports as a failure.
out=$("$BIN" help run) || die "stenod help run failed"
[[ $out == "usage: stenod run "* ]] || die "stenod help run does not print run's usage"

for f in "$BIN" "$UNIT" /usr/lib/sysusers.d/stenod.conf /etc/stenod/config.json \
	/usr/share/man/man1/stenod.1.gz /usr/share/bash-completion/completions/stenod \
	/usr/share/doc/stenod/copyright /usr/share/doc/stenod/operations.md; do
	[[ -f $f ]] || die "$f is missing"
done
dpkg-query -W -f='${Conffiles}\n' stenod | grep -q '^ */etc/stenod/config.json ' || die "/etc/stenod/config.json is not a conffile"
grep -q '^ExecStart=/usr/bin/stenod run ' "$UNIT" || die "$UNIT does not start /usr/bin/stenod"

id stenod >/dev/null 2>&1 || die "no user stenod"
getent group stenod >/dev/null || die "no group stenod"
if ! $had_state; then
	[[ $(stat -c '%U:%G %a' "$STATE") == "stenod:stenod 750" ]] || die "$STATE is $(stat -c '%U:%G %a' "$STATE"), want stenod:stenod 750"
fi

# Installed, neither enabled nor started.
[[ ! -e /etc/systemd/system/multi-user.target.wants/stenod.service ]] || die "the package enabled stenod.service"
if [[ -d /run/systemd/system ]]; then
	! systemctl --quiet is-active stenod.service || die "the package started stenod.service"
fi

# The unit as systemd reads it: every setting known, ExecStart executable,
# Documentation=man:stenod(1) found by man. Not running under systemd (a
# container), systemd-analyze verify still loads and checks the unit.
log "systemd-analyze verify $UNIT"
verify=$(systemd-analyze verify "$UNIT" 2>&1) || die "systemd-analyze verify failed: $verify"
if grep -i stenod <<<"$verify"; then
	die "systemd-analyze verify complains about the unit (above)"
fi
[[ -z $verify ]] || log "systemd-analyze verify, about other units: $verify"

[[ $(man -w stenod) == /usr/share/man/man1/stenod.1.gz ]] || die "man -w stenod: $(man -w stenod 2>&1)"
warn=$(MANWIDTH=80 man --warnings stenod 2>&1 >/dev/null) || die "man stenod failed: $warn"
[[ -z $warn ]] || die "man stenod warns: $warn"
bash -c 'source /usr/share/bash-completion/completions/stenod && complete -p stenod' >/dev/null ||
	die "the bash completion does not define a completion for stenod"

# The service's user can write a spool in its state directory, and root
# reads it back.
install -d -o stenod -g stenod -m 0750 "$WORK"
install -m 0644 "$INPUT" "$WORK/input.pcapng"
runuser -u stenod -- "$BIN" import --spool "$WORK/spool" "$WORK/input.pcapng"
n=$("$BIN" query --spool "$WORK/spool" 'udp and port 53' | tcpdump -nr - 2>/dev/null | wc -l)
((n > 0)) || die "the imported spool answers no packets"
log "the user stenod imported $n DNS packets into $WORK/spool"

# --- remove: the program goes, the configuration stays ------------------------

log "apt-get remove stenod"
apt-get "${APT_OPTS[@]}" remove stenod
[[ $(pkg_status) == rc ]] || die "after remove the package's status is '$(pkg_status)', want rc"
for f in "$BIN" "$UNIT" /usr/share/man/man1/stenod.1.gz; do
	[[ ! -e $f ]] || die "$f is left after remove"
done
[[ -f /etc/stenod/config.json ]] || die "remove took /etc/stenod/config.json (a conffile stays until purge)"

# --- purge: everything but the spool and its owner ----------------------------

log "apt-get purge stenod"
apt-get "${APT_OPTS[@]}" purge stenod
case $(pkg_status) in
"" | un) ;;
*) die "after purge the package's status is '$(pkg_status)'" ;;
esac
for f in "$BIN" "$UNIT" /etc/stenod /run/stenod /usr/lib/sysusers.d/stenod.conf /etc/systemd/system/stenod.service \
	/etc/systemd/system/multi-user.target.wants/stenod.service; do
	[[ ! -e $f && ! -L $f ]] || die "$f is left after purge"
done
[[ -d $STATE ]] || die "purge removed $STATE, the spool"
[[ -n $(find "$WORK/spool" -name '*.pcap' -print -quit) ]] || die "purge removed the spool files in $WORK/spool"
id stenod >/dev/null 2>&1 || die "purge removed the user stenod, who owns the spool it keeps"
log "purged: binary, unit, configuration gone; $STATE and the user stenod kept"
log "ok"
