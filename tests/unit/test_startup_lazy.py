"""What start-up does not import (issue 17, goal 2): `inv --list` and a file-only deploy's
configuration never load the docker kind, python-on-whales or another kind's module.

Each check runs a fresh interpreter (the test process has imported everything already) and
reads its ``sys.modules``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import shatag

#: Modules only a docker (or Kubernetes) target needs.
HEAVY = (
    "python_on_whales",
    "pydantic",
    "requests",
    "shatag.targets.docker",
    "shatag.targets.docker.gated",
    "shatag.targets.docker.proxy",
    "shatag._sys.docker",
    "shatag.targets.kubernetes",
    "shatag.targets.kustomize",
    "shatag.targets.helm_values",
)

FILE_ONLY_CONFIG = {
    "environments": {
        "prod": {
            "targets": [
                {"kind": "sdl", "path": "infra/deploy.yaml", "service": "api"},
                {"kind": "tfvars", "path": "infra/image.auto.tfvars.json"},
            ]
        }
    }
}


def _loaded_after(code: str, heavy: tuple[str, ...] = HEAVY) -> set[str]:
    """The modules of ``heavy`` a fresh interpreter has loaded after running ``code``."""
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    modules = set(json.loads(out.splitlines()[-1]))
    return {m for m in modules if any(m == h or m.startswith(h + ".") for h in heavy)}


def test_the_task_collection_imports_no_target_kind() -> None:
    """What ``inv --list`` and ``inv build --help`` load: the collection and its defaults (no
    validation, no target registry: those load when a task runs)."""
    validation = ("shatag.config", "shatag.targets", "shatag._sys.source", "shatag.core")
    assert _loaded_after("import shatag.tasks, shatag.cli", HEAVY + validation) == set()


def test_a_file_only_configuration_imports_only_its_kinds() -> None:
    code = (
        "import sys\n"
        "from shatag.config import Settings\n"
        f"s = Settings.from_mapping({FILE_ONLY_CONFIG!r})\n"
        "assert [t.kind for t in s.environment('prod').targets] == ['sdl', 'tfvars']\n"
        "assert 'shatag.targets.sdl' in sys.modules and 'shatag.targets.tfvars' in sys.modules"
    )
    assert _loaded_after(code) == set()


#: Modules a deploy to file targets without git_push, verify: provenance or attest_deployments
#: never calls: a build's git tree export, provenance and deployment attestations, write-back.
FILE_DEPLOY_UNUSED = (
    "shatag._sys.gittree",
    "shatag.supplychain.provenance",
    "shatag.supplychain.deployments",
    "shatag.targets.writeback",
)


def test_a_file_deploy_imports_no_build_attestation_or_write_back_module() -> None:
    """Importing them cost ~8 ms of CPU per file-target deploy (about 4%)."""
    code = (
        "import shatag.tasks, shatag.app.deploy, shatag.targets.files\n"
        "from shatag.config import Settings\n"
        f"Settings.from_mapping({FILE_ONLY_CONFIG!r})"
    )
    assert _loaded_after(code, HEAVY + FILE_DEPLOY_UNUSED) == set()


@pytest.mark.parametrize("kind", ["docker", "kubernetes"])
def test_a_kind_is_imported_when_a_configuration_names_it(kind: str) -> None:
    """The other side: looking a kind up loads its module (nothing is left half-registered)."""
    code = f"from shatag.targets import KINDS\nassert KINDS[{kind!r}].name == {kind!r}"
    assert f"shatag.targets.{kind}" in _loaded_after(code)


def test_every_dataclass_has_a_docstring() -> None:
    """Without one, ``@dataclass`` computes ``inspect.signature(cls)`` at import to make one:
    about 0.4 ms per frozen, slotted class here, paid by every CLI start (issue 17)."""
    missing = []
    for path in sorted(Path(shatag.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.ClassDef)
                and any("dataclass" in ast.unparse(d) for d in node.decorator_list)
                and ast.get_docstring(node) is None
            ):
                missing.append(f"{path.name}:{node.lineno} {node.name}")
    assert missing == []
