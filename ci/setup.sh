#!/usr/bin/env bash
# Idempotent set-up on a Debian/Ubuntu machine, as root or with sudo (issue 18).
#
#   bash ci/setup.sh           what the demo needs, nothing more (no Go, no build from source):
#                              Docker Engine + a running daemon where missing, the CNCF registry
#                              (Debian docker-registry), static busybox, uv and .venv (the package)
#   bash ci/setup.sh --tests   the above, plus the test-only tools: .venv gets the dev groups
#                              (nox, pytest, ruff, mypy…), Debian packages of TEST_APT_PACKAGES,
#                              the pinned Go-built tools (ci/install-tools.sh all) and, where
#                              present, the Kubernetes binaries (ci/install-kubernetes.sh)
#
# Detects, never assumes: installs only what is missing, starts dockerd only if no daemon answers.
# One line per step on stderr (what, how long, the log file); full apt/uv/go output goes to the
# log (build/setup/*.log here, $SHATAG_TOOLS_DIR/logs/*.log for the tools), shown on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=demo
case "${1:-}" in
  "") ;;
  --tests) MODE=tests ;;
  *) echo "usage: bash ci/setup.sh [--tests]" >&2; exit 2 ;;
esac

# Debian packages only the test suite needs (the Kubernetes cluster of issue 16: containerd + runc,
# certificates with openssl, iptables to save/restore the kubelet's chains; git-lfs for the build
# tests that fill Git LFS pointers, issue 24). Each is installed only when its command is missing
# (a runner with Docker's containerd.io already has containerd).
TEST_APT_PACKAGES=(containerd runc openssl iptables git-lfs chromium)
declare -A APT_COMMAND=([docker.io]=docker [docker-registry]=docker-registry [git]=git
  [containerd]=containerd [runc]=runc [openssl]=openssl [iptables]=iptables-save)
UV_VERSION=0.13.9

STEP_PREFIX=setup
# shellcheck source=ci/steps.sh
. ci/steps.sh
LOGS=build/setup
tools_dir="${SHATAG_TOOLS_DIR:-$HOME/.cache/shatag/tools}"
setup_started="$(now_ms)"
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

static_busybox() { # the first static busybox on this machine, or ""
  local candidate
  for candidate in /bin/busybox /usr/bin/busybox; do
    if [ -x "$candidate" ] && ! ldd "$candidate" >/dev/null 2>&1; then echo "$candidate"; return; fi
  done
}

# --- Debian packages ------------------------------------------------------------------------------
started="$(now_ms)"
missing=()
for pkg in docker-registry git; do
  command -v "${APT_COMMAND[$pkg]}" >/dev/null 2>&1 || missing+=("$pkg")
done
# Docker: a CLI and a daemon that answers, or dockerd to start one (GitHub runners and laptops
# have Docker already; then nothing is installed).
if ! command -v docker >/dev/null 2>&1 \
  || { ! docker info >/dev/null 2>&1 && ! command -v dockerd >/dev/null 2>&1; }; then
  missing+=(docker.io)
fi
[ -n "$(static_busybox)" ] || missing+=(busybox-static)
# uv comes from PyPI with python3's pip, or into a private venv: that needs python3's venv module.
if ! command -v uv >/dev/null 2>&1 && [ ! -x "$tools_dir/bin/uv" ] \
  && ! python3 -m pip --version >/dev/null 2>&1 \
  && ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
if [ "$MODE" = tests ]; then
  for pkg in "${TEST_APT_PACKAGES[@]}"; do
    command -v "${APT_COMMAND[$pkg]:-$pkg}" >/dev/null 2>&1 || missing+=("$pkg")
  done
fi
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends "$@"
}
if [ "${#missing[@]}" -gt 0 ]; then
  step "$LOGS/apt.log" "apt-get install ${missing[*]}" apt_install "${missing[@]}"
else
  done_line "Debian packages: present" "$started"
fi

# --- Docker daemon: reuse one that answers; otherwise start dockerd in the background -----------
started="$(now_ms)"
start_dockerd() {
  $SUDO sh -c 'nohup setsid dockerd >/var/log/shatag-dockerd.log 2>&1 </dev/null &'
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return 0
    sleep 1
  done
  echo "dockerd did not answer within 60 s; its log:"
  tail -n 40 /var/log/shatag-dockerd.log
  return 1
}
if docker info >/dev/null 2>&1; then
  done_line "Docker $(docker version --format '{{.Server.Version}}'): daemon answers" "$started"
elif grep -qi 'permission denied' <<<"$(docker info 2>&1)"; then
  say "Docker: the daemon runs, but $(id -un) may not use it; run" \
    "\`sudo usermod -aG docker $(id -un)\`, log in again, and re-run this command"
  exit 1
elif [ "$(id -u)" != 0 ] && [ -z "$SUDO" ]; then
  say "Docker: no daemon answers, and starting dockerd needs root (or sudo)"
  exit 1
else
  step "$LOGS/dockerd.log" "start dockerd (its own log: /var/log/shatag-dockerd.log)" start_dockerd
fi

# --- the example API's context gets a static busybox (no base image can be pulled here) ----------
started="$(now_ms)"
busybox="$(static_busybox)"
mkdir -p examples/api/bin
cmp -s "$busybox" examples/api/bin/busybox || cp "$busybox" examples/api/bin/busybox
done_line "static busybox: $busybox → examples/api/bin/busybox" "$started"

# --- uv: the one on PATH, else a pinned copy from PyPI under the tools directory ----------------
started="$(now_ms)"
install_uv() { # pip --target where python3 has pip (no venv to create), else a private venv
  rm -rf "$tools_dir/uv-pkg"
  if python3 -m pip --version >/dev/null 2>&1; then
    python3 -m pip install --disable-pip-version-check --no-compile --target "$tools_dir/uv-pkg" \
      "uv==$UV_VERSION"
  else
    python3 -m venv "$tools_dir/uv-pkg"
    "$tools_dir/uv-pkg/bin/python" -m pip install --disable-pip-version-check "uv==$UV_VERSION"
  fi
  mkdir -p "$tools_dir/bin"
  ln -sf "$tools_dir/uv-pkg/bin/uv" "$tools_dir/bin/uv"
}
if command -v uv >/dev/null 2>&1; then
  UV="$(command -v uv)"
  done_line "uv $("$UV" --version | cut -d' ' -f2): present" "$started"
else
  UV="$tools_dir/bin/uv"
  if [ "$("$UV" --version 2>/dev/null | cut -d' ' -f2)" = "$UV_VERSION" ]; then
    done_line "uv $UV_VERSION: present" "$started"
  else
    step "$LOGS/uv.log" "uv $UV_VERSION (pip install into $tools_dir/uv-pkg)" install_uv
  fi
fi

# --- .venv: the package (demo) or the package + dev groups (tests); skipped while pyproject.toml
# is unchanged (a stamp per mode; the tests' venv serves the demo too) -----------------------------
started="$(now_ms)"
hash="$(sha256sum pyproject.toml | cut -c1-16)"
want=(".venv/.shatag-setup-$hash-tests")
[ "$MODE" = tests ] || want+=(".venv/.shatag-setup-$hash-demo")
make_venv() {
  [ -x .venv/bin/python ] || "$UV" venv --python 3.11 .venv || "$UV" venv .venv
  local extra=()
  # nox finds uv in its own environment for the sessions' venvs (uv may not be on PATH).
  [ "$MODE" = demo ] || extra=(--group dev "uv==$UV_VERSION")
  # Bytecode compiled at install time: with PYTHONDONTWRITEBYTECODE set (as in some CI
  # environments) every `inv` call would otherwise recompile ~0.4 s of modules.
  UV_COMPILE_BYTECODE=1 "$UV" pip install --python .venv/bin/python -e . "${extra[@]}"
  rm -f .venv/.shatag-setup-*
  touch ".venv/.shatag-setup-$hash-demo"
  [ "$MODE" = demo ] || touch ".venv/.shatag-setup-$hash-tests"
}
ready=""
for stamp in "${want[@]}"; do [ -f "$stamp" ] && ready=1; done
if [ -n "$ready" ]; then
  done_line ".venv: up to date" "$started"
elif [ "$MODE" = tests ]; then
  step "$LOGS/venv.log" ".venv with the dev groups (uv pip install -e . --group dev)" make_venv
else
  step "$LOGS/venv.log" ".venv (uv pip install -e .)" make_venv
fi
# The project's own modules (editable install): compiled too; a no-op when up to date.
.venv/bin/python -m compileall -q src ci tasks.py >/dev/null

# --- test-only tools (pinned, cached in $SHATAG_TOOLS_DIR; each skipped when present) ------------
if [ "$MODE" = tests ]; then
  bash ci/install-tools.sh all >/dev/null
  if [ -f ci/install-kubernetes.sh ]; then
    bash ci/install-kubernetes.sh >/dev/null
  fi
  # Under GitHub Actions, later steps find the tools on PATH.
  if [ -n "${GITHUB_PATH:-}" ]; then
    echo "$tools_dir/bin" >>"$GITHUB_PATH"
  fi
fi

if [ "$MODE" = tests ]; then
  done_line "ready for the test suite: .venv/bin/nox" "$setup_started"
else
  done_line "ready for the demo: .venv/bin/python ci/demo.py" "$setup_started"
fi
