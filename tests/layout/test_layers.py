"""The packages keep to their layers: jit/ is plain Python plus capstone and pyelftools, checks/
adds Unicorn, and only bot/ talks to GitHub or renders templates."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "jit": {"unicorn", "github", "jinja2", "yaml", "checks", "bot"},
    "checks": {"github", "jinja2", "bot"},
}


def imported_roots(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_stay_within_its_layer(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no modules found under {package}/"
    offenders = {str(p.relative_to(ROOT)): sorted(imported_roots(p) & FORBIDDEN[package])
                 for p in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_checker_sees_a_forbidden_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from unicorn import Uc\n    import github.Auth\n")
    assert imported_roots(bad) >= {"unicorn", "github"}
