"""The pure parts of issue 25: the ``verify:`` block, the provenance predicate and its checks,
quarantine marks in a real history file, the walk-back candidates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shatag.app.policy import _refusal, _unmet, check_policy, quarantine_message, trust
from shatag.config import Settings, SigningConfig, VerifyPolicy
from shatag.core import ImageRef, parse_repository
from shatag.errors import ConfigError, PolicyViolation, SignatureRequired
from shatag.ledger.history import (
    HistoryRecord,
    HistoryStore,
    catalog,
    format_catalog,
    walk_back_candidates,
)
from shatag.supplychain import provenance
from shatag.supplychain.signing import SignatureResult

SHA = "a" * 40
DIGEST = "sha256:" + "b" * 64


def settings(verify: Any, base: Path | None = None) -> Settings:
    return Settings.from_mapping(
        {
            "environments": {
                "prod": {"targets": [{"kind": "tfvars", "path": "x.json"}], "verify": verify}
            }
        },
        base_dir=base,
    )


def test_a_full_verify_block_is_parsed_and_key_paths_resolve_against_the_config_dir() -> None:
    policy = (
        settings(
            {
                "signature": "required",
                "sbom": "required",
                "provenance": "optional",
                "source_repository": "https://github.com/acme/api/",
                "signers": [
                    {"key": "keys/release.pub"},
                    {"key": "awskms:///alias/release"},
                    {"identity": "^https://github.com/acme/", "issuer": "https://token.example"},
                ],
            },
            base=Path("/etc/app"),
        )
        .environment("prod")
        .verify
    )
    assert policy == VerifyPolicy(
        signature="required",
        sbom=True,
        provenance=False,
        source_repository="https://github.com/acme/api",
        signers=policy.signers if policy else (),
    )
    assert policy is not None
    assert [s.key for s in policy.signers] == [
        "/etc/app/keys/release.pub",
        "awskms:///alias/release",
        "",
    ]
    assert policy.signers[2].issuer == "https://token.example"
    assert policy.needs_provenance  # source_repository implies it


def test_without_verify_the_environment_keeps_the_global_policy() -> None:
    assert settings(None).environment("prod").verify is None


@pytest.mark.parametrize(
    ("verify", "says"),
    [
        ({"signatures": "required"}, "unknown keys signatures"),
        ({"signature": "enforce"}, "off, soft or required"),
        ({"sbom": "maybe"}, "required or optional"),
        ({"signature": "off", "provenance": "required"}, "needs a signature check"),
        ({"signers": [{"key": "k.pub", "identity": "x", "issuer": "y"}]}, "not both"),
        ({"signers": [{"identity": "x"}]}, "identity and its issuer"),
        ({"signers": "k.pub"}, "must be a list"),
        ({"signers": [{"keys": "k.pub"}]}, "must be a mapping of"),
        ({"source_repository": 3}, "URL string"),
        ("required", "must be a mapping"),
    ],
)
def test_a_bad_verify_block_is_a_config_error_naming_the_key(verify: Any, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as info:
        settings(verify)
    assert "shatag.environments.prod.verify" in info.value.message


def test_trust_is_one_configuration_per_signer_or_the_global_one() -> None:
    global_trust = SigningConfig(policy="enforce", cosign_public_key="/g.pub")
    assert trust(global_trust, VerifyPolicy()) == [SigningConfig(cosign_public_key="/g.pub")]
    policy = (
        settings({"signers": [{"key": "/a.pub"}, {"identity": "i", "issuer": "https://iss"}]})
        .environment("prod")
        .verify
    )
    assert policy is not None
    configs = trust(global_trust, policy)
    assert [(c.cosign_public_key, c.keyless_identity, c.policy) for c in configs] == [
        ("/a.pub", "", "soft"),
        ("", "i", "soft"),
    ]


def test_signature_off_checks_nothing_and_calls_no_cosign() -> None:
    image = ImageRef(parse_repository("127.0.0.1:5000/api"), SHA, DIGEST)
    outcome = check_policy(
        SigningConfig(), "prod", VerifyPolicy(signature="off"), image, env={"PATH": "/nonexistent"}
    )
    assert (outcome.status, outcome.reason) == ("unverified", "n/a")


def test_each_unmet_rule_is_named_and_the_signature_rule_decides_the_code() -> None:
    image = ImageRef(parse_repository("127.0.0.1:5000/api"), SHA, DIGEST)
    bad = SignatureResult("unverified", "no_signature", "Error: no signatures found")
    good = SignatureResult("verified", "n/a")
    strict = VerifyPolicy(signature="required", sbom=True)
    unmet = _unmet(strict, bad, bad, None)
    assert [rule for rule, _ in unmet] == ["signature", "sbom"]
    error = _refusal("prod", image, unmet)
    assert isinstance(error, SignatureRequired)
    assert "signature: required, but no trusted signature verifies (no_signature:" in str(error)
    only_sbom = _refusal("prod", image, _unmet(strict, good, bad, None))
    assert isinstance(only_sbom, PolicyViolation)
    assert "sbom: required" in str(only_sbom)
    assert _unmet(VerifyPolicy(signature="soft"), bad, bad, None) == []  # soft never refuses


# -- the provenance predicate --------------------------------------------------------------


def inputs(**changes: Any) -> provenance.ProvenanceInputs:
    base: dict[str, Any] = {
        "sha": SHA,
        "source_url": "https://github.com/acme/api",
        "ref": "refs/heads/main",
        "dockerfile": "Dockerfile",
        "build_source": "commit",
        "image_repository": "ghcr.io/acme/api",
        "builder_id": "https://github.com/acme/api/actions/runs/7",
        "started_on": "2026-01-01T00:00:00Z",
        "finished_on": "2026-01-01T00:01:00Z",
        "build_args": {"VERSION": "1"},
        "build_inputs": [{"path": "dist/app.js", "sha256": "c" * 64, "size": 3}],
        "base_images": [
            provenance.BaseImage("alpine:3.20", "sha256:" + "d" * 64),
            provenance.BaseImage("internal.example/base:1"),
        ],
    }
    base.update(changes)
    return provenance.ProvenanceInputs(**base)


def test_the_predicate_lists_commit_inputs_and_base_images() -> None:
    predicate = provenance.predicate(inputs())
    definition = predicate["buildDefinition"]
    assert definition["buildType"] == provenance.BUILD_TYPE
    assert definition["externalParameters"]["build_args"] == {"VERSION": "1"}
    assert definition["resolvedDependencies"] == [
        {"uri": f"git+https://github.com/acme/api@{SHA}", "digest": {"gitCommit": SHA}},
        {"uri": "file:dist/app.js", "name": "dist/app.js", "digest": {"sha256": "c" * 64}},
        {"uri": "docker://alpine:3.20", "name": "alpine:3.20", "digest": {"sha256": "d" * 64}},
        {"uri": "docker://internal.example/base:1", "name": "internal.example/base:1"},
    ]
    assert predicate["runDetails"]["metadata"]["finishedOn"] == "2026-01-01T00:01:00Z"


def statement(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": provenance.PREDICATE_TYPE_URI,
        "subject": [{"name": "ghcr.io/acme/api", "digest": {"sha256": "b" * 64}}],
        "predicate": provenance.predicate(inputs()),
    }
    data.update(changes)
    return data


def test_a_statement_about_this_digest_and_sha_passes() -> None:
    assert provenance.check_statement(statement(), digest=DIGEST, sha=SHA) == []
    assert provenance.provenance_repository(statement()) == "https://github.com/acme/api"


def test_a_statement_about_another_image_type_or_sha_fails_with_each_reason() -> None:
    other = statement(
        subject=[{"digest": {"sha256": "e" * 64}}], predicateType="https://spdx.dev/Document"
    )
    problems = provenance.check_statement(other, digest=DIGEST, sha="f" * 40)
    assert problems == [
        "its predicate type is 'https://spdx.dev/Document'",
        f"its subject is not the image {DIGEST}",
        "its provenance names SHA aaaaaaaaaaaa…, not ffffffffffff…",
    ]
    assert provenance.check_statement({"predicateType": 1}, digest=DIGEST, sha=SHA)[-1] == (
        "its provenance names SHA none…, not aaaaaaaaaaaa…"
    )


def test_base_images_skip_scratch_stages_and_platform_flags() -> None:
    text = (
        "ARG BASE=alpine\nFROM --platform=linux/amd64 golang:1.22@sha256:"
        + "1" * 64
        + " AS build\n"
        "FROM build AS test\nfrom ${BASE}:3\nFROM scratch\nFROM golang:1.22@sha256:"
        + "1" * 64
        + "\n"
    )
    names = provenance.base_image_names(text)
    assert names == ["golang:1.22@sha256:" + "1" * 64, "${BASE}:3"]
    pinned = provenance.resolve_base(names[0], Settings.from_mapping({}).registry, env={})
    assert pinned.digest == "sha256:" + "1" * 64
    assert (
        provenance.resolve_base(names[1], Settings.from_mapping({}).registry, env={}).digest == ""
    )


def test_the_builder_is_the_actions_run_or_host_and_user() -> None:
    run = {
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": "acme/api",
        "GITHUB_RUN_ID": "42",
        "GITHUB_RUN_ATTEMPT": "2",
    }
    assert provenance.builder_id(run) == (
        "https://github.com/acme/api/actions/runs/42",
        "https://github.com/acme/api/actions/runs/42/attempts/2",
    )
    host, invocation = provenance.builder_id({"USER": "alice"})
    assert host.endswith("/alice")
    assert invocation == ""


# -- quarantine marks in a real history file ---------------------------------------------------


def rec(sha: str, action: Any = "deploy", **kw: Any) -> HistoryRecord:
    digest = "" if action in ("quarantine", "unquarantine") else "sha256:" + sha[0] * 64
    return HistoryRecord(action, "prod", sha, digest, "ok", finished_at=f"t-{sha[0]}", **kw)


def test_marks_never_change_what_runs_and_the_newest_mark_decides(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path, "prod")
    a, b, c = "a" * 40, "b" * 40, "c" * 40
    for record in (rec(a), rec(b), rec(b, "quarantine", reason="broken login")):
        store.append(record)
    assert store.current() == rec(b)
    assert store.previous() == rec(a)
    mark = store.quarantine_of(b)
    assert mark is not None
    assert mark.reason == "broken login"
    assert store.quarantine_of(a) is None
    assert store.digest_for(b) == "sha256:" + "b" * 64  # the mark has no digest to offer
    assert "broken login" in quarantine_message("prod", mark)
    store.append(rec(c))
    store.append(rec(b, "unquarantine"))
    assert store.quarantine_of(b) is None
    assert store.current() == rec(c)
    rows = catalog(store, limit=None)
    assert [(r["action"], r["current"]) for r in rows] == [
        ("unquarantine", False),
        ("deploy", True),
        ("quarantine", False),
        ("deploy", False),
        ("deploy", False),
    ]
    assert rows[2]["reason"] == "broken login"
    assert "ok: broken login" in format_catalog("prod", rows)
    # The generic (git-backend) query agrees with the file's byte scan.
    assert super(HistoryStore, store).quarantine_of(b) is None
    assert [r.sha for r in walk_back_candidates(store.iter_newest())] == [b, a]


def test_a_mark_line_round_trips_and_an_unknown_action_is_dropped() -> None:
    mark = rec("d" * 40, "quarantine", reason="why")
    assert HistoryRecord.from_json(mark.to_json()) == mark
    assert HistoryRecord.from_json(mark.to_json().replace("quarantine", "purge")) is None
