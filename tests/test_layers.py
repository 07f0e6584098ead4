"""The layers DESIGN.md draws, checked on the source: no import cycle; the library (`surd/`,
`storage/`, `adapter/`) free of the application layer (`surd/app/`: the CLI, the demo, the glue from
settings to the trainer) and of the orchestration layer (`flows/`, Prefect); the application
layer free of `flows/` (which plugs into it through entry points); first-party imports at the
top of a module unless deferred on purpose, with the reason beside them. Imports inside
functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("surd", "storage", "adapter", "flows")
APPLICATION = ("surd.app", "surd.__main__")  # may import the library; the library never imports them
ORCHESTRATION = ("flows", "prefect", "prefect_dask")


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if "migrations" in path.parts:
                continue  # Alembic's scripts, loaded by Alembic
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth in it (top level or inside a function)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: {i for i in imports(path) if i in mods and i != name} for name, path in mods.items()}


def in_layer(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle() -> None:
    # a package's __init__ importing its own modules is not a cycle of design: leave those out
    edges = {a: {b for b in bs if not b.startswith(a + ".")} for a, bs in graph().items()}
    assert cycles(edges) == []


def breaches(layer: tuple[str, ...], forbidden: tuple[str, ...], besides: tuple[str, ...] = ()) -> list[str]:
    """`module imports target` for each module of `layer` (not of `besides`) importing `forbidden`."""
    return [
        f"{name} imports {target}"
        for name, path in modules().items()
        if in_layer(name, layer) and not in_layer(name, besides)
        for target in sorted(imports(path))
        if in_layer(target, forbidden)
    ]


def test_the_library_never_imports_the_application_or_orchestration_layer() -> None:
    library = ("surd", "storage", "adapter")
    assert breaches(library, (*ORCHESTRATION, *APPLICATION), besides=APPLICATION) == []


def test_the_application_layer_never_imports_the_orchestration_layer() -> None:
    assert breaches(APPLICATION, ORCHESTRATION) == []


def deferred_imports(path: Path) -> list[str]:
    """First-party imports inside a function without a comment saying why (on the line, or on
    the line above), as `module:line`."""
    lines = path.read_text().splitlines()
    out = []
    for fn in ast.walk(ast.parse(path.read_text())):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            if not any(in_layer(n, PACKAGES) for n in names):
                continue
            said = "#" in lines[node.lineno - 1] or lines[node.lineno - 2].strip().startswith("#")
            if not said:
                out.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return out


def test_first_party_imports_are_at_the_top_unless_said_why() -> None:
    found = [hit for path in modules().values() for hit in deferred_imports(path)]
    assert found == [], "import at the top, or say why it is deferred in a comment:\n" + "\n".join(found)


def test_the_library_takes_only_the_training_settings_from_adapter() -> None:
    """`surd/` uses `adapter/` for two things: the training settings' one definition (its settings
    extend it) and the evaluation's prompts (decontamination keeps them out of training);
    training and evaluation are called from the application layer."""
    assert (
        breaches(("surd",), ("adapter",), besides=(*APPLICATION, "surd.settings", "surd.stages.decontam"))
        == []
    )
    assert {i for i in imports(modules()["surd.stages.decontam"]) if in_layer(i, ("adapter",))} <= {
        "adapter.suites",
        "adapter.suites.suite_texts",
    }
    assert {i for i in imports(modules()["surd.settings"]) if in_layer(i, ("adapter",))} <= {
        "adapter.config",
        "adapter.config.TrainConfig",
    }


WEB = ("fastapi", "starlette", "jinja2", "uvicorn", "itsdangerous", "multipart")


def test_the_library_never_imports_a_web_framework() -> None:
    """The review queue is a library (schema, queue, queries, outcome, judgements); the web app
    over it (routes, templates, sessions) is the application layer's: surd/app/web/."""
    library = ("surd", "storage", "adapter")
    assert breaches(library, WEB, besides=APPLICATION) == []
    assert breaches(("surd.app.web",), ("surd.app.cli", "surd.app.demo")) == []  # a server, not the CLI


def test_no_module_of_the_library_keeps_state_in_a_global_statement() -> None:
    """Module state that a call changes (`global x`) hides who set it; pass it, or keep it on an
    object. The one exception is a pool worker's initializer, which runs in the worker process."""
    found = []
    for path in modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Global):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} global {', '.join(node.names)}")
    allowed = {
        "surd/models/preprocess.py": "a pool worker's job, set by its initializer in the worker process",
        "storage/tables.py": "the kill tests' fault hook, set once per process from fault_kill_at",
        "storage/torch_compat.py": "torchvision's shim, installed once per process",
    }
    assert [f for f in found if f.split(":")[0] not in allowed] == []


def test_adapter_reads_only_through_storage() -> None:
    assert breaches(("adapter",), ("surd", "flows")) == []


def test_storage_imports_nothing_of_ours() -> None:
    assert breaches(("storage",), ("surd", "adapter", "flows")) == []


def test_the_check_sees_a_cycle_and_a_layer_breach() -> None:
    """The checks above can fail: a planted cycle and a planted breach are found."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    tree = ast.parse("def f():\n    from flows.rebuild import rebuild\n")
    assert any(isinstance(n, ast.ImportFrom) and n.module == "flows.rebuild" for n in ast.walk(tree))


MODULE_LINES, FUNCTION_LINES = 400, 80
EXCEPTIONS: dict[str, str] = {}  # "module[:function]": why it may be longer (none today)


def oversized() -> list[str]:
    """Modules over MODULE_LINES and functions over FUNCTION_LINES lines, as `path[:function] (n)`."""
    out = []
    for name, path in modules().items():
        text = path.read_text()
        n = len(text.splitlines())
        if n > MODULE_LINES and name not in EXCEPTIONS:
            out.append(f"{path.relative_to(ROOT)} ({n} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > FUNCTION_LINES and f"{name}:{node.name}" not in EXCEPTIONS:
                    out.append(f"{path.relative_to(ROOT)}:{node.name} ({length} lines)")
    return out


def test_modules_and_functions_stay_small() -> None:
    """One role per module and per function: split what grows past the limits (or name the
    exception and why in EXCEPTIONS)."""
    assert oversized() == []


def test_no_flow_file_shadows_a_package() -> None:
    """Prefect runs a deployment's flow file as a script, its folder first on the path: a file
    named like one of our packages would shadow it (flows/adapter.py once shadowed adapter/)."""
    assert not [p.name for p in (ROOT / "flows").glob("*.py") if p.stem in PACKAGES]
