"""What runs on a docker target, read from the engine and the proxy (``status``, issue 23 item 5).

Behind the proxy (``proxy: true``) the serving release is the application container the proxy
forwards to: the upstream file *the running proxy container reads* (found through its mount,
so any checkout -- or none -- sees the same answer, whatever ``state_dir`` says), the container
it names (running, owned by this environment and target), the image digest it runs, and
``health_path`` answered through the proxy's published port, as clients reach it. Without the
proxy (``proxy: false``) it is the container ``<name>`` and its published port.

The digest a container runs: a container's ``.Image`` is the local image ID (the config
digest), not the registry's manifest digest, so it is read from the ``shatag.digest`` label the
switch sets, checked against the image's ``RepoDigests`` (a label that none of them carries is
not trusted: the repository digests are reported instead).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shatag._sys.docker import DockerEngine, is_running, labels_of
from shatag.core import ImageRef
from shatag.errors import ShatagError
from shatag.targets import Observed, TargetContext
from shatag.targets.docker.caddy import MOUNT, UPSTREAM_FILE, parse_upstream
from shatag.targets.docker.gated import LABEL_DIGEST, http_probe
from shatag.targets.docker.owned import owner_labels
from shatag.targets.docker.proxy import PROXY_SUFFIX, proxy_home

if TYPE_CHECKING:
    from shatag.targets.docker import DockerSpec

_PROBE_TIMEOUT_SEC = 3.0


def observe(spec: DockerSpec, ctx: TargetContext, image: ImageRef | None) -> Observed:
    """The docker kind's ``observe`` hook (changes nothing; see the module docstring)."""
    engine = DockerEngine(ctx.env)
    try:
        if spec.proxy:
            return _behind_proxy(spec, ctx, engine, image)
        return _published(spec, engine, image)
    except ShatagError as exc:  # the engine does not answer
        return Observed("down", detail=exc.message)


def _behind_proxy(
    spec: DockerSpec, ctx: TargetContext, engine: DockerEngine, image: ImageRef | None
) -> Observed:
    proxy_name = spec.name + PROXY_SUFFIX
    proxy = engine.inspect("container", proxy_name)
    if proxy is None or not is_running(proxy):
        what = "does not exist" if proxy is None else "is not running"
        return Observed("down", detail=f"the proxy {proxy_name} {what}")
    home = _mounted_home(proxy) or Path(proxy_home(ctx.state_dir, ctx.env_name, spec.name))
    try:
        routed = parse_upstream((home / UPSTREAM_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return Observed("down", detail=f"cannot read the proxy's upstream in {home}: {exc}")
    if routed is None:
        return Observed("down", detail=f"the proxy {proxy_name} forwards to no release")
    name = routed.rpartition(":")[0]
    data = engine.inspect("container", name)
    if data is None:
        return Observed("down", detail=f"the proxy forwards to {routed}, which does not exist")
    if not owner_labels(ctx.env_name, spec.name, "app").items() <= labels_of(data).items():
        return Observed(
            "drift", detail=f"the proxy forwards to {name}, not a release of this target"
        )
    where = f"127.0.0.1:{spec.port}"
    probe = (spec.health_path, where, f"through {proxy_name}")
    return _compare(engine, data, name, image, probe=probe)


def _published(spec: DockerSpec, engine: DockerEngine, image: ImageRef | None) -> Observed:
    data = engine.inspect("container", spec.name)
    if data is None:
        return Observed("down", detail=f"no container {spec.name}")
    where = f"127.0.0.1:{spec.port}"
    return _compare(engine, data, spec.name, image, probe=(spec.health_path, where, "published"))


def _compare(
    engine: DockerEngine,
    data: Mapping[str, Any],
    name: str,
    image: ImageRef | None,
    *,
    probe: tuple[str, str, str],
) -> Observed:
    """One serving container against the ledger's release: its digest, running, health
    (``probe``: the health path, the ``host:port`` to ask, how that port reaches it)."""
    health_path, where, how = probe
    running = running_digest(engine, data)
    if not is_running(data):
        state = (data.get("State") or {}).get("Status") or "stopped"
        return Observed("down", running, f"{name} is {state}")
    engine_health = ((data.get("State") or {}).get("Health") or {}).get("Status")
    answer = http_probe(where, health_path, timeout=_PROBE_TIMEOUT_SEC)
    if answer == "ok" and engine_health == "unhealthy":
        answer = "passes, but its HEALTHCHECK reports unhealthy"
    health = f"{health_path} {'answers' if answer == 'ok' else answer} on {where} ({how})"
    if image is None:
        return Observed("none", running, f"{name} runs {running or 'an unknown image'}; {health}")
    if running != image.digest:
        return Observed(
            "drift", running, f"{name} runs {running or 'an unknown image'}, not {image.digest}"
        )
    if answer != "ok":
        return Observed("down", running, f"{name} runs it, but {health}")
    return Observed("in_sync", running, f"{name} runs it; {health}")


def running_digest(engine: DockerEngine, data: Mapping[str, Any]) -> str:
    """The registry digest a container runs: its ``shatag.digest`` label when its image's
    ``RepoDigests`` carry it (or carry none, e.g. a locally built image), else those."""
    label = labels_of(data).get(LABEL_DIGEST, "")
    local = str(data.get("Image") or "")
    found = engine.inspect("image", local) if local else None
    repo = [str(d).rpartition("@")[2] for d in (found or {}).get("RepoDigests") or []]
    if not repo or label in repo:
        return label
    return ", ".join(dict.fromkeys(repo))


def _mounted_home(proxy: Mapping[str, Any]) -> Path | None:
    """The host directory the running proxy reads its upstream from (its mount of MOUNT)."""
    for mount in proxy.get("Mounts") or []:
        if isinstance(mount, Mapping) and mount.get("Destination") == MOUNT:
            source = str(mount.get("Source") or "")
            return Path(source) if source else None
    return None
