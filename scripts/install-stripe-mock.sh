#!/usr/bin/env bash
# Installs Stripe's stripe-mock (the stateless mock of the Stripe API built from its OpenAPI
# spec) into .tools/bin for the payout tests and bench/treasury.py, with `go install` at a pinned
# version. Order: STRIPE_MOCK_BIN or a stripe-mock already on PATH, then `go install`.
set -euo pipefail
VERSION="${STRIPE_MOCK_VERSION:-v0.203.0}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/.tools/bin"
mkdir -p "$DEST"

if [[ -n "${STRIPE_MOCK_BIN:-}" && -x "${STRIPE_MOCK_BIN}" ]]; then
  ln -sf "$STRIPE_MOCK_BIN" "$DEST/stripe-mock"
  echo "stripe-mock: using $STRIPE_MOCK_BIN"
  exit 0
fi
if found="$(command -v stripe-mock 2>/dev/null)" && [[ "$found" != "$DEST/stripe-mock" ]]; then
  ln -sf "$found" "$DEST/stripe-mock"
  echo "stripe-mock: using $found"
  exit 0
fi
GO="$(command -v go || true)"
[[ -z "$GO" && -x /usr/local/go/bin/go ]] && GO=/usr/local/go/bin/go
if [[ -z "$GO" ]]; then
  echo "stripe-mock: Go is needed to install it (go install github.com/stripe/stripe-mock@$VERSION)" >&2
  exit 1
fi
GOBIN="$DEST" GOFLAGS="${GOFLAGS:-} -mod=mod" "$GO" install "github.com/stripe/stripe-mock@$VERSION"
echo "stripe-mock $VERSION installed in $DEST"
