"""GitOps targets cannot miss (issue 23, item 2): a helm_values key path the file does not have
is refused (unless ``create_keys``), the default digest key pins ``tag: <sha>@sha256:…`` when
the file has none, a kustomize ``name`` no resource uses is refused; and every edit keeps every
other byte of real-style values files (Hypothesis: comments, anchors, flow maps, quoting)."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from shatag.core import ImageRef, parse_repository
from shatag.errors import ConfigError
from shatag.targets import TargetContext, make_target, parse_target
from shatag.targets.helm_values import HelmValuesTarget

IMG = ImageRef(parse_repository("127.0.0.1:5000/api"), "a" * 40, "sha256:" + "b" * 64)

VALUES = """\
# Helm values for production (hand-maintained)
replicaCount: 3
image:
  repository: ghcr.io/example/api  # shatag
  tag: "latest"
  pullPolicy: IfNotPresent
resources: {limits: {cpu: 500m}}
"""


def changed(old: str, new: str) -> list[str]:
    return [
        line
        for line in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def deploy_file(tmp_path: Path, text: str, **keys: object) -> str:
    """Prepare + apply a helm_values target on a file holding ``text``: the new content."""
    path = tmp_path / "values.yaml"
    path.write_text(text)
    spec = parse_target("t", {"kind": "helm_values", "path": str(path), **keys})
    target = make_target(spec, TargetContext())
    target.prepare(IMG)
    target.apply()
    target.commit()
    return path.read_text()


def test_default_digest_key_absent_pins_the_tag_and_creates_nothing(tmp_path: Path) -> None:
    new = deploy_file(tmp_path, VALUES)
    assert changed(VALUES, new) == [
        "-  repository: ghcr.io/example/api  # shatag",
        '-  tag: "latest"',
        f"+  repository: {IMG.repository}  # shatag",
        f'+  tag: "{IMG.sha}@{IMG.digest}"',
    ]


def test_default_digest_key_present_gets_the_digest(tmp_path: Path) -> None:
    text = VALUES.replace("  pullPolicy", '  digest: ""\n  pullPolicy')
    new = deploy_file(tmp_path, text)
    assert changed(text, new) == [
        "-  repository: ghcr.io/example/api  # shatag",
        '-  tag: "latest"',
        '-  digest: ""',
        f"+  repository: {IMG.repository}  # shatag",
        f'+  tag: "{IMG.sha}"',
        f'+  digest: "{IMG.digest}"',
    ]


@pytest.mark.parametrize(
    ("keys", "needle"),
    [
        ({"tag_key": "image.tg"}, "tag_key image.tg is not in the values file (image has "
                                  "repository, tag, pullPolicy)"),
        ({"repository_key": "img.repository"}, "repository_key img.repository is not in the "
                                               "values file (the file has replicaCount, image, "
                                               "resources)"),
        ({"digest_key": "image.digest"}, "digest_key image.digest is not in the values file"),
        ({"tag_key": "resources.limits"}, "tag_key resources.limits is a mapping, not a value"),
    ],
)  # fmt: skip
def test_a_key_path_the_file_lacks_is_refused_and_nothing_is_written(
    tmp_path: Path, keys: dict[str, str], needle: str
) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(VALUES)
    target = make_target(
        parse_target("t", {"kind": "helm_values", "path": str(path), **keys}), TargetContext()
    )
    with pytest.raises(ConfigError) as caught:
        target.prepare(IMG)
    assert needle in str(caught.value)
    assert "create_keys: true" in str(caught.value)
    assert "Nothing was written" in str(caught.value)
    assert path.read_text() == VALUES


def test_create_keys_adds_a_missing_key_beside_its_siblings(tmp_path: Path) -> None:
    new = deploy_file(tmp_path, VALUES, digest_key="image.digest", create_keys=True)
    assert changed(VALUES, new) == [
        "-  repository: ghcr.io/example/api  # shatag",
        '-  tag: "latest"',
        f"+  repository: {IMG.repository}  # shatag",
        f'+  tag: "{IMG.sha}"',
        f"+  digest: {IMG.digest}",
    ]
    assert new.index("pullPolicy") < new.index("digest:"), "after the last key of image"


def test_a_chart_without_helm_on_path_is_not_rendered_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without helm on PATH the edit is made and a warning names the chart (the ``helm
    template`` check itself runs against the real helm in
    tests/integration/test_helm_chart_check.py)."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with caplog.at_level("WARNING"):
        new = deploy_file(tmp_path, VALUES, chart=str(tmp_path / "chart"))
    assert f'tag: "{IMG.sha}@{IMG.digest}"' in new
    assert "helm is not on PATH: the chart" in caplog.text


def test_bad_new_keys_are_config_errors() -> None:
    for raw, needle in (
        ({"create_keys": "yes"}, "create_keys must be true or false"),
        ({"git_push": "yes"}, "git_push must be true or false"),
        ({"git_branch": "main"}, "git_remote and git_branch need git_push: true"),
        ({"git_push": True, "git_branch": "-f"}, "git_branch must be a git remote/branch"),
    ):
        with pytest.raises(ConfigError, match=needle):
            parse_target("t", {"kind": "helm_values", "path": "v.yaml", **raw})
    with pytest.raises(ConfigError, match="unknown keys git"):
        parse_target("t", {"kind": "sdl", "path": "d.yaml", "service": "api", "git_push": True})


# -- kustomize: a name no resource uses ---------------------------------------------------

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  template:
    spec:
      containers:
        - name: api
          image: ghcr.io/example/api:1.0
"""


def kustomize_tree(tmp_path: Path) -> Path:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "deployment.yaml").write_text(DEPLOYMENT)
    (tmp_path / "base" / "kustomization.yaml").write_text("resources:\n  - deployment.yaml\n")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    path = overlay / "kustomization.yaml"
    path.write_text("resources:\n  - ../base\nimages:\n  - name: api\n    newTag: old\n")
    return path


@pytest.mark.parametrize("name", ["ghcr.io/example/api", "api"])
def test_kustomize_static_check_without_renderer(tmp_path: Path, name: str) -> None:
    path = kustomize_tree(tmp_path)
    before = path.read_text()
    spec = parse_target("t", {"kind": "kustomize", "path": str(path), "name": name,
                              "renderer": "none"})  # fmt: skip
    target = make_target(spec, TargetContext())
    if name == "api":  # the resources use ghcr.io/example/api: "api" changes nothing
        with pytest.raises(ConfigError) as caught:
            target.prepare(IMG)
        assert str(caught.value) == (
            f"kustomize:{path}: refused: no resource of {path} uses the image name 'api' (they "
            "use ghcr.io/example/api); the edit would change nothing that runs. Nothing was "
            "written"
        )
        assert path.read_text() == before
    else:
        target.prepare(IMG)
        target.apply()
        images = YAML().load(path.read_text())["images"]
        assert [i.get("digest") for i in images if i["name"] == name] == [IMG.digest]


# -- every other byte stays (property) -----------------------------------------------------

WORDS = st.sampled_from(["api", "web", "cache", "worker", "v1", "on", "yes", "8080", "a b"])
QUOTES = st.sampled_from(["{}", '"{}"', "'{}'"])
COMMENT = st.sampled_from(["", "  # set by CI", "  # keep: 'x' \"y\""])


@st.composite
def values_files(draw: st.DrawFn) -> tuple[str, str]:
    """A real-style values file with an ``image`` block (block or flow, quoted or plain,
    anchored or commented) among unrelated content; and the style of its image block."""
    lines = ["# values (hand-maintained)\n"]
    if draw(st.booleans()):
        lines += ["defaults: &defaults\n", "  cpu: 500m\n", "  memory: 256Mi\n"]
        lines += ["worker:\n", "  <<: *defaults\n", f"  name: {draw(WORDS)!s}\n"]
    repo = draw(QUOTES).format("ghcr.io/example/api")
    tag = draw(QUOTES).format(draw(st.sampled_from(["latest", "1.0", "2024-01-01"])))
    digest = draw(st.booleans())
    style = draw(st.sampled_from(["block", "flow", "anchored"]))
    if style == "flow":
        extra = ", digest: ''" if digest else ""
        lines.append(f"image: {{repository: {repo}, tag: {tag}{extra}}}{draw(COMMENT)}\n")
    else:
        anchor = "&tag " if style == "anchored" else ""
        lines += ["image:\n", f"  repository: {repo}{draw(COMMENT)}\n"]
        lines.append(f"  tag: {anchor}{tag}{draw(COMMENT)}\n")
        lines += ['  digest: ""\n'] if digest else []
        lines.append("  pullPolicy: IfNotPresent\n")
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(["service", "ingress", "env", "labels"]))
        lines += [f"{key}_{len(lines)}:\n", f"  name: {draw(QUOTES).format(draw(WORDS))}\n"]
        lines += [f"  list: [{draw(WORDS)!s}, {draw(WORDS)!s}]\n", "\n"]
    return "".join(lines), style


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values_files(), st.sampled_from(["tag+digest", "digest", "tag"]))
def test_property_only_the_image_values_change(case: tuple[str, str], pin: str) -> None:
    text, _style = case
    spec = parse_target("t", {"kind": "helm_values", "path": "/nonexistent/v.yaml", "pin": pin})
    target = HelmValuesTarget(spec)  # type: ignore[arg-type]  # parse_target's static type
    new = target.render(text, IMG)
    old_lines, new_lines = text.splitlines(), new.splitlines()
    assert len(old_lines) == len(new_lines), "no line added or dropped"
    differ = [i for i, (a, b) in enumerate(zip(old_lines, new_lines, strict=True)) if a != b]
    starts = ("image:", "  repository:", "  tag:", "  digest:")
    image = [i for i, line in enumerate(old_lines) if line.startswith(starts)]
    assert set(differ) <= set(image), "only the lines of the image values change"
    loaded = YAML().load(new)
    has_digest = "digest" in YAML().load(text)["image"]
    expected_tag = IMG.sha if has_digest or pin == "tag" else f"{IMG.sha}@{IMG.digest}"
    assert loaded["image"]["repository"] == str(IMG.repository)
    assert loaded["image"]["tag"] == expected_tag
    if has_digest:
        assert loaded["image"]["digest"] == ("" if pin == "tag" else IMG.digest)
    for i in differ:  # each changed line keeps its keys, anchor, comment and quoting
        before, after = old_lines[i], new_lines[i]
        assert re.findall(r"(\w+): (&tag )?(['\"{]?)", before) == re.findall(
            r"(\w+): (&tag )?(['\"{]?)", after
        )
        assert before.partition("  #")[2] == after.partition("  #")[2]


def test_the_plan_says_where_the_edit_is_pushed(tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(VALUES)
    spec = parse_target("t", {"kind": "helm_values", "path": str(path), "git_push": True,
                              "git_branch": "gitops"})  # fmt: skip
    plan = make_target(spec, TargetContext()).plan(IMG)
    assert f'+  tag: "{IMG.sha}@{IMG.digest}"' in plan
    assert plan.endswith("(then committed and pushed to origin/gitops, without force)\n")
    assert path.read_text() == VALUES
