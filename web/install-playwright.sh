#!/usr/bin/env bash
# web/install-playwright.sh — makes sure playwright-core, which drives the
# browser in the web console's tests (test/web/console.test.mjs), is installed
# in web/node_modules from the version pinned in web/package.json and
# web/package-lock.json, and prints the path of web/node_modules.  Installs
# nothing globally and never downloads a browser: the tests drive Debian's
# chromium package.
set -euo pipefail
cd "$(dirname "$0")"

WANT=$(jq -r '.packages["node_modules/playwright-core"].version' package-lock.json)
HAVE=$(jq -r .version node_modules/playwright-core/package.json 2>/dev/null || true)

if [ "$HAVE" != "$WANT" ]; then
    command -v npm >/dev/null || { echo "install-playwright.sh: npm is needed (Debian package npm)" >&2; exit 1; }
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >&2
    HAVE=$(jq -r .version node_modules/playwright-core/package.json)
    [ "$HAVE" = "$WANT" ] || { echo "install-playwright.sh: playwright-core $HAVE is not $WANT" >&2; exit 1; }
fi
echo "$(pwd)/node_modules"
