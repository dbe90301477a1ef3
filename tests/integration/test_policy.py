"""Provenance and per-environment policy with the real cosign and the real registry (issue 25).

Every image is a real FROM-scratch image pushed to the session registry; signatures and
attestations are made by the real cosign with real key pairs, offline (no transparency log).
Nothing is faked: a tampered provenance is a real attestation, signed by the trusted key, that
names another SHA; a re-pointed tag is a real tag moved to another real image.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from shatag._testing.localregistry import LocalRegistry
from shatag.app.deploy import DeployRequest, deploy, deploy_route, plan_switch
from shatag.app.quarantine import mark
from shatag.app.rollback import RollbackRequest, rollback, rollback_route
from shatag.app.verify import verify_sha
from shatag.config import Settings, SigningConfig
from shatag.errors import NoRollbackTarget, PolicyViolation, Quarantined, SignatureRequired
from shatag.ledger import open_ledger
from shatag.ledger.history import catalog
from shatag.supplychain import provenance
from shatag.supplychain.signing import attest_predicate, sign_image
from tests._gitremote import GitRemote
from tests.conftest import App, InvResult
from tests.integration._signing_support import (
    build_and_push,
    env_with_tools,
    generate_key_pair,
    tool_path,
)

pytestmark = pytest.mark.needs_cosign

PASSWORD = "canary-policy-pw-5e1d"
SOURCE = "https://git.example/acme/api"
ENV = "prod"


@dataclass
class World:
    registry: LocalRegistry
    root: Path
    key_a: tuple[Path, Path]
    key_b: tuple[Path, Path]
    env: dict[str, str]
    counter: list[int] = field(default_factory=lambda: [0])

    def signer(self, key: tuple[Path, Path]) -> SigningConfig:
        return SigningConfig(
            cosign_key=str(key[0]), cosign_public_key=str(key[1]), tool_timeout_sec=60
        )


@pytest.fixture(scope="module")
def world(registry: LocalRegistry, tmp_path_factory: pytest.TempPathFactory) -> World:
    tool_path("cosign")
    root = tmp_path_factory.mktemp("policy")
    return World(
        registry=registry,
        root=root,
        key_a=generate_key_pair(root / "key-a", PASSWORD),
        key_b=generate_key_pair(root / "key-b", PASSWORD),
        env={**env_with_tools("cosign"), "COSIGN_PASSWORD": PASSWORD, "USER": "policy-test"},
    )


@dataclass
class Site:
    """One application: its repository, an environment ``prod`` writing a tfvars file."""

    world: World
    repo: str
    root: Path
    verify: dict[str, Any] | None

    @property
    def tfvars(self) -> Path:
        return self.root / "image.auto.tfvars.json"

    def settings(self, verify: dict[str, Any] | None = None, **extra: Any) -> Settings:
        env_spec: dict[str, Any] = {"targets": [{"kind": "tfvars", "path": str(self.tfvars)}]}
        policy = verify if verify is not None else self.verify
        if policy is not None:
            env_spec["verify"] = policy
        return Settings.from_mapping(
            {
                "canonical_repository": self.repo,
                "staging_repository": self.repo + "-staging",
                "cosign_public_key": str(self.world.key_a[1]),
                "state_dir": str(self.root / "state"),
                "tool_timeout_sec": 60.0,
                "environments": {ENV: env_spec},
                **extra,
            }
        )

    def push(self, sha: str) -> str:
        """A new, distinct image under the tag ``sha``; its by-digest reference."""
        self.world.counter[0] += 1
        label = f"{self.repo.rsplit('/', 1)[1]}-{self.world.counter[0]}"
        digest = build_and_push(self.world.root, f"{self.repo}:{sha}", label)
        return f"{self.repo}@{digest}"

    def evidence(
        self,
        image: str,
        sha: str,
        *,
        key: tuple[Path, Path] | None = None,
        sign: bool = True,
        sbom: bool = True,
        names_sha: str | None = None,
        source: str = SOURCE,
    ) -> None:
        """Real signature, SBOM attestation and provenance of ``image`` with ``key``."""
        config = self.world.signer(key or self.world.key_a)
        if sign:
            sign_image(config, image, env=self.world.env)
        if sbom:
            spdx = self.root / f"sbom-{uuid.uuid4().hex[:6]}.spdx.json"
            digest = image.rpartition("@")[2]
            spdx.write_text(
                json.dumps(
                    {
                        "spdxVersion": "SPDX-2.3",
                        "SPDXID": "SPDXRef-DOCUMENT",
                        "name": image,
                        "packages": [{"name": "busybox", "versionInfo": digest}],
                    }
                )
            )
            attest_predicate(config, image, spdx, env=self.world.env, predicate_type="spdxjson")
        provenance.attest_provenance(
            config, image, inputs(names_sha or sha, self.repo, source), env=self.world.env
        )

    def deploy(self, sha: str, settings: Settings | None = None) -> Any:
        return deploy(
            settings or self.settings(), DeployRequest(sha=sha, env=ENV), env=self.world.env
        )

    def served(self) -> str:
        return str(json.loads(self.tfvars.read_text())["image_sha"]) if self.tfvars.exists() else ""


def inputs(sha: str, repo: str, source: str = SOURCE) -> provenance.ProvenanceInputs:
    return provenance.ProvenanceInputs(
        sha=sha,
        source_url=source,
        ref="refs/heads/main",
        dockerfile="Dockerfile",
        build_source="commit",
        image_repository=repo,
        repository_type="canonical",
        builder_id="ci.example/runner",
        started_on="2026-12-06T20:00:00Z",
        finished_on="2026-12-06T20:00:09Z",
        build_inputs=[{"path": "www/api.json", "sha256": "ab" * 32, "size": 17}],
    )


REQUIRED = {
    "signature": "required",
    "sbom": "required",
    "provenance": "required",
    "source_repository": SOURCE,
}


@pytest.fixture
def make_site(world: World, tmp_path: Path) -> Callable[..., Site]:
    def factory(verify: dict[str, Any] | None = REQUIRED) -> Site:
        name = f"pol-{uuid.uuid4().hex[:10]}"
        root = tmp_path / name
        root.mkdir()
        return Site(world, f"{world.registry.address}/{name}", root, verify)

    return factory


def sha(n: int) -> str:
    return f"{n:x}" * 40 if n < 16 else f"{n:040x}"


# -- item 1: the provenance, checked by plain cosign ------------------------------------------


def test_provenance_verifies_with_plain_cosign_and_a_rego_policy_checks_the_sha(
    make_site: Callable[..., Site], world: World
) -> None:
    site = make_site()
    image = site.push(sha(1))
    site.evidence(image, sha(1))
    base = [
        tool_path("cosign"),
        "verify-attestation",
        "--type",
        "slsaprovenance1",
        "--key",
        str(world.key_a[1]),
        "--insecure-ignore-tlog",
    ]

    def cosign_with_policy(expected_sha: str) -> subprocess.CompletedProcess[str]:
        policy = site.root / f"sha-{expected_sha[:4]}.rego"
        policy.write_text(
            "package signature\n\nimport rego.v1\n\ndefault allow := false\n\n"
            "allow if {\n"
            '    input.predicateType == "https://slsa.dev/provenance/v1"\n'
            "    input.predicate.buildDefinition.externalParameters.source.sha == "
            f'"{expected_sha}"\n'
            "}\n"
        )
        return subprocess.run(
            [*base, "--policy", str(policy), image],
            env=world.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    passed = cosign_with_policy(sha(1))
    assert passed.returncode == 0, passed.stderr
    statement = json.loads(
        __import__("base64").b64decode(json.loads(passed.stdout.splitlines()[0])["payload"])
    )
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    assert statement["subject"][0]["digest"]["sha256"] == image.rpartition(":")[2]
    definition = statement["predicate"]["buildDefinition"]
    assert definition["buildType"] == provenance.BUILD_TYPE
    assert definition["externalParameters"]["source"] == {
        "repository": SOURCE,
        "ref": "refs/heads/main",
        "sha": sha(1),
    }
    assert definition["resolvedDependencies"][0] == {
        "uri": f"git+{SOURCE}@{sha(1)}",
        "digest": {"gitCommit": sha(1)},
    }
    assert definition["resolvedDependencies"][1]["digest"] == {"sha256": "ab" * 32}
    assert statement["predicate"]["runDetails"]["builder"]["id"] == "ci.example/runner"

    refused = cosign_with_policy(sha(2))  # the same attestation, a policy wanting another SHA
    assert refused.returncode != 0
    assert "validation errors occurred" in refused.stderr, refused.stderr


# -- item 2: the policy, checked before any change ------------------------------------------


def test_a_fully_evidenced_image_passes_the_required_policy_and_plan(
    make_site: Callable[..., Site],
) -> None:
    site = make_site()
    image = site.push(sha(1))
    site.evidence(image, sha(1))
    settings = site.settings()
    plan = plan_switch(
        settings, *deploy_route(settings, DeployRequest(sha(1), ENV), env={}), env=site.world.env
    )
    assert plan.signature_status == "verified"
    assert not site.tfvars.exists()  # a plan changes nothing
    record = site.deploy(sha(1))
    assert (record.signature_status, record.sbom_attestation_status) == ("verified", "verified")
    assert site.served() == sha(1)


def _refused(site: Site, sha_: str, error: type[Exception], *rules: str) -> str:
    before = site.tfvars.read_text() if site.tfvars.exists() else None
    with pytest.raises(error) as info:
        site.deploy(sha_)
    message = str(info.value)
    for rule in rules:
        assert f"{rule}: " in message, message
    after = site.tfvars.read_text() if site.tfvars.exists() else None
    assert after == before  # nothing changed
    settings = site.settings()
    route = deploy_route(settings, DeployRequest(sha_, ENV), env={})
    with pytest.raises(error):  # --plan refuses the same way
        plan_switch(settings, *route, env=site.world.env)
    return message


def test_tampered_provenance_naming_another_sha_is_refused_though_its_signature_is_valid(
    make_site: Callable[..., Site],
) -> None:
    site = make_site()
    image = site.push(sha(3))
    site.evidence(image, sha(3), names_sha=sha(4))
    message = _refused(site, sha(3), PolicyViolation, "provenance")
    assert f"names SHA {sha(4)[:12]}" in message
    assert "signature: " not in message
    assert "sbom: " not in message


def test_a_missing_sbom_is_refused_naming_the_sbom_rule(make_site: Callable[..., Site]) -> None:
    site = make_site()
    image = site.push(sha(5))
    site.evidence(image, sha(5), sbom=False)
    message = _refused(site, sha(5), PolicyViolation, "sbom")
    assert "provenance: " not in message


def test_an_unsigned_image_is_signature_required_naming_every_rule(
    make_site: Callable[..., Site],
) -> None:
    site = make_site()
    site.push(sha(6))
    message = _refused(site, sha(6), SignatureRequired, "signature", "sbom", "provenance")
    assert "no_signature" in message


def test_a_wrong_signer_is_refused(make_site: Callable[..., Site], world: World) -> None:
    site = make_site()
    image = site.push(sha(7))
    site.evidence(image, sha(7), key=world.key_b)  # signed, attested, by the untrusted key
    message = _refused(site, sha(7), SignatureRequired, "signature", "sbom", "provenance")
    assert "invalid" in message
    # Trusting key B as well lets it through.
    both = {**REQUIRED, "signers": [{"key": str(world.key_a[1])}, {"key": str(world.key_b[1])}]}
    site.deploy(sha(7), site.settings(both))
    assert site.served() == sha(7)


def test_another_source_repository_is_refused(make_site: Callable[..., Site]) -> None:
    site = make_site()
    image = site.push(sha(8))
    site.evidence(image, sha(8), source="https://git.example/evil/fork")
    message = _refused(site, sha(8), PolicyViolation, "source_repository")
    assert "evil/fork" in message


def test_a_repointed_tag_is_refused_on_a_fresh_runner_but_soft_deploys_it(
    make_site: Callable[..., Site],
) -> None:
    site = make_site()
    other = site.push(sha(10))  # a real image of SHA 10, with all its evidence
    site.evidence(other, sha(10))
    # The tag of SHA 9 is re-pointed to that image: no history anywhere (a fresh runner).
    site.push(sha(9))
    subprocess.run(["docker", "tag", f"{site.repo}:{sha(10)}", f"{site.repo}:{sha(9)}"], check=True)
    subprocess.run(
        ["docker", "push", "-q", f"{site.repo}:{sha(9)}"], check=True, capture_output=True
    )
    message = _refused(site, sha(9), PolicyViolation, "provenance")
    assert f"names SHA {sha(10)[:12]}" in message
    # Without a verify: block (the global soft policy) it deploys, as before issue 25.
    record = deploy(_without_verify(site), DeployRequest(sha(9), ENV), env=site.world.env)
    assert record.signature_status == "verified"
    assert site.served() == sha(9)


def _without_verify(site: Site) -> Settings:
    raw = site.verify
    site.verify = None
    try:
        return site.settings()
    finally:
        site.verify = raw


# -- item 3: rollback re-checks; the walk-back skips what fails today ----------------------


def test_rollback_rechecks_today_policy_and_the_walk_back_skips_failing_releases(
    make_site: Callable[..., Site], world: World
) -> None:
    site = make_site(verify={"signature": "required"})
    images = {n: site.push(sha(n)) for n in (1, 2, 3)}
    config_a, config_b = world.signer(world.key_a), world.signer(world.key_b)
    for n, image in images.items():
        sign_image(config_a, image, env=world.env)
        if n != 2:  # release 2 is signed by key A only
            sign_image(config_b, image, env=world.env)
    for n in (1, 2, 3):
        site.deploy(sha(n))
    assert site.served() == sha(3)

    # The key is rotated: only key B is trusted now.
    rotated = site.settings({"signature": "required", "signers": [{"key": str(world.key_b[1])}]})
    with pytest.raises(SignatureRequired, match="signature: required"):
        rollback(rotated, RollbackRequest(sha=sha(2), env=ENV), env=world.env)
    assert site.served() == sha(3)
    route = rollback_route(rotated, RollbackRequest(env=ENV), env=world.env)
    assert plan_switch(rotated, *route, env=world.env).image_sha == sha(1)  # 2 skipped
    record = rollback(rotated, RollbackRequest(env=ENV), env=world.env)
    assert (record.image_sha, site.served()) == (sha(1), sha(1))

    # Nothing left that passes: NO_ROLLBACK_TARGET naming why each was skipped.
    site.deploy(sha(2), site.settings({"signature": "soft"}))
    only_b_none = site.settings(
        {"signature": "required", "signers": [{"key": str(site.root / "nowhere.pub")}]}
    )
    with pytest.raises(NoRollbackTarget) as info:
        rollback(only_b_none, RollbackRequest(env=ENV), env=world.env)
    assert "SIGNATURE_REQUIRED" in info.value.message
    assert sha(1) in info.value.message


# -- item 4: quarantine ---------------------------------------------------------------------


def test_quarantine_blocks_deploy_plan_and_walk_back_until_lifted(
    make_site: Callable[..., Site], world: World
) -> None:
    site = make_site(verify={"signature": "soft"})
    for n in (1, 2, 3):
        site.push(sha(n))
        site.deploy(sha(n))
    settings = site.settings()
    mark(
        settings,
        "quarantine",
        sha(2),
        env_name=ENV,
        reason="CVE-2026-0001 in libfoo",
        env=world.env,
    )
    with pytest.raises(Quarantined, match="CVE-2026-0001 in libfoo"):
        site.deploy(sha(2))
    with pytest.raises(Quarantined, match="policy-test"):
        plan_switch(
            settings, *deploy_route(settings, DeployRequest(sha(2), ENV), env={}), env=world.env
        )
    with pytest.raises(Quarantined):
        rollback(settings, RollbackRequest(sha=sha(2), env=ENV), env=world.env)
    assert site.served() == sha(3)
    record = rollback(settings, RollbackRequest(env=ENV), env=world.env)  # skips 2
    assert record.image_sha == sha(1)

    assert mark(settings, "unquarantine", sha(2), env_name=ENV, reason="", env=world.env)
    assert mark(settings, "unquarantine", sha(2), env_name=ENV, reason="", env=world.env) is None
    site.deploy(sha(2))
    assert site.served() == sha(2)
    rows = catalog(open_ledger(settings.state, ENV), limit=None)
    marks = [
        (r["action"], r.get("reason", ""))
        for r in rows
        if r["action"] not in ("deploy", "rollback")
    ]
    assert marks == [("unquarantine", ""), ("quarantine", "CVE-2026-0001 in libfoo")]
    assert [r["sha"] for r in rows if r["current"]] == [sha(2)]


def test_quarantine_is_shared_between_two_clones_through_the_git_ledger(
    tmp_path: Path, world: World, registry: LocalRegistry, inv: Callable[..., InvResult]
) -> None:
    (tmp_path / "git").mkdir()
    remote = GitRemote(tmp_path / "git")
    first, second = remote.clone(), remote.clone()
    config = tmp_path / "shatag.yaml"
    config.write_text(
        "shatag:\n"
        f"  canonical_repository: {registry.address}/pol-git\n"
        f"  staging_repository: {registry.address}/pol-git-staging\n"
        "  state_backend: git\n"
        "  environments:\n"
        f"    {ENV}:\n"
        f"      targets: [{{kind: tfvars, path: {tmp_path / 'image.tfvars.json'}}}]\n"
    )
    env = {
        **world.env,
        "HOME": str(tmp_path),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@x",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@x",
    }
    args = ["-f", str(config)]
    done = inv(
        [*args, "quarantine", f"--sha={sha(5)}", "--reason=bad migration", f"--env={ENV}"],
        env,
        cwd=first,
    )
    assert done.returncode == 0, done.stderr
    assert done.record["action"] == "quarantine"
    assert done.record["initiated_by"] == "policy-test"

    refused = inv([*args, "deploy", f"--sha={sha(5)}", f"--env={ENV}", "--plan"], env, cwd=second)
    assert refused.returncode != 0
    assert "error: QUARANTINED:" in refused.stderr
    assert "bad migration" in refused.stderr
    assert refused.record["error_code"] == "QUARANTINED"

    lifted = inv([*args, "unquarantine", f"--sha={sha(5)}", f"--env={ENV}"], env, cwd=second)
    assert lifted.returncode == 0, lifted.stderr
    history = inv([*args, "history", f"--env={ENV}"], env, cwd=first)
    assert history.returncode == 0, history.stderr
    assert "unquarantine" in history.stdout
    assert "quarantine" in history.stdout
    assert "bad migration" in history.stdout
    assert set(remote.refs()) == {f"refs/shatag/{ENV}"}


def test_cli_build_sign_attaches_provenance_that_a_required_policy_accepts(
    world: World,
    shatag_env: dict[str, str],
    inv: Callable[..., InvResult],
    make_app: Callable[..., App],
    tmp_path: Path,
) -> None:
    tool_path("syft")
    app = make_app('{"version": "provenance"}')
    env = {
        **shatag_env,
        "INVOKE_SHATAG_CONTEXT": str(app.path),
        "INVOKE_SHATAG_COSIGN_KEY": str(world.key_a[0]),
        "INVOKE_SHATAG_COSIGN_PUBLIC_KEY": str(world.key_a[1]),
        "INVOKE_SHATAG_SOURCE_URL": SOURCE,
        "COSIGN_PASSWORD": PASSWORD,
    }
    build = inv(["build", f"--sha={app.sha}", "--branch=main", "--sign"], env)
    assert build.returncode == 0, build.stderr
    image = f"{build.record['repository']}@{build.record['image_digest']}"
    result, statements = provenance.verify_provenance(
        world.signer(world.key_a), image, env=world.env
    )
    assert result.verified
    assert len(statements) == 1
    predicate = statements[0]["predicate"]
    assert isinstance(predicate, dict)
    (tmp_path / "predicate.json").write_text(json.dumps(statements[0], indent=2))
    print(json.dumps(statements[0], indent=2))
    definition = predicate["buildDefinition"]
    assert definition["externalParameters"]["source"]["sha"] == app.sha
    assert definition["externalParameters"]["build_source"] == "commit"
    uris = [d["uri"] for d in definition["resolvedDependencies"]]
    assert uris[0] == f"git+{SOURCE}@{app.sha}"
    assert not [u for u in uris if u.startswith("docker://")]  # FROM scratch: no base image
    tfvars = tmp_path / "image.auto.tfvars.json"
    config = tmp_path / "deploy.yaml"
    config.write_text(
        "shatag:\n  environments:\n    prod:\n"
        f"      targets:\n        - {{kind: tfvars, path: {tfvars}}}\n"
        "      verify:\n        signature: required\n        sbom: required\n"
        f"        provenance: required\n        source_repository: {SOURCE}\n"
    )
    deploy_ = inv(["-f", str(config), "deploy", f"--sha={app.sha}", "--env=prod"], env)
    assert deploy_.returncode == 0, deploy_.stderr
    assert json.loads(tfvars.read_text())["image_sha"] == app.sha


# -- item 5: deployment attestations ------------------------------------------------------


def test_deployments_are_attested_and_verify_lists_them_from_the_registry(
    make_site: Callable[..., Site], world: World
) -> None:
    site = make_site(verify={"signature": "required"})
    image = site.push(sha(1))
    sign_image(world.signer(world.key_a), image, env=world.env)
    site.push(sha(2))  # unsigned: fine under a soft environment
    attesting = Settings.from_mapping(
        {
            "canonical_repository": site.repo,
            "staging_repository": site.repo + "-staging",
            "cosign_key": str(world.key_a[0]),
            "cosign_public_key": str(world.key_a[1]),
            "state_dir": str(site.root / "state"),
            "environments": {
                ENV: {
                    "targets": [{"kind": "tfvars", "path": str(site.tfvars)}],
                    "verify": {"signature": "required"},
                    "attest_deployments": True,
                }
            },
        }
    )
    first = site.deploy(sha(1), attesting)
    assert first.warnings == ()
    listed = verify_sha(attesting, sha(1), env=world.env).deployments
    assert [(d.environment, d.action, d.initiated_by) for d in listed] == [
        (ENV, "deploy", "policy-test")
    ]
    assert listed[0].finished_at == first.finished_at
    # Without a signing key the attestation cannot be attached: a warning, the deploy stands.
    no_key = Settings.from_mapping(
        {
            "canonical_repository": site.repo,
            "staging_repository": site.repo + "-staging",
            "cosign_public_key": str(world.key_a[1]),
            "state_dir": str(site.root / "state"),
            "environments": {
                ENV: {
                    "targets": [{"kind": "tfvars", "path": str(site.tfvars)}],
                    "attest_deployments": True,
                }
            },
        }
    )
    second = site.deploy(sha(2), no_key)
    assert site.served() == sha(2)
    assert len(second.warnings) == 1
    assert "the deployment attestation was not attached" in second.warnings[0]
    assert "CONFIG_ERROR" in second.warnings[0]
    assert verify_sha(attesting, sha(2), env=world.env).deployments == ()


def test_a_named_base_image_resolves_to_its_digest_in_the_registry(
    make_site: Callable[..., Site], world: World
) -> None:
    site = make_site()
    base = site.push("1.0")  # a real image, tagged like a base image
    settings = site.settings()
    resolved = provenance.resolve_base(f"{site.repo}:1.0", settings.registry, env=world.env)
    assert resolved.digest == base.rpartition("@")[2]
    missing = provenance.resolve_base(f"{site.repo}:nope", settings.registry, env=world.env)
    assert missing.digest == ""
    dockerfile = f"FROM {site.repo}:1.0 AS base\nFROM base\nFROM scratch\n"
    assert provenance.base_image_names(dockerfile) == [f"{site.repo}:1.0"]


def test_cli_refuses_with_the_code_and_says_which_releases_the_walk_back_skips(
    make_site: Callable[..., Site], world: World, inv: Callable[..., InvResult]
) -> None:
    site = make_site(verify={"signature": "soft"})
    for n in (1, 2, 3):
        image = site.push(sha(n))
        if n != 2:
            sign_image(world.signer(world.key_a), image, env=world.env)
        site.deploy(sha(n))
    config = site.root / "shatag.yaml"
    config.write_text(
        "shatag:\n"
        f"  canonical_repository: {site.repo}\n"
        f"  staging_repository: {site.repo}-staging\n"
        f"  cosign_public_key: {world.key_a[1]}\n"
        f"  state_dir: {site.root / 'state'}\n"
        "  environments:\n"
        f"    {ENV}:\n"
        f"      targets: [{{kind: tfvars, path: {site.tfvars}}}]\n"
        "      verify: {signature: required}\n"
    )
    env = {**world.env, "HOME": str(site.root)}
    refused = inv(["-f", str(config), "deploy", f"--sha={sha(2)}", f"--env={ENV}"], env)
    assert refused.returncode != 0
    assert f"error: SIGNATURE_REQUIRED: environment '{ENV}' refuses" in refused.stderr
    assert "signature: required, but no trusted signature verifies (no_signature" in refused.stderr
    assert refused.record["error_code"] == "SIGNATURE_REQUIRED"
    assert "Traceback" not in refused.stderr
    assert site.served() == sha(3)

    back = inv(["-f", str(config), "rollback", f"--env={ENV}"], env)
    assert back.returncode == 0, back.stderr
    assert f"shatag: rollback skips {sha(2)}: SIGNATURE_REQUIRED:" in back.stderr
    assert back.record["image_sha"] == sha(1)
    assert site.served() == sha(1)
