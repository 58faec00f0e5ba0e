"""The package's shape, checked on its source: no import circle (function-local imports count, as
they only hide one), and the adapter core importable with torch and peft alone."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "flare"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    path = PACKAGE.parent / name.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: Path) -> set[str]:
    """The flare modules a file imports, wherever the import statement stands: in a function, or
    under `if TYPE_CHECKING:` (a type-only import still ties the two modules together)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "flare":
            candidates = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            found |= {name for name in candidates if _is_module(name)}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "flare"}
    return found - {_module_name(path)}


def import_graph() -> dict[str, set[str]]:
    return {_module_name(path): _imports(path) for path in PACKAGE.rglob("*.py")}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph.get(module, ()):
            if other not in graph:
                continue
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_no_import_circle():
    assert circles(import_graph()) == []


def test_the_circle_finder_finds_one():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# standard-library-only modules every layer may use: the error type and the settings' range type
SHARED_LEAVES = ("flare", "flare.errors", "flare.setting_types")


def test_the_adapter_core_reaches_nothing_outside_it_but_shared_leaves():
    graph = import_graph()
    outside = {
        f"{module} -> {other}" for module, others in graph.items() if module.startswith("flare.adapter")
        for other in others if not other.startswith("flare.adapter") and other not in SHARED_LEAVES
    }
    assert outside == set()
    assert graph["flare.setting_types"] <= {"flare.errors"} and graph["flare.errors"] == set()


def test_the_adapter_core_imports_with_torch_and_peft_alone():
    # peft brings transformers and accelerate; what must not load is the rest of flare and its libraries
    code = (
        "import sys\nimport flare.adapter.build, flare.adapter.collate\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('flare') and not m.startswith('flare.adapter')"
        f" and m not in {SHARED_LEAVES!r})\n"
        "heavy = sorted(m for m in ('datasets', 'jsonargparse', 'sacrebleu', 'matplotlib') if m in sys.modules)\n"
        "print(loaded, heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[] []", result.stdout


# docs/architecture.md: imports only point down this list (a package may import itself)
LAYERS = ("flare.adapter", "flare.data", "flare.hf", "flare.mt", "flare.study", "flare.integrations", "flare.cli")
SHARED = ("flare.errors", "flare.files", "flare.extras", "flare.setting_types", "flare")


def _layer(module: str) -> int | None:
    return next((i for i, layer in enumerate(LAYERS) if module == layer or module.startswith(layer + ".")), None)


def test_imports_only_point_down_the_layers():
    graph = import_graph()
    upward = sorted(
        f"{module} -> {other}" for module, others in graph.items() for other in others
        if other not in SHARED and _layer(module) is not None and _layer(other) is not None
        and _layer(other) > _layer(module)
    )
    assert upward == []
    unplaced = sorted(m for m in graph if _layer(m) is None and m not in SHARED)
    assert unplaced == []  # every module belongs to a layer or is a shared leaf
    shared_imports = {f"{m} -> {o}" for m in SHARED if m != "flare" for o in graph[m] if o not in SHARED}
    assert shared_imports == set()  # the shared leaves reach nothing of the layers
