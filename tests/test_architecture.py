"""The layers of the package (README, "Architecture"): every import goes to the same or a lower
layer, no import cycle between modules, and the README draws the same layers in the same order."""
from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PACKAGE = REPO / "robdistill"

# lowest first; a sub-package may import from its own layer and the layers below it only
LAYERS = ("core", "data", "models", "attacks", "config", "eval", "train", "analysis", "sources", "tracking",
          "catalog", "api", "experiments", "report", "cli")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, *, type_only: bool) -> list[tuple[str, int]]:
    """The robdistill modules ``path`` imports (anywhere in the file, function bodies included), with
    their line numbers; ``type_only`` False leaves out the imports under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    if not type_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skipped |= {id(n) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "robdistill":
            found += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names if alias.name.split(".")[0] == "robdistill"]
    return found


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _resolve(target: str, modules: dict[str, Path]) -> str | None:
    """The module an imported name lives in (``a.b.name`` -> ``a.b`` unless ``a.b.name`` is a module)."""
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_sub_package_has_a_layer() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    packages |= {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert packages == set(LAYERS), f"unplaced: {packages - set(LAYERS)}; gone: {set(LAYERS) - packages}"


def test_no_import_reaches_up() -> None:
    """Type-only imports count too: a lower layer does not name a higher one's types."""
    modules = _modules()
    upward = []
    for name, path in modules.items():
        source = _layer(name)
        if source is None:  # robdistill/__init__.py: the lazy facade over every layer
            continue
        for target, line in _imports(path, type_only=True):
            resolved = _resolve(target, modules)
            dest = _layer(resolved) if resolved else None
            if dest is not None and LAYERS.index(dest) > LAYERS.index(source):
                upward.append(f"{path.relative_to(REPO)}:{line} ({source}) imports {resolved} ({dest})")
    assert not upward, "\n".join(upward)


def test_no_import_cycle_between_modules() -> None:
    """Run-time imports only (``if TYPE_CHECKING:`` blocks excluded); a package importing its own
    sub-module and that sub-module naming the package is not a cycle."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, _ in _imports(path, type_only=False):
            resolved = _resolve(target, modules)
            if resolved and resolved != name and not name.startswith(resolved + "."):
                graph[name].add(resolved)
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node], path = "open", stack + [node]
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path)
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert not cycles, "\n".join(cycles)


def test_readme_draws_the_layers_in_order() -> None:
    """The README's architecture section names every layer, top to bottom, once per line."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^- `robdistill\.(\w+)`", section, flags=re.M)
    assert listed == list(reversed(LAYERS)), listed
