"""The package's layers hold: each module imports only what docs/DESIGN.md ("Layers") allows.

Imports are read with ``ast`` from the source, so a new module must be placed in :data:`LAYERS`
(the test names a module that is not); the table mirrors the one in docs/DESIGN.md.
"""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "instrument"

#: Every module of the package, by layer (names relative to ``instrument``).
LAYERS: dict[str, frozenset[str]] = {
    "leaf": frozenset({"_env", "_kinds", "_values", "_records", "_problems", "_media", "_config", "_settings",
                       "_keys", "_foreign", "_redact", "_options", "_context_file", "_wrapping", "_gates",
                       "_verdicts", "_ranks", "_reduce", "_family", "runfile", "_transaction_log"}),
    "gates": frozenset({"_gatefiles", "_gating"}),
    "routing": frozenset({"_routing"}),
    "backends": frozenset({"_journal", "_workers", "_backends", "_backends.base", "_backends.disabled",
                           "_backends.recording", "_backends.wandb", "_backends.wandb_sharing", "_backends.wandb_fast",
                           "_backends.wandb_core", "_backends.call_journal"}),
    "dispatch": frozenset({"_dispatch"}),
    "session": frozenset({"_session", "_fault_policy", "_fork_guard"}),
    "linkage": frozenset({"_linkage", "_linkage_state", "_pipeline_stack", "_placement", "_worker_inbox",
                          "_finishing", "_gated_run", "_lifecycle", "_pipeline_run"}),
    "api": frozenset({"_imperative"}),
    "decorators": frozenset({"_stages", "_pipeline", "_runtime"}),
    "tools": frozenset({"", "__main__", "_replay", "testing", "pytest_plugin", "baselines"}),
    "cli": frozenset({"cli", "cli._common", "cli._runs", "cli._sidecar", "cli._show", "cli._compare",
                      "cli._gate", "cli._leaderboard", "cli._plot", "cli._sync", "cli._replay"}),
}

#: The layers each layer may import (at import time or inside a function). Dependencies point
#: one way: decorators -> api -> linkage -> session -> dispatch -> backends -> leaves, with
#: routing (pure) beside them: only the api and the decorators' lazy seam use it.
ALLOWED: dict[str, frozenset[str]] = {
    "leaf": frozenset({"leaf"}),
    "routing": frozenset({"leaf"}),
    "gates": frozenset({"leaf", "gates"}),
    "backends": frozenset({"leaf", "backends"}),
    "dispatch": frozenset({"leaf", "backends"}),
    "session": frozenset({"leaf", "backends", "dispatch", "session"}),
    "linkage": frozenset({"leaf", "backends", "dispatch", "session", "linkage"}),
    "api": frozenset({"leaf", "routing", "backends", "linkage"}),
    "decorators": frozenset({"leaf", "decorators"}),
    "tools": frozenset(LAYERS),
    "cli": frozenset({"leaf", "gates", "tools", "cli"}),
}

#: The one lazy seam (import cost): what it may import inside its functions, beyond ALLOWED.
LAZY_SEAM = {"_runtime": frozenset({"routing", "linkage", "gates"})}

#: The only modules that import wandb (each lazily, inside a function): the wandb backend (with the
#: parts of it that share runs with other code, take the fast route into wandb-core and bound its
#: teardown) and the run-file reader.
WANDB_IMPORTERS = frozenset({"_backends.wandb", "_backends.wandb_sharing", "_backends.wandb_fast",
                             "_backends.wandb_core", "runfile"})


def module_name(path: Path) -> str:
    """Return the module *path* holds, relative to ``instrument`` ("" for the package itself)."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str:
    """Return the layer of *module* (relative to ``instrument``)."""
    for layer, modules in LAYERS.items():
        if module in modules:
            return layer
    raise AssertionError(f"instrument.{module} is in no layer: add it to LAYERS here and to docs/DESIGN.md")


def imports(path: Path) -> Iterator[tuple[str, bool]]:
    """Yield ``(imported module, inside a function)`` for every import in *path* that runs;
    imports under ``if TYPE_CHECKING:`` are for annotations only and are left out. For
    ``from instrument import x`` the module ``instrument.x`` is yielded."""

    def walk(node: ast.AST, in_function: bool) -> Iterator[tuple[str, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for branch in child.orelse:
                    yield from walk(branch, in_function)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, in_function
            elif isinstance(child, ast.ImportFrom):
                assert child.level == 0, f"{path}: relative import; the package imports by absolute name"
                base = child.module or ""
                yield base, in_function
                if base == "instrument" or base.startswith("instrument._backends"):
                    for alias in child.names:
                        yield f"{base}.{alias.name}", in_function
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            yield from walk(child, inner)

    yield from walk(ast.parse(path.read_text()), False)


def known(name: str) -> bool:
    """Return whether *name* (relative to ``instrument``) is a module in :data:`LAYERS`."""
    return any(name in modules for modules in LAYERS.values())


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=[module_name(path) or "instrument" for path in SOURCES])
def test_each_module_imports_only_the_layers_below_it(path: Path) -> None:
    """A module's imports of instrument's own modules stay within what its layer may import."""
    source = module_name(path)
    layer = layer_of(source)
    wrong = []
    for name, lazy in imports(path):
        if not name.startswith("instrument."):
            continue
        target = name.removeprefix("instrument.")
        if not known(target):
            continue  # a name imported from a module (``from instrument._backends import wandb`` is known)
        if target == source:
            continue
        allowed = ALLOWED[layer] | (LAZY_SEAM.get(source, frozenset()) if lazy else frozenset())
        if layer_of(target) not in allowed:
            wrong.append(f"{target} ({layer_of(target)}{', in a function' if lazy else ''})")
    assert [] == wrong, f"instrument.{source} ({layer}) imports what its layer may not"


def test_the_modules_import_each_other_one_way() -> None:
    """The modules' imports at import time form no cycle, within a layer too: each depends only on
    modules below it (a module split by responsibility keeps a direction, not a knot)."""
    graph: dict[str, set[str]] = {}
    for path in SOURCES:
        source = module_name(path)
        graph[source] = {name.removeprefix("instrument.") for name, lazy in imports(path)
                         if not lazy and name.startswith("instrument.") and known(name.removeprefix("instrument."))
                         and name.removeprefix("instrument.") != source}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        pytest.fail(f"the modules import each other in a cycle: {' -> '.join(error.args[1])}")


def test_only_the_wandb_backend_and_the_run_file_reader_import_wandb() -> None:
    """No module but the wandb backend and ``runfile`` imports wandb, and those only inside functions."""
    lazily, eagerly = set(), set()
    for path in SOURCES:
        for name, lazy in imports(path):
            if name == "wandb" or name.startswith("wandb."):
                (lazily if lazy else eagerly).add(module_name(path))
        if 'import_module("wandb' in path.read_text():  # runfile finds wandb's protobufs by name
            lazily.add(module_name(path))
    assert (WANDB_IMPORTERS, set()) == (lazily, eagerly)


@pytest.mark.integration
def test_import_instrument_loads_only_what_decorating_needs() -> None:
    """A fresh ``import instrument`` (and decorating a function) loads no wandb and none of the
    layers below the decorators; the first record loads them."""
    code = (
        "import sys, instrument\n"
        "instrument.training_stage('s')(lambda: None)\n"
        "instrument.eval_summary(prefix='e', gates={'x': '< 1'})(lambda: None)\n"
        "print(sorted(m for m in sys.modules if m == 'wandb' or m.startswith(('instrument._linkage', "
        "'instrument._session', 'instrument._dispatch', 'instrument._journal', 'instrument._backends', "
        "'instrument._routing', 'instrument._imperative', 'instrument._gatefiles', 'instrument._gating', 'instrument._verdicts', "
        "'filelock'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                            env={"PYTHONPATH": str(PACKAGE.parent), "PATH": "/usr/bin:/bin"})
    assert "[]" == result.stdout.strip()
