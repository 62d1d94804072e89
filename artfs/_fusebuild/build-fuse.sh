#!/usr/bin/env bash
# artfs's fast FUSE build: pyfuse3 3.5.0 with the patches beside this script (patches/, applied in
# name order: cached directory listings, FUSE passthrough, the inode in readdir, cached symlinks,
# read replies from a file descriptor),
# built against libfuse >= 3.17, installed into the Python environment of $ARTFS_PYTHON (what `artfs build-fuse`
# runs in; .ci/setup passes .venv's). When the system's libfuse is older (Debian 12 and Ubuntu
# 24.04 ship 3.14), libfuse 3.17 is built from Debian's source package into
# $ARTFS_BUILD_CACHE/libfuse-3.17, which needs root the first time (an apt source of Debian 13's
# source packages is added; no binary package comes from it).
#
# Idempotent: a stamp in the environment records the inputs of the last successful build; the
# libfuse build and the pyfuse3 wheel are kept in $ARTFS_BUILD_CACHE (default
# /var/cache/artfs-build as root, else ~/.cache/artfs-build), keyed by their inputs, so another
# environment on the machine installs them in seconds.
#
# Nothing harmful where it cannot work: every step that could fail comes before the install, so
# on any failure the pyfuse3 already installed stays and the mount keeps working on the ordinary
# path (`artfs doctor` says which fast paths are off and why). Exit status: 0 built or already
# built, 1 failed (the reason on stderr), 3 skipped (ARTFS_STOCK_PYFUSE3=1).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

PYFUSE3_VERSION=3.5.0
PYFUSE3_SHA256=88399a9494b88603230bba300f4ba9ad63fece5ed514ca3633d555a0c6a42b24
LIBFUSE_MIN=3.17
py=${ARTFS_PYTHON:-python3}
patch_files=("$here"/patches/pyfuse3-$PYFUSE3_VERSION-*.patch)  # applied in name order
if [[ $(id -u) == 0 ]]; then default_cache=/var/cache/artfs-build; else default_cache=${XDG_CACHE_HOME:-$HOME/.cache}/artfs-build; fi
cache=${ARTFS_BUILD_CACHE:-$default_cache}
prefix=$cache/libfuse-3.17
env_prefix=$("$py" -c 'import sys; print(sys.prefix)')
stamp=$env_prefix/.artfs-pyfuse3

say() { echo "build-fuse: $*" >&2; }
die() { say "$*"; say "the pyfuse3 installed before stays; the mount works without the fast paths (see 'artfs doctor')"; exit 1; }

[[ ${ARTFS_STOCK_PYFUSE3:-} == 1 ]] && { say "skipped (ARTFS_STOCK_PYFUSE3=1)"; exit 3; }
[[ -w $env_prefix ]] || die "cannot write to the Python environment $env_prefix (build in a venv of your own, or as its owner)"

# pip into the target environment: its own, or uv's for environments made by uv (no pip inside)
if "$py" -m pip --version >/dev/null 2>&1; then
    pip_install() { "$py" -m pip install -q --no-deps --force-reinstall "$@"; }
elif command -v uv >/dev/null 2>&1; then
    pip_install() { uv pip install -q --python "$py" --no-deps --reinstall "$@"; }
else
    die "the environment of $py has no pip and uv is not installed"
fi
has_features() { "$py" -c 'import pyfuse3; pyfuse3.kernel_features()' 2>/dev/null; }

want=$(cat "${patch_files[@]}" "$here/build-fuse.sh" | sha256sum | cut -d' ' -f1)
if [[ -f $stamp && $(cat "$stamp") == "$want" ]] && has_features; then
    say "the patched pyfuse3 is installed already ($env_prefix)"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
wheels=$cache/pyfuse3-$want-$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
if compgen -G "$wheels/pyfuse3-*.whl" >/dev/null && [[ -d $prefix/lib ]]; then
    pip_install "$wheels"/pyfuse3-*.whl
    if has_features; then
        say "installed the patched pyfuse3 built earlier ($wheels)"
        echo "$want" >"$stamp"
        exit 0
    fi
fi

for tool in gcc pkg-config patch; do
    command -v $tool >/dev/null || die "$tool is missing (apt-get install gcc pkg-config patch libfuse3-dev python3-dev)"
done
pkg-config --exists fuse3 || die "libfuse3's headers are missing (apt-get install libfuse3-dev)"
mkdir -p "$cache" || die "cannot create the build cache $cache (set ARTFS_BUILD_CACHE)"

# tools for the build (meson, ninja) in a throw-away venv, never in the target environment
tools() {
    [[ -x $work/tools/bin/meson ]] && return
    python3 -m venv "$work/tools" && "$work/tools/bin/pip" install -q meson ninja
}

# 1. libfuse >= 3.17 (passthrough replies need fuse_file_info.backing_id, added in 3.16)
if pkg-config --atleast-version=$LIBFUSE_MIN fuse3; then
    pcdir=""
elif PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --atleast-version=$LIBFUSE_MIN fuse3; then
    pcdir=$prefix/lib/pkgconfig
else
    say "building libfuse >= $LIBFUSE_MIN from Debian's source package into $prefix"
    command -v apt-get >/dev/null || die "libfuse is older than $LIBFUSE_MIN and this system has no apt-get to fetch its source; install libfuse >= $LIBFUSE_MIN (its .pc file on PKG_CONFIG_PATH) and run again"
    src=/etc/apt/sources.list.d/artfs-trixie-src.sources
    if ! apt-get source --print-uris -qq fuse3/trixie >/dev/null 2>&1; then
        [[ $(id -u) == 0 ]] || die "libfuse is older than $LIBFUSE_MIN: run 'artfs build-fuse' once as root (it adds Debian 13's source packages to apt and builds libfuse $LIBFUSE_MIN into $prefix), or install libfuse >= $LIBFUSE_MIN"
        cat >"$src" <<'SRC'
# Added by artfs build-fuse: the source package of libfuse 3.17 (FUSE passthrough), built into
# artfs's build cache; no binary package comes from here.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
        apt-get update -qq || die "apt-get update failed"
    fi
    command -v dpkg-source >/dev/null || die "dpkg-source is missing (apt-get install dpkg-dev)"
    (cd "$work" && apt-get source -qq --download-only fuse3/trixie >/dev/null 2>&1 && dpkg-source -x fuse3_*.dsc libfuse >/dev/null) \
        || die "could not fetch libfuse's source package"
    tools || die "could not install meson and ninja"
    PATH=$work/tools/bin:$PATH meson setup "$work/build" "$work/libfuse" --prefix="$prefix" --libdir=lib \
        -Dexamples=false -Dutils=false -Dtests=false -Dudevrulesdir="$prefix/udev" -Dinitscriptdir= >"$work/meson.log" \
        || { cat "$work/meson.log" >&2; die "libfuse's configuration failed"; }
    PATH=$work/tools/bin:$PATH ninja -C "$work/build" install >"$work/ninja.log" \
        || { tail -20 "$work/ninja.log" >&2; die "libfuse's build failed"; }
    pcdir=$prefix/lib/pkgconfig
fi

# 2. pyfuse3 from its sdist (checked against its hash), patched, built against that libfuse (rpath:
#    no LD_LIBRARY_PATH needed)
if "$py" -m pip --version >/dev/null 2>&1; then builder=("$py" -m pip); else builder=(uv pip); fi
if [[ ${builder[0]} == uv ]]; then downloader=(python3 -m pip); else downloader=("${builder[@]}"); fi
"${downloader[@]}" download -q --no-deps --no-binary pyfuse3 -d "$work" "pyfuse3==$PYFUSE3_VERSION" \
    || die "could not download pyfuse3 $PYFUSE3_VERSION's source"
sdist=$work/pyfuse3-$PYFUSE3_VERSION.tar.gz
echo "$PYFUSE3_SHA256  $sdist" | sha256sum -c --quiet - || die "pyfuse3's source does not match its hash"
tar xzf "$sdist" -C "$work"
(cd "$work/pyfuse3-$PYFUSE3_VERSION" && for p in "${patch_files[@]}"; do patch -p1 -s <"$p"; done && rm -f src/pyfuse3/__init__.c) \
    || die "the patches do not apply"
ldflags=""
[[ -n $pcdir ]] && ldflags="-Wl,-rpath,$prefix/lib"
say "building pyfuse3 $PYFUSE3_VERSION with $(cd "$here/patches" && echo *.patch)"
if [[ ${builder[0]} == uv ]]; then
    PKG_CONFIG_PATH=$pcdir LDFLAGS=$ldflags SETUPTOOLS_SCM_PRETEND_VERSION=$PYFUSE3_VERSION \
        uv build -q --python "$py" --wheel -o "$work/wheel" "$work/pyfuse3-$PYFUSE3_VERSION" >/dev/null || die "pyfuse3's build failed"
else
    PKG_CONFIG_PATH=$pcdir LDFLAGS=$ldflags SETUPTOOLS_SCM_PRETEND_VERSION=$PYFUSE3_VERSION \
        "$py" -m pip wheel -q --no-deps -w "$work/wheel" "$work/pyfuse3-$PYFUSE3_VERSION" || die "pyfuse3's build failed"
fi
pip_install "$work"/wheel/pyfuse3-*.whl || die "could not install the wheel built"
has_features || die "the pyfuse3 built does not import"
rm -rf "$wheels" && mkdir -p "$wheels" && cp "$work"/wheel/pyfuse3-*.whl "$wheels/"
"$py" -c 'import pyfuse3, sys; f = pyfuse3.kernel_features(); print("build-fuse: pyfuse3 can ask for", f, file=sys.stderr)'
echo "$want" >"$stamp"
