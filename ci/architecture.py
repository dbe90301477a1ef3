"""The package's import facts, read from the code with ``ast`` (issue 22, item 4).

``python ci/architecture.py`` prints, per layer of ``src/shatag``, its modules, what they
import from shatag and what the layer may import; ``docs/architecture.md`` shows that table and
``tests/unit/test_architecture.py`` asserts the rules: every import of a shatag module goes to a
layer its own layer may import, and the module-level imports form no cycle.

An import is *module-level* when it runs on ``import`` (not under ``if TYPE_CHECKING:``, not in a
function body); *lazy* when it is in a function body (run on first call); *typing* when it is
under ``if TYPE_CHECKING:``. The layer rule covers all three, the no-cycle rule the first kind.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

ROOT: Final = Path(__file__).resolve().parents[1]
SRC: Final = ROOT / "src"

When = Literal["module", "lazy", "typing"]

#: Layer name → the module prefixes it holds (longest prefix wins). Top to bottom: a layer may
#: import only the layers listed for it in :data:`MAY_IMPORT` (and itself).
LAYERS: Final[Mapping[str, tuple[str, ...]]] = {
    "edge": (
        "shatag.tasks", "shatag.cli", "shatag._invoke", "shatag._action", "shatag._exit",
        "shatag.output", "shatag.metrics",
    ),
    "app": ("shatag.app",),
    "supplychain": ("shatag.supplychain",),
    "ledger": ("shatag.ledger",),
    "config": ("shatag.config", "shatag._defaults"),
    "targets": ("shatag.targets",),
    "_sys": ("shatag._sys",),
    "pure": (
        "shatag", "shatag.core", "shatag.errors", "shatag.limits", "shatag.templates",
        "shatag.masking",
    ),
    "_testing": ("shatag._testing",),
}  # fmt: skip

MAY_IMPORT: Final[Mapping[str, frozenset[str]]] = {
    "edge": frozenset(LAYERS),
    "app": frozenset(
        {"edge:metrics", "supplychain", "ledger", "config", "targets", "_sys", "pure"}
    ),
    "supplychain": frozenset({"config", "_sys", "pure"}),
    "ledger": frozenset({"config", "_sys", "pure"}),
    "config": frozenset({"targets", "_sys", "pure"}),
    "targets": frozenset({"_sys", "pure"}),
    "_sys": frozenset({"pure"}),
    "pure": frozenset(),
    "_testing": frozenset(),
}
"""``layer:module-suffix`` names one module of a layer (the app reports metrics, nothing else of
the edge)."""

#: What each layer owns, for the table.
OWNS: Final[Mapping[str, str]] = {
    "edge": "the Invoke tasks and the `shatag` script: flags, exit codes, what is printed, metrics",
    "app": "the use cases: build, deploy, rollback, promote, verify, status, board, quarantine",
    "supplychain": "the registry client, manifests, cosign, syft, build records, evidence",
    "ledger": "deployment history, the per-environment lock and crash journal (local or git)",
    "config": "the configuration keys, their defaults and their validation into `Settings`",
    "targets": "the kinds of target: protocol + registry, one module or package per kind",
    "_sys": "processes (the one subprocess chokepoint), signals, files, docker, git sources",
    "pure": "values and rules without I/O: SHAs, refs, policy, errors, limits, templates, masking",
    "_testing": "the throwaway local registry of the tests and the demo (not in the wheel)",
}


@dataclass(frozen=True, slots=True)
class Import:
    source: str
    target: str
    when: When
    line: int


def modules(src: Path = SRC) -> dict[str, Path]:
    """``{dotted module name: file}`` for every module of the package."""
    found: dict[str, Path] = {}
    for path in sorted((src / "shatag").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(src: Path = SRC) -> list[Import]:
    """Every import of a shatag module by a shatag module (``from a import b`` names ``a.b``
    when that is a module, else ``a``)."""
    known = modules(src)
    found: list[Import] = []
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, when in _walk(tree.body, "module"):
            for target in _targets(node, package, known):
                if target.split(".")[0] == "shatag" and target != name:
                    found.append(Import(name, target, when, node.lineno))
    return found


def _walk(body: list[ast.stmt], when: When) -> Iterator[tuple[ast.Import | ast.ImportFrom, When]]:
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, when
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from _walk(node.body, "typing")
            yield from _walk(node.orelse, when)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    yield inner, "lazy" if when == "module" else when
        else:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    yield from _walk([child], when)


def _targets(
    node: ast.Import | ast.ImportFrom, package: str, known: Mapping[str, Path]
) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parts = package.split(".")
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join([*parts, *([node.module] if node.module else [])])
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]


def layer(module: str) -> str:
    """The layer of a module: the one with the longest matching prefix."""
    best, size = "", -1
    for name, prefixes in LAYERS.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > size:
                best, size = name, len(prefix)
    if not best:
        raise LookupError(f"{module} is in no layer of ci/architecture.py")
    return best


def allowed(source: str, target: str) -> bool:
    src, dst = layer(source), layer(target)
    if src == dst:
        return True
    rules = MAY_IMPORT[src]
    return dst in rules or f"{dst}:{target.rpartition('.')[2]}" in rules


def violations(found: list[Import]) -> list[Import]:
    """Imports that go to a layer the importing module's layer may not import."""
    return [imp for imp in found if not allowed(imp.source, imp.target)]


def cycles(found: list[Import], kinds: frozenset[When]) -> list[list[str]]:
    """The import cycles among the ``kinds`` of imports (each once, as a list of modules)."""
    graph: dict[str, set[str]] = {}
    for imp in found:
        if imp.when in kinds:
            graph.setdefault(imp.source, set()).add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    result: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result


def table(found: list[Import]) -> str:
    """The markdown table of docs/architecture.md: layer, its modules (``x*``: the package ``x``
    and everything in it), what it owns, what it may import, what it does import."""
    rows = [
        "| layer | modules | owns | may import | imports (measured) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in LAYERS:
        members = [f"{_short(m)}*" if m != "shatag" and _is_package(m) else _short(m)
                   for m in LAYERS[name]]  # fmt: skip
        used = sorted(
            {layer(i.target) for i in found if layer(i.source) == name} - {name},
            key=list(LAYERS).index,
        )
        may = sorted(MAY_IMPORT[name], key=lambda r: list(LAYERS).index(r.split(":")[0]))
        rows.append(
            f"| `{name}` | {', '.join(f'`{_short(m)}`' for m in members)} | {OWNS[name]} | "
            f"{'any' if MAY_IMPORT[name] == set(LAYERS) else ', '.join(may) or '—'} | "
            f"{', '.join(used) or '—'} |"
        )
    return "\n".join(rows)


def _is_package(module: str) -> bool:
    return (SRC / module.replace(".", "/") / "__init__.py").is_file()


def _short(module: str) -> str:
    """``shatag.targets.docker.proxy`` → ``targets.docker.proxy`` (the package: ``shatag``)."""
    return module.removeprefix("shatag.")


def main() -> int:
    found = imports()
    print(table(found))
    bad = violations(found)
    for imp in bad:
        print(f"upward: {imp.source}:{imp.line} imports {imp.target} ({imp.when})", file=sys.stderr)
    for cycle in cycles(found, frozenset({"module"})):
        print(f"module-level cycle: {' ↔ '.join(cycle)}", file=sys.stderr)
    for cycle in cycles(found, frozenset({"module", "lazy"})):
        print(f"cycle with lazy imports: {' ↔ '.join(cycle)}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
