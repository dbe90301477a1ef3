"""The tfvars target against a real OpenTofu (issue 13, item 4).

A provider-less configuration with exactly ``variable "image_repo"`` and ``variable
"image_tag"`` and a ``terraform_data`` resource (``fixtures/akash-api``). Without ``variables``
the target writes ``image_sha``/``image_digest``/``image_ref`` and ``tofu apply`` stops with "No
value for required variable" — the defect the issue reports; with the mapping, ``tofu apply``
sees exactly the pinned image, for a deploy, the next deploy and a rollback. The whole deploy
path (registry, history, rollback) with OpenTofu runs in ``test_adoption.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

from shatag.core import ImageRef, parse_repository
from shatag.targets import TargetContext, make_target, parse_target
from tests.integration._tofu import apply, copy_fixture, tofu

REPO = parse_repository("127.0.0.1:5000/api")
A = ImageRef(REPO, "a" * 40, "sha256:" + "1" * 64)
B = ImageRef(REPO, "b" * 40, "sha256:" + "2" * 64)
MAPPED = {"image_repo": "{repository}", "image_tag": "{sha}@{digest}"}


def _write(workdir: Path, image: ImageRef, variables: dict[str, str] | None) -> None:
    raw: dict[str, object] = {"kind": "tfvars", "path": "image.auto.tfvars.json"}
    if variables is not None:
        raw["variables"] = variables
    target = make_target(parse_target("t", raw, workdir), TargetContext())
    target.prepare(image)
    target.apply()
    target.commit()


def test_default_keys_leave_the_declared_variables_unset(tmp_path: Path) -> None:
    workdir = copy_fixture(tmp_path / "akash-api")
    _write(workdir, A, None)
    assert set(json.loads((workdir / "image.auto.tfvars.json").read_text())) == {
        "image_sha",
        "image_digest",
        "image_ref",
    }
    assert tofu(workdir, "init", "-input=false").returncode == 0
    run = tofu(workdir, "apply", "-auto-approve", "-input=false")
    assert run.returncode != 0
    assert "No value for required variable" in run.stdout + run.stderr


def test_mapped_variables_drive_a_real_tofu_apply(tmp_path: Path) -> None:
    workdir = copy_fixture(tmp_path / "akash-api")
    _write(workdir, A, MAPPED)
    assert json.loads((workdir / "image.auto.tfvars.json").read_text()) == {
        "image_repo": str(REPO),
        "image_tag": f"{A.sha}@{A.digest}",
    }
    assert apply(workdir) == A.pinned
    _write(workdir, B, MAPPED)
    assert apply(workdir) == B.pinned
    _write(workdir, A, MAPPED)  # what a rollback writes
    assert apply(workdir) == A.pinned
