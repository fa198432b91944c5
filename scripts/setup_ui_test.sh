#!/usr/bin/env bash
# Installs what the browser UI test needs: Debian's chromium (Playwright's own browser download
# does not work here). Idempotent: returns at once when chromium exists.
set -euo pipefail

CHROMIUM="${DANGO_CHROMIUM:-/usr/bin/chromium}"

if [ -x "$CHROMIUM" ]; then
    echo "setup_ui_test: chromium present: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "setup_ui_test: $CHROMIUM is missing and this is not root (no sudo):" >&2
        echo "  install Debian's chromium (apt-get install chromium) or set DANGO_CHROMIUM" >&2
        exit 1
    fi
fi

echo "setup_ui_test: installing Debian's chromium with apt-get"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
"$CHROMIUM" --version
