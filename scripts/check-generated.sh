#!/usr/bin/env bash
# check-generated.sh: fail if gen/ is not what `make generate` produces.
#
# gen/ holds bpf2go's output (Go bindings and compiled .o), committed so that
# `go build` needs no clang. This script regenerates it in place, in the work
# tree, and fails with the difference when a tracked file under gen/ changed
# or disappeared, or a new untracked file appeared there. On failure the
# regenerated files are left in the tree: review them and commit them.
#
# Run from anywhere inside the repository; `make ci` calls it. MAKE, if set
# (as it is inside make), is the make to call.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
git rev-parse --is-inside-work-tree >/dev/null 2>&1 || {
	echo "check-generated: $(pwd) is not a git work tree" >&2
	exit 1
}

echo "check-generated: running ${MAKE:-make} generate"
"${MAKE:-make}" generate

status=0
if ! git diff --quiet --exit-code -- gen/; then
	echo "check-generated: FAIL: gen/ differs from what is committed:" >&2
	git --no-pager diff --stat -- gen/ >&2
	# Show the text of the change, not pages of it: binaries show as one line.
	# (|| true: head closing the pipe early must not end the script here.)
	git --no-pager diff -- gen/ | head -n 200 >&2 || true
	status=1
fi

mapfile -t untracked < <(git ls-files --others --exclude-standard -- gen/)
if ((${#untracked[@]} > 0)); then
	echo "check-generated: FAIL: make generate created files that are not committed:" >&2
	printf '  %s\n' "${untracked[@]}" >&2
	status=1
fi

if ((status != 0)); then
	echo "check-generated: gen/ is stale: run 'make generate' and commit gen/." >&2
	echo "check-generated: (generate with Debian 12's clang, as CI does: another clang version compiles different .o files)" >&2
	exit 1
fi
echo "check-generated: OK, gen/ is current"
