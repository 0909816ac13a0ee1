"""The layering promise: core/ is a library that never imports streamlit."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_never_imports_streamlit():
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "core").rglob("*.py") if "streamlit" in _imports(p)]
    assert offenders == []


def test_pages_import_core_not_each_other():
    for page in (REPO / "views").glob("*.py"):
        assert "views" not in _imports(page), f"{page.name} imports another page; share code through core/"


def test_core_import_is_light():
    """Importing the library must not drag TensorFlow in (pages and the CLI start fast)."""
    import subprocess
    import sys

    code = ("import sys, core, core.workspace, core.datasets; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
