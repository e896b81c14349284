#!/usr/bin/env bash
# Install the Regal linter (github.com/open-policy-agent/regal) into .tools/bin when possible.
#
# Regal is optional: `make policy-check` runs it when this script managed to install it and
# says so when it did not. Sources, first match wins:
#   a) $TOOLS_DIR/bin/regal already at REGAL_VERSION
#   b) $REGAL_BIN, or `regal` on PATH, at REGAL_VERSION       -> symlink
#   c) `go install github.com/open-policy-agent/regal@vREGAL_VERSION` (Go module proxy)
#   d) the release binary from GitHub (linux/darwin, amd64/arm64)
# Exit status: 0 when installed, 3 when it could not be (never fails the build by itself).
set -uo pipefail

REGAL_VERSION="${REGAL_VERSION:-0.42.0}"
REGAL_VERSION="${REGAL_VERSION#v}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${TOOLS_DIR:-$REPO_ROOT/.tools}"
BIN_DIR="$TOOLS_DIR/bin"
TARGET="$BIN_DIR/regal"
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"

log() { printf 'scripts/install-regal.sh: %s\n' "$*" >&2; }

version_of() {
    [ -x "$1" ] || return 0
    "$1" version 2>/dev/null | awk '/^Version:/ { sub(/^v/, "", $2); print $2; exit }'
}

mkdir -p "$BIN_DIR"
if [ "$(version_of "$TARGET")" = "$REGAL_VERSION" ]; then
    exit 0
fi
for candidate in "${REGAL_BIN:-}" "$(command -v regal 2>/dev/null || true)"; do
    if [ -n "$candidate" ] && [ "$(version_of "$candidate")" = "$REGAL_VERSION" ]; then
        ln -sf "$candidate" "$TARGET"
        log "using $candidate"
        exit 0
    fi
done

if [ -x "$GO" ]; then
    cache="$TOOLS_DIR/go-bin/regal-v$REGAL_VERSION"
    log "go install github.com/open-policy-agent/regal@v$REGAL_VERSION ..."
    if GOBIN="$cache" CGO_ENABLED=0 "$GO" install "github.com/open-policy-agent/regal@v$REGAL_VERSION" 2>"$TOOLS_DIR/regal-install.log"; then
        ln -sf "$cache/regal" "$TARGET"
        log "installed $(version_of "$TARGET")"
        exit 0
    fi
    log "go install failed: $(tail -1 "$TOOLS_DIR/regal-install.log")"
fi

os="$(uname -s)"; arch="$(uname -m)"
case "$arch" in x86_64|amd64) arch=x86_64 ;; aarch64|arm64) arch=arm64 ;; esac
url="https://github.com/open-policy-agent/regal/releases/download/v$REGAL_VERSION/regal_${os}_${arch}"
if command -v curl >/dev/null 2>&1 && curl -fsSL --max-time 60 -o "$TARGET.tmp" "$url" 2>/dev/null; then
    chmod 755 "$TARGET.tmp" && mv "$TARGET.tmp" "$TARGET"
    if [ "$(version_of "$TARGET")" = "$REGAL_VERSION" ]; then
        log "downloaded $url"
        exit 0
    fi
    rm -f "$TARGET"
fi
rm -f "$TARGET.tmp"
log "Regal $REGAL_VERSION could not be installed (no Go module proxy access, no download); lint skipped"
exit 3
