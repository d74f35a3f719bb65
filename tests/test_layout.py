"""The layout's rules, checked on the source: steps never import each other, the app never
imports Spark, test modules never import each other."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.config import REPO_ROOT

STEP_FILES = sorted((REPO_ROOT / "jobs" / "steps").glob("[!_]*.py"))
TEST_FILES = sorted((REPO_ROOT / "tests").glob("test_*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("path", STEP_FILES, ids=lambda p: p.name)
def test_a_step_imports_no_other_step(path: Path) -> None:
    others = {f"jobs.steps.{p.stem}" for p in STEP_FILES} - {f"jobs.steps.{path.stem}"}
    wrong = sorted(imported_modules(path) & others)
    assert not wrong, (
        f"{path.relative_to(REPO_ROOT)} imports the steps {wrong}: move what they share to jobs.core or jobs.adapters"
    )


def test_every_step_module_is_on_the_command_line_once() -> None:
    from jobs.cli import night_steps, steps
    from jobs.definitions import NIGHT_STEPS

    table = steps()
    assert sorted(f.__module__ for f in table.values()) == sorted(f"jobs.steps.{p.stem}" for p in STEP_FILES)
    assert all(f.__module__ == f"jobs.steps.{name}" for name, f in table.items()), "a step's name is its module's"
    assert tuple(night_steps()) == NIGHT_STEPS


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_a_test_module_imports_no_other_test_module(path: Path) -> None:
    wrong = sorted(m for m in imported_modules(path) if m.startswith("tests.test_"))
    assert not wrong, (
        f"{path.relative_to(REPO_ROOT)} imports {wrong}: share fixtures in conftest.py or tests/helpers.py"
    )


def test_the_dashboard_never_imports_spark() -> None:
    probe = "import sys, app.views, app.data, app.security, app.__main__; print(sorted({m.split('.')[0] for m in sys.modules} & {'pyspark', 'delta', 'py4j'}))"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True, cwd=REPO_ROOT)
    assert out.stdout.strip() == "[]", f"app/ pulled in {out.stdout.strip()}"


def test_the_dashboard_prints_help_instead_of_serving() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app", "--help"], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT
    )
    assert done.returncode == 0 and "usage: python -m app" in done.stdout, done.stderr
