#!/usr/bin/env bash
# Renders a report (or any local HTML page) to a PNG with Debian's headless
# Chromium, installing it when missing (apt, as root or with sudo). Offline:
# the page is self-contained, and networking is not needed.
#   Cluster/dev/screenshot.sh REPORT.html OUT.png [WIDTHxHEIGHT]
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 REPORT.html OUT.png [WIDTHxHEIGHT]" >&2; exit 2; }
page=$1 out=$2 size=${3:-1280x2600}
[ -f "$page" ] || { echo "screenshot: $page: no such file" >&2; exit 1; }
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
  echo "screenshot: installing Debian's chromium (about 300 MB)" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
  browser=$(command -v chromium)
fi
abs=$(cd "$(dirname "$page")" && pwd)/$(basename "$page")
outabs=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
# --no-sandbox: root in a container has no user namespaces for the sandbox; the page is our own file.
timeout 120 "$browser" --headless=new --no-sandbox --disable-gpu --hide-scrollbars --disable-extensions \
  --window-size="${size/x/,}" --screenshot="$outabs" "file://$abs" >/dev/null 2>&1
[ -s "$outabs" ] || { echo "screenshot: $browser wrote no image" >&2; exit 1; }
echo "wrote $out"
