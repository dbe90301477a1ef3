"""The README's two commands and the set-up scripts behind them (issue 18).

- the README starts with exactly two commands: the demo and the test suite; `.ci/run` runs the
  second verbatim;
- the demo's set-up (``ci/setup.sh`` without ``--tests``) never reaches Go or the test-only tools;
- the pins of ``ci/install-tools.sh`` are the ones the README states;
- every nox session that drives a test-only tool installs it first (when run alone).
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / "ci" / "setup.sh"
INSTALL_TOOLS = ROOT / "ci" / "install-tools.sh"
DEMO_COMMAND = "bash ci/setup.sh && .venv/bin/python ci/demo.py"


def readme_commands() -> list[str]:
    """The commands of the README's first ``sh`` block (comments dropped)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```sh\n(.*?)```", text, re.DOTALL)
    assert block, "README has no sh block"
    lines = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line]


def pins() -> dict[str, str]:
    """``{tool: version}`` from the ``X_VERSION="${X_VERSION:-v…}"`` lines of install-tools.sh."""
    text = INSTALL_TOOLS.read_text(encoding="utf-8")
    found = re.findall(r'^([A-Z]+)_VERSION="\$\{\1_VERSION:-(v[0-9.]+)\}"$', text, re.MULTILINE)
    return {name.lower(): version for name, version in found}


def all_tools() -> list[str]:
    text = INSTALL_TOOLS.read_text(encoding="utf-8")
    match = re.search(r"^ALL_TOOLS=\(([^)]*)\)$", text, re.MULTILINE)
    assert match, "install-tools.sh defines ALL_TOOLS"
    return match.group(1).split()


def outside_test_blocks(script: str) -> str:
    """The script's commands (no comments) outside its ``if [ "$MODE" = tests ]; then … fi``."""
    kept: list[str] = []
    skipping = False
    for line in script.splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.startswith('if [ "$MODE" = tests ]; then'):
            skipping = True
        elif skipping and line == "fi":
            skipping = False
        elif not skipping:
            kept.append(line)
    assert not skipping, "unterminated tests block"
    return "\n".join(kept)


def test_readme_starts_with_exactly_the_two_commands() -> None:
    commands = readme_commands()
    assert len(commands) == 2, commands
    demo, tests = commands
    assert demo == DEMO_COMMAND
    assert tests.startswith("bash ci/setup.sh --tests && ")
    run = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert run[-1] == tests, ".ci/run calls the README's test command verbatim"
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.index("```sh") < text.index("## "), "the commands come before any section"


def test_demo_setup_needs_no_go_and_no_test_tool() -> None:
    demo_path = outside_test_blocks(SETUP.read_text(encoding="utf-8"))
    for word in ("install-tools.sh", "install-kubernetes.sh", "go install", "go build"):
        assert word not in demo_path, word
    assert not re.search(r"^\s*go\s", demo_path, re.MULTILINE)
    assert "TEST_APT_PACKAGES[@]" not in demo_path
    script = SETUP.read_text(encoding="utf-8")
    assert "install-tools.sh all" in script
    assert "[ -f ci/install-kubernetes.sh ]" in script


def test_the_readme_states_the_pins_of_install_tools() -> None:
    found = pins()
    assert sorted(found) == sorted(all_tools()), found
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for tool, version in found.items():
        assert f"{tool} {version}" in readme.lower(), (tool, version)


def session_tools() -> dict[str, list[str]]:
    """``{session: [tools…]}`` from the ``_tools(session, …)`` calls in noxfile.py."""
    tree = ast.parse((ROOT / "noxfile.py").read_text(encoding="utf-8"))
    result: dict[str, list[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            result[node.name] = [
                arg.value
                for call in ast.walk(node)
                if isinstance(call, ast.Call)
                and isinstance(call.func, ast.Name)
                and call.func.id == "_tools"
                for arg in call.args[1:]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
            ]
    return result


def test_nox_sessions_install_the_tools_they_drive() -> None:
    tools = session_tools()
    known = {*all_tools(), "kubernetes"}
    for session, names in tools.items():
        assert set(names) <= known, (session, names)
    assert "actionlint" in tools["lint"]
    for session in ("contract", "integration", "reliability", "perf"):
        assert {"cosign", "syft"} <= set(tools[session]), session
    assert tools["demo"] == [], "the demo needs no test-only tool"


def test_the_demo_folds_docker_output_into_one_line_per_command() -> None:
    spec = importlib.util.spec_from_file_location("shatag_demo", ROOT / "ci" / "demo.py")
    assert spec
    assert spec.loader
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    lines = [
        "--- docker build 01a3d1d97b0a",
        "DEPRECATED: The legacy builder is deprecated and will be removed in a future release.",
        "            BuildKit is currently disabled; enable it by removing the DOCKER_BUILDKIT=0",
        "",
        "Step 1/9 : FROM scratch",
        " ---> Running in 5d1a",
        "Successfully built 2259a9280885",
        "Successfully tagged localhost:5000/api:shatag-build-ae3a22a00a32-48861f3d",
        "The push refers to repository [localhost:5000/api]",
        "5f70bf18a086: Pushed",
        "01a3d1d97b0a: digest: sha256:26c9 size: 735",
        "image: localhost:5000/api:01a3d1d97b0a@sha256:26c9",
        "warning: something the user should read",
    ]
    assert demo.folded(lines) == [
        "--- docker build 01a3d1d97b0a (10 lines of docker output folded)",
        "image: localhost:5000/api:01a3d1d97b0a@sha256:26c9",
        "warning: something the user should read",
    ]
    assert demo.folded(["--- docker build x", "Step 1/2 : FROM scratch", "Step 2/2 : COPY"]) == [
        "--- docker build x (2 lines of docker output folded)"
    ]
    assert demo.folded(["--- docker build x", "image: y"]) == ["--- docker build x", "image: y"]


def test_no_session_lets_pytest_exit_code_5_pass() -> None:
    """Exit code 5 (no tests collected) must fail the session, never pass silently."""
    tree = ast.parse((ROOT / "noxfile.py").read_text(encoding="utf-8"))
    for call in ast.walk(tree):
        if isinstance(call, ast.Call):
            for keyword in call.keywords:
                if keyword.arg == "success_codes":
                    codes = ast.literal_eval(keyword.value)
                    assert 5 not in codes, ast.unparse(call)
