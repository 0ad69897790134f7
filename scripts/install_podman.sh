#!/bin/sh
# Install Debian's podman toolchain for the container tests (tests/deploy/test_container*.py)
# and apply the two host settings this CI machine needs. Not needed by users: they build with
# `make image` / `make docker-serve` on their own Docker or podman.
#
#   podman, buildah, runc   build and run OCI images without a Docker engine
#   mmdebstrap              builds the local stand-in base image (scripts/container-base.sh)
#   netavark, aardvark-dns, iptables   the compose test's bridge network, service-name DNS
#                           and published loopback ports
#   catatonit               the pause process of `podman kube play`'s pods (no registry pull)
#   podman-compose          runs deploy/docker-compose.yml
#
# Host settings, written to a containers.conf drop-in of their own (nothing else is changed):
#   - default_ulimits = []  this machine's container cannot raise the nofile limit podman asks
#                           for by default, so every `podman run` would fail;
#   - runtime = "runc"      crun refuses this machine's cgroup v1 + v2 hybrid setup.
# Both are for this machine's own runtime only; they are not part of the project's images.
#
# Usage: sudo scripts/install_podman.sh   (Debian bookworm, as root; idempotent)
set -eu

if [ "$(id -u)" -ne 0 ]; then
    echo "install_podman.sh: run as root (apt-get install, /etc/containers)" >&2
    exit 1
fi

packages="podman buildah runc mmdebstrap netavark aardvark-dns iptables catatonit podman-compose uidmap"
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # No recommends: no dbus user session, no fuse-overlayfs (root uses the kernel's overlay).
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

conf_dir=/etc/containers/containers.conf.d
mkdir -p "$conf_dir"
cat >"$conf_dir/50-dlqr-ci.conf" <<'EOF'
# Written by dlqr-serving's scripts/install_podman.sh for its CI machine.
[containers]
# The CI container cannot raise RLIMIT_NOFILE to podman's default.
default_ulimits = []

[engine]
# crun refuses this machine's hybrid cgroup v1/v2 setup; runc works.
runtime = "runc"
EOF

echo "installed: $(podman --version), $(buildah --version | cut -d' ' -f1-3), $(runc --version | head -n 1)"
