#!/usr/bin/env bash
# Installs the system packages the test suite needs when they are missing: a PostgreSQL server
# (tests start their own throwaway cluster with it), Chromium (pages are tested in it) and the
# DejaVu fonts (PDF documents with names outside Latin-1 embed DejaVu Sans).
set -euo pipefail
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf ] || need+=(fonts-dejavu-core)
if [ ${#need[@]} -eq 0 ]; then
  echo "system packages present: postgresql, chromium, fonts-dejavu-core"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing: ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "installed: ${need[*]}"
