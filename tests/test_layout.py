"""The house's imports run one way (docs/layout.md): scripts/import_cycles.py over the tree."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "import_cycles.py"


def _checker():
    spec = importlib.util.spec_from_file_location("import_cycles", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_core_imports_run_down_its_layers():
    checker = _checker()
    assert checker.upward(checker.graph()) == []


def test_no_import_circle_in_the_tree():
    checker = _checker()
    assert checker.circles(checker.graph()) == []


def test_the_checker_counts_lazy_imports_and_finds_circles(tmp_path):
    checker = _checker()
    mod = tmp_path / "a.py"
    mod.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from stilts.c import C\n"
        "def f():\n"
        "    from stilts import b\n"
    )
    known = {"stilts.a": mod, "stilts.b": mod, "stilts.c": mod}
    assert checker.imports(mod, "stilts.a", known) == {"stilts.b"}
    assert checker.circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
