#!/usr/bin/env bash
# Run the README's two quick-start commands on a fresh Debian system: a debootstrap chroot of the given
# release (bookworm = Debian 12, SuiteSparse 5; trixie = Debian 13, SuiteSparse 7), with the committed
# tree (git archive HEAD) as the "clone". The commands are read from README.md, so this checks exactly
# what a new user types: the install + InstEval fit, then the test command CI runs (nox -s tests).
#
#   sudo tools/check_fresh_debian.sh trixie            # or bookworm; as root, needs debootstrap
#   SCIKIT_SPARSE=0.5.0 sudo -E tools/check_fresh_debian.sh trixie   # then also the tests on scikit-sparse 0.5
#
# Environment: MIRROR (default http://deb.debian.org/debian), WORK (default /tmp/sparselmm-fresh-<release>;
# an existing root there is reused, delete it for a truly fresh system). The chroot gets the host's DNS
# settings and any extra CA certificates in /usr/local/share/ca-certificates (for TLS-intercepting
# proxies); the commands run with an empty environment, so no host pip settings leak in.
set -euo pipefail

release=${1:?usage: $0 bookworm|trixie}
mirror=${MIRROR:-http://deb.debian.org/debian}
work=${WORK:-/tmp/sparselmm-fresh-$release}
root="$work/root"
repo=$(cd "$(dirname "$0")/.." && pwd)
log="$work/check.log"
mkdir -p "$work"

if [ ! -x "$root/bin/bash" ]; then
    debootstrap --variant=minbase "$release" "$root" "$mirror"
fi
for fs in proc dev dev/pts; do
    mountpoint -q "$root/$fs" || mount --bind "/$fs" "$root/$fs"
done
trap 'for fs in dev/pts dev proc; do umount "$root/$fs" 2>/dev/null || true; done' EXIT
cp /etc/resolv.conf "$root/etc/resolv.conf"

in_root() {
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive ${SPARSELMM_SCIKIT_SPARSE:+SPARSELMM_SCIKIT_SPARSE=$SPARSELMM_SCIKIT_SPARSE} \
        chroot "$root" /bin/bash -c "$1"
}

if compgen -G "/usr/local/share/ca-certificates/*.crt" > /dev/null; then
    in_root "apt-get update -qq && apt-get install -y -qq ca-certificates > /dev/null"
    mkdir -p "$root/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    in_root "update-ca-certificates > /dev/null"
fi

rm -rf "$root/root/sparselmm"
mkdir -p "$root/root/sparselmm"
git -C "$repo" archive HEAD | tar -x -C "$root/root/sparselmm"

# the README's quick-start commands: the first line of each ```sh block under "## Quick start"
mapfile -t commands < <(awk '/^## Quick start/{q=1} q && /^## / && !/Quick start/{q=0} q && prev ~ /^```sh/{print} {prev=$0}' "$repo/README.md")
[ "${#commands[@]}" -eq 2 ] || { echo "expected 2 commands in README's quick start, found ${#commands[@]}" >&2; exit 1; }

{
    echo "== $release: $(in_root '. /etc/os-release; echo $PRETTY_NAME')"
    for cmd in "${commands[@]}"; do
        echo "== $cmd"
        in_root "cd /root/sparselmm && $cmd"
    done
    echo "== versions"
    in_root "cd /root/sparselmm && grep -m1 'define SUITESPARSE_MAIN_VERSION' /usr/include/suitesparse/SuiteSparse_config.h; .nox/tests/bin/python -c 'import sys, sksparse, numpy, scipy; print(sys.version.split()[0], \"scikit-sparse\", sksparse.__version__, \"numpy\", numpy.__version__, \"scipy\", scipy.__version__)'"
    if [ -n "${SCIKIT_SPARSE:-}" ]; then
        echo "== nox -s tests with scikit-sparse $SCIKIT_SPARSE"
        SPARSELMM_SCIKIT_SPARSE=$SCIKIT_SPARSE in_root "cd /root/sparselmm && .venv/bin/nox -s tests"
        in_root "cd /root/sparselmm && .nox/tests/bin/python -c 'import sksparse; print(\"scikit-sparse\", sksparse.__version__)'"
    fi
    echo "== OK"
} 2>&1 | tee "$log"
