"""Short functions (issue 22, item 3): no function or method in ``src/`` -- nested ones
included -- spans more than 80 lines (``end_lineno - lineno + 1``, decorators excluded)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
LIMIT = 80


def long_functions(root: Path, limit: int = LIMIT) -> dict[str, int]:
    """``{"<path>:<Outer.name>": lines}`` of every function in ``root`` longer than ``limit``."""
    found: dict[str, int] = {}
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        where = path.relative_to(root).as_posix()

        def walk(node: ast.AST, scope: tuple[str, ...], where: str = where) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    name = (*scope, child.name)
                    if not isinstance(child, ast.ClassDef) and child.end_lineno is not None:
                        lines = child.end_lineno - child.lineno + 1
                        if lines > limit:
                            found[f"{where}:{'.'.join(name)}"] = lines
                    walk(child, name)
                else:
                    walk(child, scope)

        walk(tree, ())
    return found


def test_the_checker_counts_nested_functions_and_methods(tmp_path: Path) -> None:
    body = "\n".join(f"        x{i} = {i}" for i in range(80))
    (tmp_path / "m.py").write_text(
        f"class C:\n    def short(self):\n        return 1\n\n"
        f"    def long(self):\n{body}\n\n"
        f"def outer():\n    def inner():\n{body}\n    return inner\n"
    )
    assert long_functions(tmp_path) == {"m.py:C.long": 81, "m.py:outer": 83, "m.py:outer.inner": 81}


def test_no_function_in_src_is_longer_than_80_lines() -> None:
    found = long_functions(SRC)
    assert found == {}, f"split these by meaning (named steps), not at line {LIMIT}"
