#!/usr/bin/env bash
# Install and start what docker-dna needs on a Debian host, then make .venv.
# Safe to run again: it only installs what is missing and starts dockerd
# only when no daemon answers.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian package -> a file it installs.
declare -A packages=(
    [docker.io]=/usr/sbin/dockerd
    [nginx]=/usr/sbin/nginx
    [busybox-static]=/bin/busybox
    [pebble]=/usr/bin/pebble
    [certbot]=/usr/bin/certbot
    [python3-certbot-nginx]=/usr/lib/python3/dist-packages/certbot_nginx
    [docker-registry]=/usr/bin/docker-registry
)
missing=()
for package in "${!packages[@]}"; do
    [ -e "${packages[$package]}" ] || missing+=("$package")
done
# busybox-static must be the static build: test images copy it into FROM scratch.
if [ -e /bin/busybox ] && ! file -L /bin/busybox 2>/dev/null | grep -q "statically linked"; then
    if ldd /bin/busybox >/dev/null 2>&1; then missing+=(busybox-static); fi
fi
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: missing Debian packages: ${missing[*]}; install them as root" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

if ! docker info >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: the Docker daemon is not running; start dockerd as root" >&2
        exit 1
    fi
    echo "setup: starting dockerd (log: /var/log/dockerd.log)"
    nohup dockerd >/var/log/dockerd.log 2>&1 &
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 0.5
    done
    if ! docker info >/dev/null 2>&1; then
        echo "setup: dockerd did not start; see /var/log/dockerd.log:" >&2
        tail -n 20 /var/log/dockerd.log >&2
        exit 1
    fi
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[flask,falcon,bottle,test,dev]'
echo "setup: ready (docker $(docker version --format '{{.Server.Version}}' 2>/dev/null), $(nginx -v 2>&1))"
