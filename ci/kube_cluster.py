#!/usr/bin/env python3
"""A throwaway single-node Kubernetes on loopback, for the `kubernetes` test session (issue 16).

    python3 ci/kube_cluster.py up [--run-dir DIR] [--registry 127.0.0.1:PORT ...]
    python3 ci/kube_cluster.py status [--run-dir DIR]
    python3 ci/kube_cluster.py down [--run-dir DIR]

`up` starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler, a containerd instance
of its own (own socket, root and state under the run directory: the docker daemon's containerd is
never touched) and a kubelet running real containers through it, all bound to 127.0.0.1. It
prints the KUBECONFIG path on stdout once the node is Ready. Without --registry it starts a
loopback `docker-registry` of its own; the pause image (FROM scratch, static busybox) is built
and pushed there. Every registry named gets a `certs.d/<host:port>/hosts.toml` for plain HTTP.

`down` ends only the processes `up` started (PIDs + start times in state.json) and the pod
processes in the kubelet's cgroups, stops the pods' shims, unmounts what was mounted under the
run directory, removes the cgroups and iptables chains the kubelet created, and restores the
kernel settings it changed (values recorded before `up`). Safe to run twice.

Needs root, the binaries of ci/install-kubernetes.sh, containerd + runc, openssl, docker (to
build the pause image) and iptables. See NOTES-kubernetes.md for why each setting is there.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TOOLS_DIR = Path(os.environ.get("SHATAG_TOOLS_DIR", Path.home() / ".cache/shatag/tools"))
TOOLS_BIN = TOOLS_DIR / "bin"
CNI_BIN = TOOLS_DIR / "cni" / "bin"
DEFAULT_RUN_DIR = Path(
    os.environ.get("SHATAG_KUBE_RUN_DIR") or Path(tempfile.gettempdir()) / "shatag-kube"
)
# One cluster per machine: the kubelet's kernel settings, cgroups and iptables chains are global.
MACHINE_LOCK = Path("/run/shatag-kube.owner")
NODE_NAME = "localhost"
PAUSE_REPO = "shatag-kube/pause"
PAUSE_TAG = "1"
# The kubelet sets these (container manager `setupKernelTunables`); restored on `down`.
SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
KUBEPODS = "kubepods"
CONTAINERS_LOG_DIR = Path("/var/log/containers")  # the kubelet's symlinks; not configurable
NETNS_DIR = Path("/var/run/netns")
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


class ClusterError(Exception):
    """A step of up/down failed; the message says which and where its log is."""


def say(msg: str) -> None:
    print(f"kube-cluster: {msg}", file=sys.stderr, flush=True)


def run(
    argv: list[str], *, timeout: float = 60, check: bool = True, env: dict[str, str] | None = None
) -> str:
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    if check and proc.returncode != 0:
        raise ClusterError(
            f"{' '.join(argv[:3])}… exited {proc.returncode}: {(proc.stderr or proc.stdout)[-800:]}"
        )
    return str(proc.stdout)


def tool(name: str) -> str:
    for candidate in (TOOLS_BIN / name, CNI_BIN / name):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if not found:
        raise ClusterError(f"{name} not found: run `bash ci/install-kubernetes.sh` first")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat), or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return str(stat.rsplit(")", 1)[1].split()[19])


def alive(pid: int, started: str | None) -> bool:
    """The process we started is still running (not a reused PID, not a zombie)."""
    if started is None or start_time(pid) != started:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --- state ------------------------------------------------------------------------------------


class Cluster:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir.resolve()
        self.state_file = self.run_dir / "state.json"
        self.state: dict[str, Any] = {}
        if self.state_file.exists():
            self.state = json.loads(self.state_file.read_text())

    def save(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2) + "\n")
        tmp.replace(self.state_file)

    def path(self, *parts: str) -> Path:
        return self.run_dir.joinpath(*parts)

    @property
    def kubeconfig(self) -> Path:
        return self.path("kubeconfig")

    @property
    def containerd_sock(self) -> Path:
        return self.path("containerd", "containerd.sock")

    # --- processes ----------------------------------------------------------------------------

    def spawn(self, name: str, argv: list[str]) -> None:
        log_path = self.path("logs", f"{name}.log")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.run_dir,
                env={**os.environ, "PATH": f"{TOOLS_BIN}:{os.environ.get('PATH', os.defpath)}"},
            )
        self.state.setdefault("processes", {})[name] = {
            "pid": proc.pid,
            "start": start_time(proc.pid),
            "log": str(log_path),
        }
        self.save()

    def any_alive(self) -> bool:
        return any(alive(p["pid"], p["start"]) for p in self.state.get("processes", {}).values())

    def check_alive(self, name: str) -> None:
        info = self.state["processes"][name]
        if not alive(info["pid"], info["start"]):
            tail = Path(info["log"]).read_text(errors="replace")[-2000:]
            raise ClusterError(f"{name} exited; log {info['log']}:\n{tail}")

    def stop(self, *names: str, timeout: float = 5) -> None:
        """SIGTERM to each of ``names`` (ours: PID and start time match), SIGKILL to what is
        left after ``timeout``. All at once: a throwaway cluster needs no graceful drain."""
        procs = [
            (info["pid"], info["start"])
            for name in names
            if (info := self.state.get("processes", {}).get(name))
            and alive(info["pid"], info["start"])
        ]
        for pid, _ in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(alive(p, s) for p, s in procs):
            time.sleep(0.05)
        for pid, started in procs:
            if alive(pid, started):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            # A child of ours only when `up` ran in this process; reap it then.
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)

    def wait(self, what: str, probe: Any, timeout: float, names: tuple[str, ...] = ()) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name in names:
                self.check_alive(name)
            with contextlib.suppress(Exception):
                if probe():
                    return
            time.sleep(0.2)
        raise ClusterError(f"{what} not ready within {timeout:.0f} s (logs: {self.path('logs')})")

    # --- the machine's settings ------------------------------------------------------------------

    def record_machine(self) -> None:
        """What `down` restores: sysctls, iptables chains, cgroups, mounts, log symlinks."""
        sysctls = {}
        for key in SYSCTLS:
            with contextlib.suppress(OSError):
                sysctls[key] = Path("/proc/sys", *key.split(".")).read_text().strip()
        self.state["sysctls"] = sysctls
        self.state["iptables"] = {cmd: iptables_rules(cmd) for cmd in iptables_cmds()}
        self.state["cgroups_before"] = [
            str(d) for d in cgroup_hierarchies() if (d / KUBEPODS).exists()
        ]
        self.state["containers_log_dir_existed"] = CONTAINERS_LOG_DIR.exists()
        self.state["netns_before"] = sorted(p.name for p in NETNS_DIR.glob("*"))
        self.save()

    def restore_machine(self) -> list[str]:
        problems: list[str] = []
        for key, value in self.state.get("sysctls", {}).items():
            target = Path("/proc/sys", *key.split("."))
            try:
                if target.read_text().strip() != value:
                    target.write_text(value + "\n")
            except OSError as exc:
                problems.append(f"sysctl {key}: {exc}")
        for cmd, before in self.state.get("iptables", {}).items():
            problems += restore_iptables(cmd, before)
        existed = set(self.state.get("cgroups_before", []))
        for hierarchy in cgroup_hierarchies():
            tree = hierarchy / KUBEPODS
            if str(hierarchy) not in existed and tree.exists():
                problems += remove_cgroup_tree(tree)
        if CONTAINERS_LOG_DIR.exists():
            logs = str(self.path("pod-logs"))
            for link in CONTAINERS_LOG_DIR.iterdir():
                with contextlib.suppress(OSError):
                    if link.is_symlink() and os.readlink(link).startswith(logs):
                        link.unlink()
            if not self.state.get("containers_log_dir_existed", True):
                with contextlib.suppress(OSError):
                    CONTAINERS_LOG_DIR.rmdir()
        before = set(self.state.get("netns_before", []))
        for ns in NETNS_DIR.glob("cni-*"):
            if ns.name not in before:
                run(["umount", str(ns)], check=False)
                with contextlib.suppress(OSError):
                    ns.unlink()
        return problems


def iptables_cmds() -> list[str]:
    return [c for c in ("iptables", "ip6tables") if shutil.which(f"{c}-save")]


def iptables_rules(cmd: str) -> dict[str, list[str]]:
    """{table: [":CHAIN" and "-A ..." lines]} of `<cmd>-save` (counters dropped)."""
    out = run([f"{cmd}-save"], check=False)
    tables: dict[str, list[str]] = {}
    table = ""
    for line in out.splitlines():
        if line.startswith("*"):
            table = line[1:]
            tables[table] = []
        elif line.startswith(":"):
            tables[table].append(line.split()[0])
        elif line.startswith("-A "):
            tables[table].append(line)
    return tables


def restore_iptables(cmd: str, before: dict[str, list[str]]) -> list[str]:
    """Delete the KUBE-* rules and chains that appeared since `before` (docker's rules, which
    may change meanwhile, are left alone)."""
    problems: list[str] = []

    def change(table: str, *args: str) -> None:
        proc = subprocess.run(
            [cmd, "-w", "5", "-t", table, *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if proc.returncode != 0:
            problems.append(f"{cmd} -t {table} {' '.join(args)}: {proc.stderr.strip()}")

    now = iptables_rules(cmd)
    for table, lines in now.items():
        old = set(before.get(table, []))
        added_rules = [ln for ln in lines if ln.startswith("-A ") and ln not in old]
        added_chains = [ln[1:] for ln in lines if ln.startswith(":") and ln not in old]
        for rule in added_rules:
            if "KUBE-" not in rule:
                continue
            # `-A CHAIN spec...` → `-D CHAIN spec...`; the saved form re-parses as arguments.
            args = shlex.split(rule)  # comments are quoted: `--comment "a b"`
            change(table, "-D", *args[1:])
        for chain in added_chains:
            if not chain.startswith("KUBE-"):
                continue
            for op in ("-F", "-X"):
                change(table, op, chain)
    return problems


def cgroup_hierarchies() -> list[Path]:
    """The cgroup v1 hierarchies (one directory per mounted controller set) and v2 if alone."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return [CGROUP_ROOT]
    return sorted(
        d
        for d in CGROUP_ROOT.iterdir()
        if d.is_dir() and not d.is_symlink() and (d / "cgroup.procs").exists()
    )


def cgroup_dirs(tree: Path) -> list[Path]:
    """Every cgroup under `tree`, deepest first."""
    found = [Path(root) for root, _dirs, _files in os.walk(tree)]
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def cgroup_pids(tree: Path) -> set[int]:
    pids: set[int] = set()
    for d in cgroup_dirs(tree):
        with contextlib.suppress(OSError):
            pids.update(int(x) for x in (d / "cgroup.procs").read_text().split())
    return pids


def remove_cgroup_tree(tree: Path) -> list[str]:
    problems = []
    for d in cgroup_dirs(tree):
        for attempt in range(50):
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if attempt == 49:
                    problems.append(f"cgroup {d}: {exc}")
                time.sleep(0.1)
    return problems


def mounts_under(prefix: Path) -> list[str]:
    """Mount points under `prefix`, deepest first (from /proc/self/mountinfo)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == str(prefix) or point.startswith(f"{prefix}/"):
            points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


# --- certificates and configuration ---------------------------------------------------------------


def make_pki(pki: Path) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    os.chmod(pki, 0o700)
    openssl = tool("openssl")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run(
        [openssl, "req", "-x509", *ec, "-keyout", str(pki / "ca.key"), "-out",
         str(pki / "ca.crt"), "-days", "7", "-subj", "/CN=shatag-kube-ca"]
    )  # fmt: skip
    run(
        [openssl, "req", "-new", *ec, "-keyout", str(pki / "serving.key"), "-out",
         str(pki / "serving.csr"), "-subj", "/CN=localhost"]
    )  # fmt: skip
    ext = pki / "serving.ext"
    ext.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes.default.svc\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
    )
    run(
        [openssl, "x509", "-req", "-in", str(pki / "serving.csr"), "-CA", str(pki / "ca.crt"),
         "-CAkey", str(pki / "ca.key"), "-CAcreateserial", "-out", str(pki / "serving.crt"),
         "-days", "7", "-extfile", str(ext)]
    )  # fmt: skip
    run([openssl, "genrsa", "-out", str(pki / "sa.key"), "2048"])
    run([openssl, "rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub")])


def kubeconfig_text(server: str, ca: Path, token: str) -> str:
    ca_data = base64.b64encode(ca.read_bytes()).decode()
    return f"""apiVersion: v1
kind: Config
clusters:
- name: shatag-kube
  cluster:
    server: {server}
    certificate-authority-data: {ca_data}
users:
- name: shatag-admin
  user:
    token: {token}
contexts:
- name: shatag-kube
  context:
    cluster: shatag-kube
    user: shatag-admin
    namespace: default
current-context: shatag-kube
"""


def containerd_config(c: Cluster, registries: list[str]) -> str:
    root = c.path("containerd")
    sandbox = f"{registries[0]}/{PAUSE_REPO}:{PAUSE_TAG}"
    return f"""version = 2
root = "{root / "root"}"
state = "{root / "state"}"
oom_score = 0

[grpc]
  address = "{c.containerd_sock}"
[ttrpc]
  address = "{c.containerd_sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{root / "opt"}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox}"
  # Without CAP_SYS_RESOURCE runc cannot lower oom_score_adj ("can't get final child's PID").
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  # Pod network namespaces (none for hostNetwork pods) under our state dir, not /var/run/netns.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{root / "runc"}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{c.path("cni", "net.d")}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{root / "certs.d"}"
"""


def kubelet_config(c: Cluster) -> str:
    ports = c.state["ports"]
    pki = c.path("pki")
    return f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: {ports["kubelet"]}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {ports["kubelet_healthz"]}
tlsCertFile: {pki / "serving.crt"}
tlsPrivateKeyFile: {pki / "serving.key"}
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
cgroupDriver: cgroupfs
failSwapOn: false
failCgroupV1: false
containerRuntimeEndpoint: unix://{c.containerd_sock}
podLogsDir: {c.path("pod-logs")}
makeIPTablesUtilChains: false
protectKernelDefaults: false
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "50Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
  nodefs.inodesFree: "1%"
nodeStatusReportFrequency: 10s
nodeStatusUpdateFrequency: 2s
syncFrequency: 10s
fileCheckFrequency: 10s
resolvConf: /etc/resolv.conf
"""


CNI_CONF = """{
  "cniVersion": "0.4.0",
  "name": "shatag-loopback",
  "plugins": [{"type": "loopback"}]
}
"""

PAUSE_DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
# A pod sandbox only has to hold its namespaces open: block until TERM, then exit at once.
ENTRYPOINT ["/bin/busybox", "sh", "-c", \
"trap 'exit 0' TERM INT; while :; do /bin/busybox sleep 3600 & wait $!; done"]
"""


def static_busybox() -> Path:
    for candidate in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
        if candidate.is_file():
            proc = subprocess.run(
                ["ldd", str(candidate)], capture_output=True, timeout=10, check=False
            )
            if proc.returncode != 0:
                return candidate
    raise ClusterError("no static busybox (apt-get install busybox-static)")


def push_scratch_image(registry: str, repo: str, tag: str, dockerfile: str) -> str:
    """Build a FROM-scratch image with docker and push it to `registry`; the local tag is removed
    again (only the registry keeps it). Returns the pushed reference."""
    ref = f"{registry}/{repo}:{tag}"
    with tempfile.TemporaryDirectory(prefix="shatag-kube-image-") as tmp:
        ctx = Path(tmp)
        shutil.copy2(static_busybox(), ctx / "busybox")
        (ctx / "Dockerfile").write_text(dockerfile)
        env = {**os.environ, "DOCKER_BUILDKIT": "0"}
        run(["docker", "build", "-q", "-t", ref, str(ctx)], timeout=300, env=env)
        run(["docker", "push", ref], timeout=300)
        run(["docker", "rmi", ref], check=False)
    return ref


def hosts_toml(registry: str) -> str:
    return f"""server = "http://{registry}"

[host."http://{registry}"]
  capabilities = ["pull", "resolve"]
  skip_verify = true
"""


def start_registry(c: Cluster) -> str:
    port = free_port()
    storage = c.path("registry", "storage")
    storage.mkdir(parents=True, exist_ok=True)
    config = c.path("registry", "config.yml")
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    c.spawn("registry", [tool("docker-registry"), "serve", str(config)])
    c.wait(
        "registry",
        lambda: _connects(("127.0.0.1", port)),
        20,
        ("registry",),
    )
    return f"127.0.0.1:{port}"


# --- up / down / status ---------------------------------------------------------------------------


def api_get(c: Cluster, path: str, timeout: float = 2) -> Any:
    ctx = ssl.create_default_context(cafile=str(c.path("pki", "ca.crt")))
    req = urllib.request.Request(
        f"https://127.0.0.1:{c.state['ports']['apiserver']}{path}",
        headers={"Authorization": f"Bearer {c.state['token']}"},
    )
    # https to our own apiserver on 127.0.0.1, verified against our CA.
    with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:  # noqa: S310
        body = resp.read()
    return json.loads(body) if body.startswith(b"{") else body.decode()


def node_ready(c: Cluster) -> bool:
    node = api_get(c, f"/api/v1/nodes/{NODE_NAME}")
    return any(
        cond["type"] == "Ready" and cond["status"] == "True"
        for cond in node.get("status", {}).get("conditions", [])
    )


@contextlib.contextmanager
def timed(what: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    say(f"{what}: {time.monotonic() - started:.1f} s")


def claim_machine(c: Cluster) -> None:
    if MACHINE_LOCK.exists():
        other = Path(MACHINE_LOCK.read_text().strip())
        if other != c.run_dir and Cluster(other).any_alive():
            raise ClusterError(
                f"another cluster runs from {other}: `python3 ci/kube_cluster.py down "
                f"--run-dir {other}` first (one kubelet per machine)"
            )
    MACHINE_LOCK.write_text(f"{c.run_dir}\n")


def may_start(c: Cluster) -> None:
    """Refuse before anything changes (a refusal must not tear down the running cluster)."""
    if os.geteuid() != 0:
        raise ClusterError("the kubelet needs root")
    if c.any_alive():
        raise ClusterError(f"a cluster already runs from {c.run_dir} (run `down` first)")
    claim_machine(c)


def up(c: Cluster, registries: list[str]) -> None:
    started = time.monotonic()
    c.state = {"run_dir": str(c.run_dir), "processes": {}, "up_started": time.time()}
    c.record_machine()  # before anything starts: what `down` restores
    registries = prepare(c, registries)
    start_control_plane(c, registries)
    start_node(c)
    c.state["up_sec"] = round(time.monotonic() - started, 1)
    c.save()
    say(f"up in {c.state['up_sec']} s; logs in {c.path('logs')}")
    print(c.kubeconfig)


def prepare(c: Cluster, registries: list[str]) -> list[str]:
    """Ports, certificates, token, kubeconfig, the registry and the pause image."""
    for sub in ("logs", "pki", "cni/net.d", "containerd/certs.d", "kubelet", "pod-logs", "etcd"):
        c.path(sub).mkdir(parents=True, exist_ok=True)
    ports = {
        name: free_port()
        for name in (
            "etcd",
            "etcd_peer",
            "apiserver",
            "controller_manager",
            "scheduler",
            "kubelet",
            "kubelet_healthz",
        )
    }
    c.state["ports"] = ports
    c.state["token"] = secrets.token_hex(16)
    c.save()
    pki = c.path("pki")
    with timed("certificates (openssl)"):
        make_pki(pki)
    (pki / "tokens.csv").write_text(
        f"{c.state['token']},shatag-admin,shatag-admin,system:masters\n"
    )
    os.chmod(pki / "tokens.csv", 0o600)
    server = f"https://127.0.0.1:{ports['apiserver']}"
    c.kubeconfig.write_text(kubeconfig_text(server, pki / "ca.crt", c.state["token"]))
    os.chmod(c.kubeconfig, 0o600)

    with timed("registry + pause image"):
        if not registries:
            registries = [start_registry(c)]
        c.state["registries"] = registries
        c.save()
        push_scratch_image(registries[0], PAUSE_REPO, PAUSE_TAG, PAUSE_DOCKERFILE)
        for reg in registries:
            d = c.path("containerd", "certs.d", reg)
            d.mkdir(parents=True, exist_ok=True)
            (d / "hosts.toml").write_text(hosts_toml(reg))
    return registries


def start_control_plane(c: Cluster, registries: list[str]) -> None:
    """etcd, kube-apiserver (and our containerd meanwhile), controller-manager, scheduler."""
    ports = c.state["ports"]
    pki = c.path("pki")
    c.spawn(
        "etcd",
        [
            tool("etcd"),
            "--name=shatag",
            f"--data-dir={c.path('etcd', 'data')}",
            f"--listen-client-urls=http://127.0.0.1:{ports['etcd']}",
            f"--advertise-client-urls=http://127.0.0.1:{ports['etcd']}",
            f"--listen-peer-urls=http://127.0.0.1:{ports['etcd_peer']}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{ports['etcd_peer']}",
            f"--initial-cluster=shatag=http://127.0.0.1:{ports['etcd_peer']}",
            "--listen-metrics-urls=",
            "--logger=zap",
            "--log-level=warn",
        ],
    )
    c.spawn(
        "kube-apiserver",
        [
            tool("kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={ports['apiserver']}",
            f"--tls-cert-file={pki / 'serving.crt'}",
            f"--tls-private-key-file={pki / 'serving.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=AlwaysAllow",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--endpoint-reconciler-type=none",
            "--kubelet-preferred-address-types=Hostname,InternalIP",
            "--allow-privileged=true",
            "--profiling=false",
            "--enable-priority-and-fairness=false",
            "--v=1",
        ],
    )
    _write(c.path("containerd", "config.toml"), containerd_config(c, registries))
    _write(c.path("cni", "net.d", "10-shatag-loopback.conflist"), CNI_CONF)
    c.spawn(
        "containerd",
        [tool("containerd"), "--config", str(c.path("containerd", "config.toml"))],
    )

    with timed("apiserver ready"):
        c.wait(
            "kube-apiserver /readyz",
            lambda: api_get(c, "/readyz") == "ok",
            90,
            ("etcd", "kube-apiserver"),
        )
    component_kubeconfig = ["--kubeconfig", str(c.kubeconfig)]
    c.spawn(
        "kube-controller-manager",
        [
            tool("kube-controller-manager"),
            *component_kubeconfig,
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['controller_manager']}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            "--leader-elect=false",
            "--use-service-account-credentials=false",
            "--allocate-node-cidrs=false",
            "--profiling=false",
            "--v=1",
        ],
    )
    c.spawn(
        "kube-scheduler",
        [
            tool("kube-scheduler"),
            *component_kubeconfig,
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['scheduler']}",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ],
    )


def start_node(c: Cluster) -> None:
    """The kubelet on our containerd; waits for the node Ready and the default account."""
    component_kubeconfig = ["--kubeconfig", str(c.kubeconfig)]
    with timed("containerd socket"):
        c.wait(
            "containerd",
            lambda: _connects(str(c.containerd_sock)),
            30,
            ("containerd",),
        )
    _write(c.path("kubelet", "config.yaml"), kubelet_config(c))
    c.spawn(
        "kubelet",
        [
            tool("kubelet"),
            f"--config={c.path('kubelet', 'config.yaml')}",
            *component_kubeconfig,
            f"--root-dir={c.path('kubelet', 'root')}",
            f"--hostname-override={NODE_NAME}",
            "--node-ip=127.0.0.1",
            "--v=1",
        ],
    )
    names = (*COMPONENTS, "containerd", "kubelet")
    with timed("node Ready"):
        c.wait(f"node {NODE_NAME} Ready", lambda: node_ready(c), 120, names)
    with timed("default service account"):
        c.wait(
            "service account default/default",
            lambda: api_get(c, "/api/v1/namespaces/default/serviceaccounts/default"),
            60,
            names,
        )


def _connects(address: tuple[str, int] | str) -> bool:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        sock.connect(address)
    return True


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def stop_containers(c: Cluster) -> None:
    """Kill every task of our containerd (namespace k8s.io) and delete it, so the shims exit."""
    if not c.containerd_sock.exists():
        return
    ctr = [tool("ctr"), "--address", str(c.containerd_sock), "--namespace", "k8s.io"]
    with contextlib.suppress(ClusterError, subprocess.TimeoutExpired):
        tasks = run([*ctr, "tasks", "list", "-q"], timeout=20).split()
        for task in tasks:
            run([*ctr, "tasks", "kill", "--signal", "SIGKILL", task], check=False, timeout=20)
        for task in tasks:
            run([*ctr, "tasks", "delete", "--force", task], check=False, timeout=20)
        for container in run([*ctr, "containers", "list", "-q"], timeout=20).split():
            run([*ctr, "containers", "delete", container], check=False, timeout=20)


def our_shims(c: Cluster) -> list[int]:
    """containerd-shim-runc-v2 processes started by *our* containerd (its socket in argv)."""
    pids = []
    needle = str(c.containerd_sock).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and needle in argv:
                pids.append(int(proc.name))
    return pids


def kill_pods(c: Cluster) -> None:
    """Every container of our containerd, then any process left in the kubelet's cgroups, then
    the shims of our containerd (by PID; the docker daemon's shims are never touched)."""
    stop_containers(c)
    for hierarchy in cgroup_hierarchies():
        tree = hierarchy / KUBEPODS
        if str(hierarchy) in c.state.get("cgroups_before", []) or not tree.exists():
            continue
        for pid in cgroup_pids(tree):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while our_shims(c) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in our_shims(c):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def unmount_all(c: Cluster) -> list[str]:
    """Unmount what containerd and the kubelet mounted under the run directory (rootfs
    overlays, shm, projected-token tmpfs), deepest first; a busy one is detached lazily."""
    for point in mounts_under(c.run_dir):
        run(["umount", point], check=False, timeout=30)
        if point in mounts_under(c.run_dir):
            run(["umount", "-l", point], check=False, timeout=30)
    leftover = mounts_under(c.run_dir)
    return [f"still mounted: {leftover}"] if leftover else []


def down(c: Cluster) -> None:
    if not c.state or (c.state.get("down_sec") is not None and not c.any_alive()):
        say(f"nothing to stop in {c.run_dir}")
        return
    started = time.monotonic()
    # Controllers first (nothing recreates pods), then the kubelet (nothing restarts containers),
    # then the containers themselves, their shims, containerd, and the control plane.
    with timed("controllers and kubelet stopped"):
        c.stop("kube-controller-manager", "kube-scheduler", "kubelet")
    with timed("pods, shims stopped"):
        kill_pods(c)
    with timed("containerd, apiserver, etcd stopped"):
        c.stop("containerd", "kube-apiserver", "etcd", "registry")
    with timed("unmounted, machine restored"):
        problems = unmount_all(c)
        problems += c.restore_machine()
    # The bulky state goes; logs, config and state.json stay for a post-mortem.
    for sub in ("containerd/root", "containerd/state", "kubelet/root", "etcd", "registry"):
        shutil.rmtree(c.path(sub), ignore_errors=True)
    with contextlib.suppress(OSError):
        if MACHINE_LOCK.read_text().strip() == str(c.run_dir):
            MACHINE_LOCK.unlink()
    c.state["processes"] = {}
    c.state["down_sec"] = round(time.monotonic() - started, 1)
    c.save()
    if problems:
        raise ClusterError("down left something behind:\n  " + "\n  ".join(problems))
    say(f"down in {c.state['down_sec']} s")


def status(c: Cluster) -> int:
    procs = c.state.get("processes", {})
    if not procs:
        print(f"no cluster in {c.run_dir}")
        return 1
    ok = True
    for name, info in procs.items():
        up_ = alive(info["pid"], info["start"])
        ok = ok and up_
        print(f"{name:24} pid {info['pid']:>7}  {'running' if up_ else 'GONE'}")
    try:
        ready = node_ready(c)
    except (OSError, urllib.error.URLError, ValueError):
        ready = False
    print(f"node {NODE_NAME}: {'Ready' if ready else 'not Ready'}")
    print(f"KUBECONFIG={c.kubeconfig}")
    return 0 if ok and ready else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR)
    parser.add_argument(
        "--registry",
        action="append",
        default=[],
        help="127.0.0.1:PORT of a plain-HTTP registry pods pull from (repeatable); "
        "the first one receives the pause image. Default: start one.",
    )
    args = parser.parse_args(argv)
    cluster = Cluster(args.run_dir)
    try:
        if args.command == "up":
            may_start(cluster)
            try:
                up(cluster, list(args.registry))
            except BaseException:
                say("up failed: tearing down what it started")
                with contextlib.suppress(ClusterError):
                    down(cluster)
                raise
            return 0
        if args.command == "down":
            down(cluster)
            return 0
        return status(cluster)
    except ClusterError as exc:
        say(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
