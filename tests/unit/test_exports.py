"""Package boundaries: other packages import only what a package's __init__ exports."""

import ast
from pathlib import Path

SRC = Path(__file__).parents[2] / "src" / "aifactory"
PACKAGES = {p.name for p in SRC.iterdir() if (p / "__init__.py").exists()}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


def test_no_import_of_another_packages_inner_module() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        own = path.relative_to(SRC).parts[0]
        for module in _imports(path):
            parts = module.split(".")
            if parts[0] != "aifactory" or len(parts) < 3:
                continue
            package = parts[1]
            if package in PACKAGES and package != own:
                offenders.append(f"{path.relative_to(SRC)} imports {module}")
    assert offenders == []


def test_every_package_declares_its_interface() -> None:
    for package in PACKAGES:
        init = (SRC / package / "__init__.py").read_text()
        assert "__all__" in init, f"{package}/__init__.py has no __all__"
