#!/usr/bin/env bash
# The browser tier: headless Chromium (Debian's chromium + chromium-driver) drives the ops
# page through selenium. Installs what is missing, then runs the tests marked "browser".
#
#   tests/browser/run.sh [extra pytest arguments]
#
# The screenshot of the ops page lands in $COSTROUTE_BROWSER_ARTIFACTS
# (default /tmp/costroute-browser/ops_page.png).
set -euo pipefail
cd "$(dirname "$0")/../.."

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
CHROMEDRIVER="${CHROMEDRIVER:-/usr/bin/chromedriver}"
if [ ! -x "$CHROMIUM" ] || [ ! -x "$CHROMEDRIVER" ]; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver
fi

PYTHON=python3
[ -x .venv/bin/python ] && PYTHON=.venv/bin/python
"$PYTHON" -c "import selenium" 2>/dev/null || "$PYTHON" -m pip install -q "selenium>=4.20"

export CHROMIUM CHROMEDRIVER
export COSTROUTE_BROWSER_ARTIFACTS="${COSTROUTE_BROWSER_ARTIFACTS:-/tmp/costroute-browser}"
exec "$PYTHON" -m pytest tests/browser -m browser -q -p no:cacheprovider "$@"
