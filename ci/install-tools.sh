#!/usr/bin/env bash
# Install cosign and syft at pinned versions with `go install` into the shatag tools directory.
# Idempotent: a tool whose binary already reports the pinned module version is skipped.
# Prints the bin directory on stdout (put it on PATH); progress goes to stderr.
# The product never requires these tools (missing cosign → signature_status=unverified,
# signature_reason=tool_missing; missing syft → sbom_status=tool_missing); the tests do.
#
#   SHATAG_TOOLS_DIR   tools root (default ~/.cache/shatag/tools); binaries go to $SHATAG_TOOLS_DIR/bin
#   COSIGN_VERSION / SYFT_VERSION   override the pins (keep the module paths' major version in step)
set -euo pipefail

COSIGN_MODULE="github.com/sigstore/cosign/v2/cmd/cosign"
COSIGN_VERSION="${COSIGN_VERSION:-v2.6.5}"
SYFT_MODULE="github.com/anchore/syft/cmd/syft"
SYFT_VERSION="${SYFT_VERSION:-v1.57.1}"

tools_dir="${SHATAG_TOOLS_DIR:-$HOME/.cache/shatag/tools}"
bin_dir="$tools_dir/bin"
log() { printf 'install-tools: %s\n' "$*" >&2; }

if ! command -v go >/dev/null 2>&1; then
  for candidate in /usr/local/go/bin/go /usr/lib/go/bin/go; do
    if [ -x "$candidate" ]; then PATH="$(dirname "$candidate"):$PATH"; break; fi
  done
fi
mkdir -p "$bin_dir"

# installed_version BINARY MODULE_PATH → the module version the binary was built from, or "".
installed_version() {
  local binary="$1" module="$2"
  [ -x "$binary" ] || return 0
  command -v go >/dev/null 2>&1 || return 0
  go version -m "$binary" 2>/dev/null | awk -v m="$module" '$1 == "mod" && $2 == m { print $3 }'
}

install_one() {
  local name="$1" module="$2" version="$3" main_module="$4"
  local have
  have="$(installed_version "$bin_dir/$name" "$main_module")"
  if [ "$have" = "$version" ]; then
    log "$name $version already installed"
    return 0
  fi
  if ! command -v go >/dev/null 2>&1; then
    log "Go is not available: cannot install $name $version (the product runs without it)"
    return 0
  fi
  log "installing $name $version (go install $module@$version; takes a few minutes)"
  GOBIN="$bin_dir" CGO_ENABLED=0 go install "$module@$version"
  have="$(installed_version "$bin_dir/$name" "$main_module")"
  if [ "$have" != "$version" ]; then
    log "$name reports version '${have:-unknown}' after install, expected $version"
    return 1
  fi
}

install_one cosign "$COSIGN_MODULE" "$COSIGN_VERSION" "github.com/sigstore/cosign/v2"
install_one syft "$SYFT_MODULE" "$SYFT_VERSION" "github.com/anchore/syft"

printf '%s\n' "$bin_dir"
