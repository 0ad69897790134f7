#!/bin/sh
# Install Debian's nginx for the buffering-proxy test (tests/reliability/test_nginx.py).
#
# The test starts its own nginx on loopback with a private config, so the
# package's service must not start: a policy-rc.d that denies service starts is
# put in place for the install unless the machine already has one.
# Usage: sudo scripts/install_nginx.sh   (Debian/Ubuntu, as root)
set -eu

if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
    echo "nginx already installed: $(/usr/sbin/nginx -v 2>&1)"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install_nginx.sh: run as root (apt-get install)" >&2
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
apt-get install -y -qq --no-install-recommends nginx-light >/dev/null 2>&1 \
    || apt-get install -y -qq --no-install-recommends nginx >/dev/null
echo "installed: $(/usr/sbin/nginx -v 2>&1)"
