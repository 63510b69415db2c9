"""Code structure rules of the Python package (issue 17): no function longer than 80 lines, and the
command line uses only the public API of the other xsmom modules."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / "python"
CLI = PYTHON / "xsmom" / "cli"
MAX_LINES = 80
# The compiled extension: the CLI calls it directly, as the other modules do.
ALLOWED_PRIVATE = {"_core"}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name not in ALLOWED_PRIVATE


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PYTHON).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module an ``ImportFrom`` reads from, relative imports resolved."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _private_uses(source: str, module: str, is_package: bool = False) -> list[str]:
    """Underscore names that the code ``source`` of ``module`` takes from xsmom modules outside the
    cli package: imported by name, from a private module, or read as an attribute of an import."""
    tree = ast.parse(source)
    found, bound = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _absolute(node, module, is_package)
            if source != "xsmom" and not source.startswith("xsmom."):
                continue
            if source == "xsmom.cli" or source.startswith("xsmom.cli."):
                continue
            if any(_private(part) for part in source.split(".")):
                found.append(f"line {node.lineno}: from {source} import ...")
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"line {node.lineno}: from {source} import {alias.name}")
                bound.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != "xsmom":
                    continue
                if any(_private(part) for part in alias.name.split(".")):
                    found.append(f"line {node.lineno}: import {alias.name}")
                bound.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in bound:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_no_function_is_longer_than_80_lines():
    long = []
    for path in sorted(PYTHON.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "functions longer than 80 lines:\n" + "\n".join(long)


def test_the_cli_uses_only_public_names_of_other_xsmom_modules():
    files = sorted(CLI.rglob("*.py"))
    assert len(files) > 1, "the command line is the package python/xsmom/cli"
    found = [
        f"{path.relative_to(ROOT)} {use}"
        for path in files
        for use in _private_uses(path.read_text(), _module_name(path), path.name == "__init__.py")
    ]
    assert not found, "private names of other xsmom modules used by the CLI:\n" + "\n".join(found)


def test_the_private_name_check_finds_what_it_should():
    text = (
        "from xsmom import _core, research\n"
        "from xsmom.report import _html, write_report\n"
        "from xsmom._hidden import thing\n"
        "from .common import _utc\n"
        "from .. import _secret\n"
        "import xsmom.research._inner\n"
        "research._private()\n"
        "research.public()\n"
        "args._local\n"
    )
    assert _private_uses(text, "xsmom.cli.probe") == [
        "line 2: from xsmom.report import _html",
        "line 3: from xsmom._hidden import ...",
        "line 5: from xsmom import _secret",
        "line 6: import xsmom.research._inner",
        "line 7: research._private",
    ]
    assert _private_uses("from . import _x\n", "xsmom.cli", is_package=True) == []
    assert _private_uses("from .. import _x\n", "xsmom.cli", is_package=True) == [
        "line 1: from xsmom import _x"
    ]
