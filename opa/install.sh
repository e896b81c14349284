#!/usr/bin/env bash
# Install the pinned OPA binary into the project-local tools folder.
#
# Result: an executable "$TOOLS_DIR/bin/opa" whose `opa version` reports
# "Version: $OPA_VERSION". Idempotent: a second run is a no-op.
#
# Environment:
#   OPA_VERSION  version to install (default 1.22.3, no leading "v")
#   TOOLS_DIR    tools folder (default: <repo>/.tools)
#   OPA_BIN      an existing opa binary to reuse if it has the right version
#   CGO_ENABLED  passed to `go install` (default 0: static build, no Wasm engine)
#
# Sources, first match wins:
#   a) $TOOLS_DIR/bin/opa already at the right version
#   b) $OPA_BIN                                           -> symlink
#   c) `opa` on PATH, ~/go/bin/opa, $(go env GOPATH)/bin/opa -> symlink
#   d) `go install github.com/open-policy-agent/opa@v$OPA_VERSION`
#      into the cache $TOOLS_DIR/go-bin/v$OPA_VERSION      -> symlink
#   e) official release binary from GitHub, checked against its .sha256 file
set -euo pipefail

OPA_VERSION="${OPA_VERSION:-1.22.3}"
OPA_VERSION="${OPA_VERSION#v}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${TOOLS_DIR:-$REPO_ROOT/.tools}"
BIN_DIR="$TOOLS_DIR/bin"
TARGET="$BIN_DIR/opa"

log() { printf 'opa/install.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Print the version an opa binary reports ("" if it does not run).
opa_version_of() {
    local bin="$1" out
    [ -f "$bin" ] && [ -x "$bin" ] || return 0
    out="$("$bin" version 2>/dev/null)" || return 0
    printf '%s\n' "$out" | awk '/^Version:/ { print $2; exit }'
}

has_right_version() {
    [ "$(opa_version_of "$1")" = "$OPA_VERSION" ]
}

abspath() {
    # readlink -f is GNU/BSD-portable enough for files that exist.
    readlink -f -- "$1" 2>/dev/null || printf '%s\n' "$1"
}

# Point $TARGET at $1 (an absolute path to a verified binary).
link_target() {
    local src
    src="$(abspath "$1")"
    mkdir -p "$BIN_DIR"
    ln -sfn -- "$src" "$TARGET.tmp.$$"
    mv -f -- "$TARGET.tmp.$$" "$TARGET"
}

finish() {
    has_right_version "$TARGET" || die "installed $TARGET but it does not report Version: $OPA_VERSION"
    log "$TARGET -> $(abspath "$TARGET") (Version: $OPA_VERSION, via $1)"
    exit 0
}

# --- a) already installed ---------------------------------------------------
if has_right_version "$TARGET"; then
    log "$TARGET already at Version: $OPA_VERSION"
    exit 0
fi
if [ -e "$TARGET" ] || [ -L "$TARGET" ]; then
    log "replacing $TARGET (reports version '$(opa_version_of "$TARGET")', want $OPA_VERSION)"
    rm -f -- "$TARGET"
fi

# --- b) explicit OPA_BIN -----------------------------------------------------
if [ -n "${OPA_BIN:-}" ]; then
    if has_right_version "$OPA_BIN"; then
        link_target "$OPA_BIN"
        finish "OPA_BIN"
    fi
    log "OPA_BIN=$OPA_BIN does not report Version: $OPA_VERSION; ignoring it"
fi

# --- c) an opa that is already on this machine ------------------------------
candidates=()
if command -v opa >/dev/null 2>&1; then
    candidates+=("$(command -v opa)")
fi
candidates+=("${HOME:-/nonexistent}/go/bin/opa")
if command -v go >/dev/null 2>&1; then
    gopath="$(go env GOPATH 2>/dev/null || true)"
    # GOPATH may be a list; check the bin folder of each entry.
    IFS=':' read -r -a gopath_entries <<<"${gopath:-}"
    for entry in "${gopath_entries[@]}"; do
        [ -n "$entry" ] && candidates+=("$entry/bin/opa")
    done
fi
for cand in "${candidates[@]}"; do
    # Never link the target to itself (e.g. when $BIN_DIR is on PATH).
    [ "$(abspath "$cand")" = "$(abspath "$TARGET")" ] && continue
    if has_right_version "$cand"; then
        link_target "$cand"
        finish "existing binary $cand"
    fi
done

# --- d) go install into a cache folder --------------------------------------
if command -v go >/dev/null 2>&1; then
    gobin="$TOOLS_DIR/go-bin/v$OPA_VERSION"
    if ! has_right_version "$gobin/opa"; then
        mkdir -p "$gobin"
        log "building OPA v$OPA_VERSION with 'go install' (takes a few minutes)..."
        if GOBIN="$gobin" CGO_ENABLED="${CGO_ENABLED:-0}" \
            go install "github.com/open-policy-agent/opa@v$OPA_VERSION" >&2; then
            :
        else
            log "'go install github.com/open-policy-agent/opa@v$OPA_VERSION' failed"
        fi
    fi
    if has_right_version "$gobin/opa"; then
        link_target "$gobin/opa"
        finish "go install (cache $gobin)"
    fi
else
    log "go not found; skipping 'go install'"
fi

# --- e) official release binary, checksum-verified ---------------------------
os="$(uname -s)"
arch="$(uname -m)"
case "$os/$arch" in
    Linux/x86_64 | Linux/amd64) asset="opa_linux_amd64_static" ;;
    Linux/aarch64 | Linux/arm64) asset="opa_linux_arm64_static" ;;
    Darwin/x86_64) asset="opa_darwin_amd64" ;;
    Darwin/arm64) asset="opa_darwin_arm64_static" ;;
    *) die "no OPA release binary for $os/$arch; install Go and rerun, or set OPA_BIN" ;;
esac
url="https://github.com/open-policy-agent/opa/releases/download/v$OPA_VERSION/$asset"

fetch() { # fetch URL FILE
    if command -v curl >/dev/null 2>&1; then
        curl -fsSL --retry 2 --connect-timeout 15 -o "$2" "$1"
    elif command -v wget >/dev/null 2>&1; then
        wget -q -T 15 -O "$2" "$1"
    else
        log "neither curl nor wget found"
        return 1
    fi
}
sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum -- "$1" | awk '{ print $1 }'
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 -- "$1" | awk '{ print $1 }'
    else
        return 1
    fi
}

dl_dir="$TOOLS_DIR/download/v$OPA_VERSION"
mkdir -p "$dl_dir"
log "downloading $url"
if fetch "$url" "$dl_dir/$asset.part" && fetch "$url.sha256" "$dl_dir/$asset.sha256"; then
    want="$(awk '{ print tolower($1); exit }' "$dl_dir/$asset.sha256")"
    got="$(sha256_of "$dl_dir/$asset.part")" || die "no sha256sum/shasum to verify the download"
    if [ -z "$want" ] || [ "$want" != "$got" ]; then
        rm -f -- "$dl_dir/$asset.part"
        die "checksum mismatch for $asset: expected '$want', got '$got'"
    fi
    chmod 0755 "$dl_dir/$asset.part"
    mv -f -- "$dl_dir/$asset.part" "$dl_dir/opa"
    if has_right_version "$dl_dir/opa"; then
        link_target "$dl_dir/opa"
        finish "release download (sha256 $got)"
    fi
    die "downloaded $asset does not report Version: $OPA_VERSION"
fi
rm -f -- "$dl_dir/$asset.part"

die "could not install OPA v$OPA_VERSION: no suitable binary in OPA_BIN, on PATH or in GOPATH/bin;
  'go install' was unavailable or failed; and the release download from $url failed.
  Fix one of these: install Go (>= the version OPA's go.mod needs) and rerun,
  or point OPA_BIN at an opa $OPA_VERSION binary."
