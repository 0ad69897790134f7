#!/bin/sh
# Build a local TEST STAND-IN for the python:3.11-slim-bookworm base image and import it
# into podman, for machines that cannot pull from a registry (this project's CI).
#
# Users build Dockerfile.serve FROM the official python:3.11-slim-bookworm (its default
# PYTHON_IMAGE). The container tests build it FROM this image instead:
#   podman build --build-arg PYTHON_IMAGE=localhost/dlqr-pybase:bookworm -f Dockerfile.serve .
#
# What it matches of the official image (all that Dockerfile.serve relies on):
#   - Debian bookworm with Python 3.11 (Debian's python3, python3-venv for `python3 -m venv`);
#   - `python3` and `pip` on the PATH in /usr/local/bin, like the official image; pip and
#     setuptools installed (from Debian's own wheels, offline) into /usr/local, so that
#     `python3 -m pip uninstall pip setuptools wheel` removes them as it does in the official
#     image; Debian's EXTERNALLY-MANAGED marker is removed so that pip may run;
#   - ca-certificates for the package index; PATH/LANG/CMD like the official image.
# Nothing else: no compiler, no curl, no build tools. It is not the official image: its Python
# is Debian's (3.11.2 plus Debian patches, in /usr/bin, linked from /usr/local/bin), not
# python.org's build in /usr/local, and it has no `wheel` package.
#
# Debian packages come from this machine's own apt sources (the deb822 file, or sources.list),
# so the base uses the same mirror as the host; set DLQR_DEBIAN_MIRROR to override.
#
# Idempotent: an image already built by this same script is kept (its recipe hash is a label).
# Usage: scripts/container-base.sh [--force]   (root; needs podman and mmdebstrap,
#        see scripts/install_podman.sh)    Env: DLQR_BASE_IMAGE (default below)
set -eu

image="${DLQR_BASE_IMAGE:-localhost/dlqr-pybase:bookworm}"
suite=bookworm
packages="python3,python3-venv,ca-certificates"
recipe="$(sha256sum "$0" | cut -c1-16)"

if [ "${1:-}" != "--force" ] && podman image exists "$image" \
    && [ "$(podman image inspect --format '{{ index .Labels "dlqr.base.recipe" }}' "$image")" = "$recipe" ]; then
    echo "$image is up to date (recipe $recipe)"
    exit 0
fi

if [ -n "${DLQR_DEBIAN_MIRROR:-}" ]; then
    mirror="$DLQR_DEBIAN_MIRROR"
elif [ -s /etc/apt/sources.list.d/debian.sources ]; then
    mirror=/etc/apt/sources.list.d/debian.sources
elif [ -s /etc/apt/sources.list ] && grep -q '^deb ' /etc/apt/sources.list; then
    mirror=/etc/apt/sources.list
else
    mirror=http://deb.debian.org/debian
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# After the packages are installed: what the official image has in /usr/local (mmdebstrap runs
# this with the root directory as $1). pip installs Debian's own pip and setuptools wheels offline.
setup='set -eu
root="$1"
rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
ln -sf /usr/bin/python3 "$root/usr/local/bin/python3"
ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
pip_whl=$(cd "$root" && echo usr/share/python-wheels/pip-*.whl)
setuptools_whl=$(cd "$root" && echo usr/share/python-wheels/setuptools-*.whl)
chroot "$root" env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root \
    python3 "/$pip_whl/pip" install --quiet --no-index --no-cache-dir --disable-pip-version-check \
    --root-user-action=ignore "/$pip_whl" "/$setuptools_whl"
test -x "$root/usr/local/bin/pip"'

echo "building $image from $mirror ($suite: $packages)"
mmdebstrap --quiet --variant=minbase --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook="$setup" \
    "$suite" "$work/rootfs.tar" "$mirror"

podman import --quiet \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --change "LABEL dlqr.base.recipe=$recipe" \
    --change 'LABEL dlqr.base.note="test stand-in for python:3.11-slim-bookworm (scripts/container-base.sh)"' \
    "$work/rootfs.tar" "$image" >/dev/null
podman image exists "$image"
echo "imported $image: $(podman image inspect --format '{{.Size}}' "$image") bytes"
