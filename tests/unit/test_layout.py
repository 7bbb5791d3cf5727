"""The layout's rules, read from the source: packages import each other in one direction only,
so do modules, and Ray is imported only by ``runtime`` (and by ``service``, which deploys on Ray
Serve)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PIPELINE = Path(__file__).resolve().parents[2] / "pipeline"
RAY_PACKAGES = {"runtime", "service"}


def _unit(module: Path, root: Path) -> str:
    """The package a module belongs to (``plan``, ``media``, …), or the module's own name for a
    top-level module (``config``, ``errors``)."""
    parts = module.relative_to(root).with_suffix("").parts
    return parts[0] if len(parts) > 1 else parts[0]


def _imports(module: Path) -> list[tuple[str, int]]:
    """Every module a file imports, at any depth (a lazy import inside a function counts)."""
    found = []
    for node in ast.walk(ast.parse(module.read_text(), str(module))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
            found += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
    return found


def package_graph(root: Path) -> dict[str, set[str]]:
    """Which of the package's units import which (``pipeline/__init__.py``, the public API, and
    ``__main__`` stand above all of them and are left out)."""
    units = {
        p.name if p.is_dir() else p.stem
        for p in root.iterdir()
        if (p.is_dir() and (p / "__init__.py").exists())
        or (p.suffix == ".py" and p.stem not in ("__init__", "__main__"))
    }
    graph: dict[str, set[str]] = {u: set() for u in units}
    for module in root.rglob("*.py"):
        if module.parent == root and module.stem in ("__init__", "__main__"):
            continue
        unit = _unit(module, root)
        for name, _ in _imports(module):
            parts = name.split(".")
            if parts[0] == root.name and len(parts) > 1 and parts[1] in units and parts[1] != unit:
                graph[unit].add(parts[1])
    return graph


def module_graph(root: Path) -> dict[str, set[str]]:
    """Which of the package's modules import which, at any depth. ``from a.b import c``, where
    ``a.b.c`` is a module, imports that module (not the package ``a.b``, whose ``__init__`` may
    itself import the importer: a re-export, not a cycle)."""
    modules = {
        ".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): p
        for p in root.rglob("*.py")
    }
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = [f"{node.module}.{alias.name}" for alias in node.names]
                targets = [t for t in subs if t in modules] or [node.module]
            for target in targets:
                parts = target.split(".")
                for end in range(len(parts), 0, -1):  # the longest prefix that is a module
                    if ".".join(parts[:end]) in modules:
                        if ".".join(parts[:end]) != name:
                            graph[name].add(".".join(parts[:end]))
                        break
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path (first node repeated at the end), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def ray_imports_outside(root: Path, allowed: set[str]) -> list[str]:
    return [
        f"{module.relative_to(root.parent)}:{line} imports {name}"
        for module in sorted(root.rglob("*.py"))
        if _unit(module, root) not in allowed
        for name, line in _imports(module)
        if name == "ray" or name.startswith("ray.")
    ]


def test_the_packages_import_each_other_in_one_direction():
    cycle = find_cycle(package_graph(PIPELINE))
    assert cycle is None, "import cycle among pipeline's packages: " + " -> ".join(cycle)


def test_the_modules_import_each_other_in_one_direction():
    cycle = find_cycle(module_graph(PIPELINE))
    assert cycle is None, "import cycle among pipeline's modules: " + " -> ".join(cycle)


def test_ray_is_imported_only_by_runtime_and_service():
    assert ray_imports_outside(PIPELINE, RAY_PACKAGES) == []


@pytest.fixture
def fake_package(tmp_path):
    root = tmp_path / "pipeline"

    def write(files: dict[str, str]) -> Path:
        for name, text in files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return root

    return write


def test_a_cycle_between_two_modules_of_one_package_is_found(fake_package):
    root = fake_package(
        {
            "__init__.py": "",
            "views/__init__.py": "",
            "views/report.py": "def f():\n    from pipeline.views.extra import g\n",
            "views/extra.py": "from pipeline.views import report as page\n",
        }
    )
    assert find_cycle(package_graph(root)) is None  # one package: the package rule sees none
    cycle = find_cycle(module_graph(root))
    assert cycle is not None and set(cycle) == {"pipeline.views.report", "pipeline.views.extra"}


def test_a_cycle_through_a_lazy_import_is_found(fake_package):
    root = fake_package(
        {
            "__init__.py": "",
            "errors.py": "",
            "plan/__init__.py": "",
            "plan/planning.py": "from pipeline.output.manifest import Manifest\n",
            "output/__init__.py": "",
            "output/manifest.py": "def f():\n    from pipeline.plan import planning\n",
        }
    )
    assert find_cycle(package_graph(root)) in (
        ["output", "plan", "output"],
        ["plan", "output", "plan"],
    )


def test_one_direction_is_no_cycle(fake_package):
    root = fake_package(
        {
            "__init__.py": "from pipeline.plan import planning\n",
            "errors.py": "",
            "plan/__init__.py": "",
            "plan/planning.py": "from pipeline.output.manifest import Manifest\nfrom pipeline import errors\n",
            "output/__init__.py": "",
            "output/manifest.py": "from pipeline.errors import UsageError\n",
        }
    )
    assert package_graph(root) == {
        "plan": {"output", "errors"},
        "output": {"errors"},
        "errors": set(),
    }
    assert find_cycle(package_graph(root)) is None


def test_ray_outside_runtime_is_found_even_inside_a_function(fake_package):
    root = fake_package(
        {
            "__init__.py": "",
            "runtime/__init__.py": "",
            "runtime/driver.py": "import ray\n",
            "output/__init__.py": "",
            "output/readers.py": "def as_dataset():\n    import ray.data\n",
        }
    )
    assert ray_imports_outside(root, RAY_PACKAGES) == [
        "pipeline/output/readers.py:2 imports ray.data"
    ]


def oversized(root: Path, max_function: int = 60, max_class: int = 250) -> list[str]:
    """Functions longer than ``max_function`` lines and classes longer than ``max_class``."""
    found = []
    for module in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(module.read_text(), str(module))):
            limit = (
                max_function
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                else max_class
                if isinstance(node, ast.ClassDef)
                else None
            )
            if limit is not None and node.end_lineno - node.lineno + 1 > limit:
                found.append(f"{module.relative_to(root.parent)}:{node.lineno} {node.name}")
    return found


def test_no_function_over_60_lines_and_no_class_over_250():
    assert oversized(PIPELINE) == []


def test_an_oversized_function_is_found(fake_package):
    body = "".join(f"    x{i} = {i}\n" for i in range(60))
    root = fake_package(
        {"__init__.py": "", "long.py": f"def long():\n{body}\ndef short():\n    pass\n"}
    )
    assert oversized(root) == ["pipeline/long.py:1 long"]


def test_the_coordinator_does_not_load_the_decoders_or_a_model_library():
    """The coordinator's memory is a Ray worker's and its records: PyAV and OpenCV (about 40 MB)
    are imported where videos are opened, torch where a model is."""
    import subprocess
    import sys

    code = (
        "import sys, pipeline.runtime.coordinator; "
        "print(sorted(m for m in ('av', 'cv2', 'torch', 'ultralytics') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
