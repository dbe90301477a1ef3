#!/usr/bin/env bash
# Install what the `kubernetes` test session needs for a real single-node cluster (issue 16):
#   - Kubernetes binaries (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
#     kubectl) at a pinned version, built from the Go module proxy;
#   - etcd (Debian etcd-server) and the CNI plugins (Debian containernetworking-plugins), unpacked
#     with `apt-get download` + `dpkg -x` into the tools directory, so no system service starts;
#   - containerd and runc (Debian packages, apt-get install; the launcher ci/kube-cluster runs its
#     own containerd instance with its own socket and root, never the system one).
# Idempotent: a binary already reporting the pinned version is kept (a second run takes seconds).
# Quiet: one line per step with its elapsed time and the log file holding its full output (shown
# when the step fails); a progress line every 30 s during the Go build.
# Prints the bin directory on stdout.
#
#   SHATAG_TOOLS_DIR     tools root (default ~/.cache/shatag/tools); binaries go to $SHATAG_TOOLS_DIR/bin
#   KUBERNETES_VERSION   override the pin (v1.34.x: the last minor whose kubelet still runs on
#                        cgroup v1 with Debian 12's containerd 1.6, see NOTES-kubernetes.md)
set -euo pipefail

KUBERNETES_VERSION="${KUBERNETES_VERSION:-v1.34.4}"
STAGING_VERSION="v0.${KUBERNETES_VERSION#v1.}" # k8s.io/api etc. are tagged v0.<minor>.<patch>
COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)

tools_dir="${SHATAG_TOOLS_DIR:-$HOME/.cache/shatag/tools}"
bin_dir="$tools_dir/bin"
log_dir="$tools_dir/logs"
mkdir -p "$bin_dir" "$log_dir"
SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
if ! command -v go >/dev/null 2>&1; then
  for candidate in /usr/local/go/bin/go /usr/lib/go/bin/go; do
    if [ -x "$candidate" ]; then PATH="$(dirname "$candidate"):$PATH"; break; fi
  done
fi

say() { printf 'install-kubernetes: %s\n' "$*" >&2; }

# step NAME LOGNAME COMMAND... — run COMMAND with its output in $log_dir/LOGNAME.log; one line
# with the elapsed time; on failure the log's tail and a non-zero exit. Long commands print a
# progress line every 30 s.
step() {
  local name="$1" logfile="$log_dir/$2.log"
  shift 2
  local start=$SECONDS pid rc=0 next=30
  "$@" >"$logfile" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if [ $((SECONDS - start)) -ge "$next" ]; then
      say "  ... $name still running, $((SECONDS - start)) s (log: $logfile)"
      next=$((next + 30))
    fi
  done
  wait "$pid" || rc=$?
  if [ "$rc" -ne 0 ]; then
    say "$name FAILED after $((SECONDS - start)) s (exit $rc; log: $logfile); last lines:"
    tail -n 40 "$logfile" >&2
    exit "$rc"
  fi
  say "$name: ok, $((SECONDS - start)) s (log: $logfile)"
}

# --- Kubernetes binaries ---------------------------------------------------------------------
have_version() { # BINARY → the Kubernetes version the binary reports, or ""
  local b="$bin_dir/$1"
  [ -x "$b" ] || return 0
  if [ "$1" = kubectl ]; then
    "$b" version --client 2>/dev/null | awk '/^Client Version:/ { print $3 }'
  else
    "$b" --version 2>/dev/null | awk '{ print $2 }'
  fi
}

missing=()
for c in "${COMPONENTS[@]}"; do
  [ "$(have_version "$c")" = "$KUBERNETES_VERSION" ] || missing+=("$c")
done

# The wrapper module: k8s.io/kubernetes cannot be `go install`ed (its go.mod has replace
# directives pointing at ./staging); a module requiring it, with one replace line per entry of
# its replace block (generated from the downloaded .mod), builds every command.
prepare_module() {
  local dir="$1" modfile
  command -v go >/dev/null 2>&1 || { echo "Go is not installed (needed to build Kubernetes)"; return 1; }
  modfile="$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" \
    | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
  [ -f "$modfile" ] || { echo "no go.mod for k8s.io/kubernetes@$KUBERNETES_VERSION"; return 1; }
  mkdir -p "$dir"
  {
    echo "module shatag.local/kubernetes-tools"
    echo
    echo "go $(awk '$1 == "go" { print $2; exit }' "$modfile")"
    echo
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    echo
    # Each `k8s.io/X => ./staging/src/k8s.io/X` becomes `k8s.io/X => k8s.io/X v0.<minor>.<patch>`.
    awk -v v="$STAGING_VERSION" '
      /^replace \($/ { inblock = 1; next }
      inblock && /^\)$/ { inblock = 0; next }
      inblock && $2 == "=>" { printf "replace %s => %s %s\n", $1, $1, v; n++ }
      /^replace [^(]/ && $3 == "=>" { printf "replace %s => %s %s\n", $2, $2, v; n++ }
      END { if (n == 0) exit 1 }
    ' "$modfile"
  } >"$dir/go.mod"
  echo "replace lines: $(grep -c '^replace ' "$dir/go.mod")"
  cat "$dir/go.mod"
  (cd "$dir" && GOFLAGS=-mod=mod go get \
    $(printf "k8s.io/kubernetes/cmd/%s@$KUBERNETES_VERSION " "${COMPONENTS[@]}"))
}

build_binaries() {
  local dir="$1" pkg="k8s.io/component-base/version" cgo="k8s.io/client-go/pkg/version"
  shift
  local minor="${KUBERNETES_VERSION#v1.}"
  minor="${minor%%.*}"
  local ldflags="-s -w"
  for p in "$pkg" "$cgo"; do
    ldflags+=" -X $p.gitVersion=$KUBERNETES_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  mkdir -p "$dir/out"
  (cd "$dir" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" \
    -o "$dir/out/" $(printf 'k8s.io/kubernetes/cmd/%s ' "$@"))
  for c in "$@"; do install -m 0755 "$dir/out/$c" "$bin_dir/$c"; done
}

if [ "${#missing[@]}" -gt 0 ]; then
  mod_dir="$tools_dir/src/kubernetes-$KUBERNETES_VERSION"
  step "Kubernetes $KUBERNETES_VERSION wrapper module (go mod download)" k8s-module \
    prepare_module "$mod_dir"
  step "Kubernetes $KUBERNETES_VERSION build: ${missing[*]} (cold: 10-40 min on 2 cores, warm: ~2 min)" k8s-build \
    build_binaries "$mod_dir" "${missing[@]}"
  for c in "${COMPONENTS[@]}"; do
    got="$(have_version "$c")"
    if [ "$got" != "$KUBERNETES_VERSION" ]; then
      say "$c reports version '${got:-unknown}' after the build, expected $KUBERNETES_VERSION"
      exit 1
    fi
  done
else
  say "Kubernetes $KUBERNETES_VERSION binaries already installed"
fi

# --- Debian packages ---------------------------------------------------------------------------
apt_install() { # containerd + runc; installing them starts no service here (no systemd), and the
  # launcher never uses the system containerd socket anyway.
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "$@"
}
need_apt=()
command -v containerd >/dev/null 2>&1 || need_apt+=(containerd)
command -v runc >/dev/null 2>&1 || need_apt+=(runc)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v iptables-save >/dev/null 2>&1 || need_apt+=(iptables)
if [ "${#need_apt[@]}" -gt 0 ]; then
  step "apt-get install ${need_apt[*]}" k8s-apt apt_install "${need_apt[@]}"
else
  say "containerd $(containerd --version | awk '{ print $3 }'), runc $(runc --version | awk 'NR == 1 { print $3 }') already installed"
fi

unpack() { # PACKAGE DEST — apt-get download + dpkg -x (no maintainer scripts, no service)
  local pkg="$1" dest="$2" work
  work="$(mktemp -d)"
  (cd "$work" && apt-get download "$pkg" 2>/dev/null || { $SUDO apt-get update -qq && apt-get download "$pkg"; })
  rm -rf "$dest"
  mkdir -p "$dest"
  dpkg -x "$work"/"$pkg"_*.deb "$dest"
  rm -rf "$work"
}
if [ ! -x "$bin_dir/etcd" ] || ! "$bin_dir/etcd" --version >/dev/null 2>&1; then
  install_etcd() {
    unpack etcd-server "$tools_dir/pkgs/etcd-server"
    ln -sf "$tools_dir/pkgs/etcd-server/usr/bin/etcd" "$bin_dir/etcd"
    "$bin_dir/etcd" --version
  }
  step "etcd (apt-get download etcd-server + dpkg -x)" k8s-etcd install_etcd
else
  say "etcd $("$bin_dir/etcd" --version | awk '/^etcd Version/ { print $3 }') already installed"
fi
cni_dir="$tools_dir/cni/bin"
if [ ! -x "$cni_dir/loopback" ] || [ ! -x "$cni_dir/host-local" ]; then
  install_cni() {
    unpack containernetworking-plugins "$tools_dir/pkgs/containernetworking-plugins"
    mkdir -p "$(dirname "$cni_dir")"
    ln -sfn "$tools_dir/pkgs/containernetworking-plugins/usr/lib/cni" "$cni_dir"
    ls "$cni_dir"
  }
  step "CNI plugins (apt-get download containernetworking-plugins + dpkg -x)" k8s-cni install_cni
else
  say "CNI plugins already installed ($cni_dir)"
fi

printf '%s\n' "$bin_dir"
