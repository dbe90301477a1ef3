#!/usr/bin/env bash
# Install the test-only tools at pinned versions into the shatag tools directory, built from the
# Go module proxy. Idempotent: a tool whose binary already reports its pin is skipped (a run with
# everything present takes well under a second), and concurrent runs wait for each other per tool.
# One line per tool on stderr (what, how long, the log file); the full `go` output goes to
# $SHATAG_TOOLS_DIR/logs/<tool>.log and is shown only on failure; a progress line every 30 s.
# Prints the bin directory on stdout (put it on PATH).
#
#   bash ci/install-tools.sh                  cosign and syft (for `inv build --sign` and the SBOM)
#   bash ci/install-tools.sh TOOL...          any of: cosign syft actionlint buildx caddy tofu helm
#   bash ci/install-tools.sh all              every tool above (the README's test command)
#   bash ci/install-tools.sh kubernetes       runs ci/install-kubernetes.sh (for a nox session)
#
# The product never requires these tools (missing cosign → signature_status=unverified,
# signature_reason=tool_missing; missing syft → sbom_status=tool_missing); the tests do.
#
#   SHATAG_TOOLS_DIR   tools root (default ~/.cache/shatag/tools); binaries go to its bin/
#   COSIGN_VERSION SYFT_VERSION ACTIONLINT_VERSION BUILDX_VERSION CADDY_VERSION TOFU_VERSION
#   HELM_VERSION       override a pin (keep the module paths' major version in step)
set -euo pipefail

COSIGN_VERSION="${COSIGN_VERSION:-v2.6.5}"
SYFT_VERSION="${SYFT_VERSION:-v1.57.1}"
ACTIONLINT_VERSION="${ACTIONLINT_VERSION:-v1.7.12}"
BUILDX_VERSION="${BUILDX_VERSION:-v0.38.2}"
CADDY_VERSION="${CADDY_VERSION:-v2.11.9}"
TOFU_VERSION="${TOFU_VERSION:-v1.10.10}"
HELM_VERSION="${HELM_VERSION:-v4.3.2}"
ALL_TOOLS=(cosign syft actionlint buildx caddy tofu helm)

tools_dir="${SHATAG_TOOLS_DIR:-$HOME/.cache/shatag/tools}"
bin_dir="$tools_dir/bin"
log_dir="$tools_dir/logs"
STEP_PREFIX="install-tools"
# shellcheck source=ci/steps.sh
. "$(dirname "$0")/steps.sh"

if ! command -v go >/dev/null 2>&1; then
  for candidate in /usr/local/go/bin/go /usr/lib/go/bin/go; do
    if [ -x "$candidate" ]; then PATH="$(dirname "$candidate"):$PATH"; break; fi
  done
fi
mkdir -p "$bin_dir" "$log_dir"

# module_version BINARY MODULE → the version of MODULE the Go binary was built from, or "".
module_version() {
  [ -x "$1" ] && command -v go >/dev/null 2>&1 || return 0
  go version -m "$1" 2>/dev/null | awk -v m="$2" '$1 == "mod" && $2 == m { print $3 }'
}

# installed TOOL → the pinned version if the binary in $bin_dir is that version, else "".
installed() {
  local b="$bin_dir/$1"
  case "$1" in
    cosign) [ "$(module_version "$b" github.com/sigstore/cosign/v2)" = "$COSIGN_VERSION" ] ;;
    syft) [ "$(module_version "$b" github.com/anchore/syft)" = "$SYFT_VERSION" ] ;;
    actionlint) [ "$(module_version "$b" github.com/rhysd/actionlint)" = "$ACTIONLINT_VERSION" ] ;;
    buildx) [ "$(module_version "$b" github.com/docker/buildx)" = "$BUILDX_VERSION" ] ;;
    # The proxy image is FROM scratch: the binary must be static (built with CGO_ENABLED=0).
    # (Outputs are captured before grep: with pipefail, grep -q closing the pipe early would fail.)
    caddy) [ "$(module_version "$b" github.com/caddyserver/caddy/v2)" = "$CADDY_VERSION" ] \
      && grep -q 'CGO_ENABLED=0' <<<"$(go version -m "$b")" ;;
    # A build without the release flag says "-dev" after the same version: also the pinned source.
    tofu) [ -x "$b" ] && grep -Eqx "OpenTofu ${TOFU_VERSION//./\\.}(-dev)?" \
      <<<"$("$b" version 2>/dev/null | sed -n 1p)" ;;
    helm) [ "$(module_version "$b" helm.sh/helm/v4)" = "$HELM_VERSION" ] ;;
    *) return 1 ;;
  esac
}

go_install() { # MODULE@VERSION [ENV=VALUE...]
  local target="$1"
  shift
  env GOBIN="$bin_dir" GOFLAGS=-buildvcs=false "$@" go install -v "$target"
}

# OpenTofu's go.mod has replace directives, so `go install` refuses it: download the module and
# build ./cmd/tofu inside it (the module cache is read-only; the binary is written outside it).
build_tofu() {
  local dir
  dir="$(go mod download -json "github.com/opentofu/opentofu@$TOFU_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
  [ -d "$dir" ] || { echo "go mod download gave no directory for $TOFU_VERSION"; return 1; }
  (cd "$dir" && CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=mod" go build -v -trimpath \
    -ldflags "-s -w -X github.com/opentofu/opentofu/version.dev=no" -o "$bin_dir/tofu" ./cmd/tofu)
  "$bin_dir/tofu" version
}

install_tool() {
  local tool="$1" started version log="$log_dir/$1.log"
  started="$(now_ms)"
  case "$tool" in
    kubernetes)
      local script
      script="$(dirname "$0")/install-kubernetes.sh"
      [ -f "$script" ] || { say "kubernetes: $script does not exist"; exit 1; }
      bash "$script" >/dev/null
      return 0
      ;;
    cosign) version="$COSIGN_VERSION" ;;
    syft) version="$SYFT_VERSION" ;;
    actionlint) version="$ACTIONLINT_VERSION" ;;
    buildx) version="$BUILDX_VERSION" ;;
    caddy) version="$CADDY_VERSION" ;;
    tofu) version="$TOFU_VERSION" ;;
    helm) version="$HELM_VERSION" ;;
    *) say "unknown tool '$tool' (known: ${ALL_TOOLS[*]} all kubernetes)"; exit 2 ;;
  esac
  # The buildx plugin binary is only for the BuildKit-path tests where the docker CLI has none
  # (Debian's docker.io). It is not installed as a plugin: the tests point DOCKER_CONFIG at a
  # directory that links it, so the machine's default builder is unchanged.
  if [ "$tool" = buildx ] && docker buildx version >/dev/null 2>&1; then
    done_line "buildx: the docker CLI has it, nothing to install" "$started"
    return 0
  fi
  if installed "$tool"; then
    done_line "$tool $version: present" "$started"
    return 0
  fi
  if ! command -v go >/dev/null 2>&1; then
    say "$tool $version: Go is needed to build it and is not installed" \
      "(https://go.dev/dl/, or actions/setup-go)"
    exit 1
  fi
  # One build per tool at a time on this machine; a second caller waits, then finds it present.
  exec {lock}>"$tools_dir/.$tool.lock"
  flock "$lock"
  if installed "$tool"; then
    flock -u "$lock"
    done_line "$tool $version: present (built meanwhile by another run)" "$started"
    return 0
  fi
  case "$tool" in
    cosign) step "$log" "cosign $version (go install, ~4 min cold)" \
      go_install "github.com/sigstore/cosign/v2/cmd/cosign@$version" CGO_ENABLED=0 ;;
    syft) step "$log" "syft $version (go install, ~4 min cold)" \
      go_install "github.com/anchore/syft/cmd/syft@$version" CGO_ENABLED=0 ;;
    actionlint) step "$log" "actionlint $version (go install, ~1 min cold)" \
      go_install "github.com/rhysd/actionlint/cmd/actionlint@$version" ;;
    buildx) step "$log" "buildx $version plugin binary (go install, ~3 min cold)" \
      go_install "github.com/docker/buildx/cmd/buildx@$version" ;;
    caddy) step "$log" "caddy $version static (go install, ~2 min cold)" \
      go_install "github.com/caddyserver/caddy/v2/cmd/caddy@$version" CGO_ENABLED=0 ;;
    tofu) step "$log" "OpenTofu $version (go build ./cmd/tofu, ~3 min cold)" build_tofu ;;
    # For `helm template` in the helm_values chart check (issue 23, item 2).
    helm) step "$log" "helm $version (go install, ~3 min cold)" \
      go_install "helm.sh/helm/v4/cmd/helm@$version" CGO_ENABLED=0 ;;
  esac
  flock -u "$lock"
  if ! installed "$tool"; then
    say "$tool: the built binary does not report $version (log $log)"
    exit 1
  fi
}

tools=("$@")
[ "${#tools[@]}" -gt 0 ] || tools=(cosign syft)
[ "${tools[*]}" != all ] || tools=("${ALL_TOOLS[@]}")
for tool in "${tools[@]}"; do
  install_tool "$tool"
done
printf '%s\n' "$bin_dir"
