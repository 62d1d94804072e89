#!/bin/bash
# pjdfstest on a draft of a real artfs mount (serial, as root, --allow-other); not part of pytest.
#
#   sudo tests/posix/run_pjdfstest.sh /path/to/pjdfstest [tests/posix/pjdfstest.baseline]
#
# /path/to/pjdfstest is a built checkout of https://github.com/pjd/pjdfstest (autoreconf -ifs &&
# ./configure && make pjdfstest): its `pjdfstest` binary and its `tests/` directory. The script
# makes a local store, mounts it with `python -m artfsd.main STORE MNT -f --allow-other`, creates
# the artifact posix/pjd, runs `prove -r -v` on the tests from inside MNT/posix/pjd/draft, and
# compares every failed assertion ("<test file> <number>") with the baseline: the documented
# refusals (README, "Drafts and POSIX"). It exits 1 if an assertion fails that the baseline does
# not list, and prints the listed ones that passed (the baseline can shrink). Everything it makes
# lives in one temporary directory, removed at the end; it unmounts only its own mount and ends
# only the daemon it started. $PJD_TESTS limits the run (e.g. PJD_TESTS="chown chmod").
# $PJD_KEEP=DIR keeps the prove output and the list of failures in DIR.
set -u
PJD=$(cd "${1:?usage: $0 PJDFSTEST_DIR [BASELINE]}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
BASELINE=${2:-$HERE/pjdfstest.baseline}
PY=${PYTHON:-python}
[ "$(id -u)" = 0 ] || { echo "pjdfstest needs root (it acts as other users)" >&2; exit 2; }
[ -x "$PJD/pjdfstest" ] || { echo "$PJD/pjdfstest is not built" >&2; exit 2; }

WORK=$(mktemp -d /tmp/artfs-pjd.XXXXXX)
chmod 755 "$WORK"   # other users (pjdfstest runs as 65534, 65533, ...) must reach the mount
MNT=$WORK/mnt
mkdir -p "$MNT" "$WORK/store"
export ARTFS_STAGING_DIR=$WORK/staging ARTFS_CACHE_DIR=$WORK/cache XDG_STATE_HOME=$WORK/state
DAEMON=

cleanup() {
    cd /
    if grep -q " $MNT " /proc/self/mountinfo; then
        fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT"
    fi
    if [ -n "$DAEMON" ]; then
        for _ in $(seq 100); do kill -0 "$DAEMON" 2>/dev/null || break; sleep 0.1; done
        kill "$DAEMON" 2>/dev/null
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

"$PY" -m artfsd.main "$WORK/store" "$MNT" -f --allow-other --cache-dir "$WORK/cache" >"$WORK/daemon.log" 2>&1 &
DAEMON=$!
for _ in $(seq 300); do
    grep -q " $MNT " /proc/self/mountinfo && grep -q "mounted " "$WORK/daemon.log" && break
    kill -0 "$DAEMON" 2>/dev/null || { cat "$WORK/daemon.log" >&2; exit 2; }
    sleep 0.1
done
mkdir "$MNT/posix" "$MNT/posix/pjd" || { cat "$WORK/daemon.log" >&2; exit 2; }
DRAFT=$MNT/posix/pjd/draft

dirs=()
for t in ${PJD_TESTS:-$(ls "$PJD/tests")}; do
    [ -d "$PJD/tests/$t" ] && dirs+=("$PJD/tests/$t")
done
OUT=$WORK/prove.out
(cd "$DRAFT" && prove -r -v "${dirs[@]}") >"$OUT" 2>&1
# failed assertions: "<dir>/<file>.t <n>"
awk -v root="$PJD/tests/" '
    /^\/.*\.t \.\./ { f = $1; sub(root, "", f) }
    /^not ok [0-9]+/ && $0 !~ /# TODO/ { print f, $3 }
' "$OUT" | sort -u >"$WORK/failed"
grep -Ev '^\s*(#|$)' "$BASELINE" | awk '{ print $1, $2 }' | sort -u >"$WORK/expected"
if [ -n "${PJD_TESTS:-}" ]; then   # a partial run: compare only the directories run
    pat=$(printf '%s/|' ${PJD_TESTS}); pat="^(${pat%|})"
    grep -E "$pat" "$WORK/expected" >"$WORK/expected.part"; mv "$WORK/expected.part" "$WORK/expected"
fi
comm -23 "$WORK/failed" "$WORK/expected" >"$WORK/unexpected"
comm -13 "$WORK/failed" "$WORK/expected" >"$WORK/fixed"
[ -n "${PJD_KEEP:-}" ] && mkdir -p "$PJD_KEEP" && cp "$OUT" "$WORK/failed" "$WORK/unexpected" "$WORK/daemon.log" "$PJD_KEEP"/

grep -E '^(Files=|Result:)' "$OUT"
echo "assertions failed: $(wc -l <"$WORK/failed") (the baseline lists $(wc -l <"$WORK/expected"))"
if [ -s "$WORK/fixed" ]; then
    echo "passed although the baseline lists them ($(wc -l <"$WORK/fixed")): shrink the baseline"
    head -20 "$WORK/fixed"
fi
if [ -s "$WORK/unexpected" ]; then
    echo "FAILED, not in the baseline ($(wc -l <"$WORK/unexpected")):"
    head -50 "$WORK/unexpected"
    exit 1
fi
echo "OK: every failure is a documented refusal"
