#!/bin/sh
# Install Debian's Prometheus (prometheus + promtool) for the deployment tests.
#
# The tests start their own Prometheus on loopback, so the package's service
# must not start: a policy-rc.d that denies service starts is put in place for
# the install unless the machine already has one (Docker images usually do).
# Usage: sudo scripts/install_prometheus.sh   (Debian/Ubuntu, as root)
set -eu

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    echo "prometheus already installed: $(prometheus --version 2>&1 | head -n 1)"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install_prometheus.sh: run as root (apt-get install)" >&2
    exit 1
fi

policy=/usr/sbin/policy-rc.d
created_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    created_policy=1
fi
cleanup() { if [ -n "$created_policy" ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# No recommends: prometheus-node-exporter is not needed to run the tests.
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
echo "installed: $(prometheus --version 2>&1 | head -n 1)"
