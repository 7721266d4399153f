"""Structure checks: the package's import graph has no circles (a circle makes import order matter
and hides a dependency that runs the wrong way: e.g. engine/train importing the loop for an error
class, or the SBD builder borrowing the downloader's console)."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "segkd"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(mod: str, node: ast.ImportFrom, is_pkg: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """module -> the segkd modules it imports (anywhere in the file, function bodies included)."""
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, node, is_pkg)
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for t in targets:
                while t and t not in files:  # `from x import name`: the module is x
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    graph[mod].add(t)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _without_package_faces(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Drop edges into a package's ``__init__`` from its own children (``from . import x``)."""
    return {m: {t for t in deps if not m.startswith(t + ".")} for m, deps in graph.items()}


def test_import_graph_has_no_circles():
    cycles = _cycles(_without_package_faces(import_graph()))
    assert not cycles, f"import circles: {cycles}"


def test_circle_detector_sees_a_planted_circle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(g) == [["a", "b", "c"]]


def test_no_module_is_named_like_the_standard_library():
    """A module named like a stdlib one (html, profile, inspect) is imported instead of it by
    anything run with its folder on sys.path (a script in that folder, an editor's runner)."""
    import sys

    shadowing = sorted(str(p.relative_to(PKG.parent)) for p in PKG.rglob("*.py")
                       if p.stem in sys.stdlib_module_names)
    assert not shadowing, f"modules named like the standard library: {shadowing}"


# The layers, bottom up: a folder may import its own layer and those below it, never one above.
LAYERS = [
    {"segkd.core"},
    {"segkd.config"},
    {"segkd.data", "segkd.models", "segkd.eval"},
    {"segkd.distill"},
    {"segkd.engine"},
    {"segkd.apps"},
    {"segkd.cli"},
]


def _layer(module: str) -> int | None:
    for i, layer in enumerate(LAYERS):
        if any(module == top or module.startswith(top + ".") for top in layer):
            return i
    return None


def test_every_module_sits_in_a_layer():
    """Nothing lives at the top of the package but ``segkd/__init__.py`` (load_model): a new module
    goes into the folder that says what it is."""
    loose = sorted(m for m in import_graph() if m != "segkd" and _layer(m) is None)
    assert not loose, f"modules outside every layer folder: {loose}"


def test_layers_import_only_downwards():
    upward = sorted(f"{m} -> {t}" for m, deps in import_graph().items() for t in deps
                    if _layer(m) is not None and _layer(t) is not None and _layer(t) > _layer(m))
    assert not upward, f"imports that point up the layers: {upward}"


def test_layer_check_sees_a_planted_upward_import():
    assert _layer("segkd.core.errors") < _layer("segkd.apps.report.tables")
    assert _layer("segkd.distill.losses.kd") > _layer("segkd.models.spec")


# ----------------------------------------------------------------------------- the command line
CLI = PKG / "cli"
# Library modules that still make their own stderr console, each with settings of its own (the
# engine's log and progress, run-directory notices, data-check warnings). The command line's
# consoles are made once, in segkd/core/console.py; this list may shrink, never grow.
OWN_CONSOLES = {"segkd.engine.logger", "segkd.apps.runs", "segkd.data.check"}


def _trees(root: Path) -> dict[str, ast.Module]:
    return {_module_name(p): ast.parse(p.read_text()) for p in sorted(root.rglob("*.py"))}


def _is_console_call(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and (
        (isinstance(node.func, ast.Name) and node.func.id == "Console")
        or (isinstance(node.func, ast.Attribute) and node.func.attr == "Console"))


def _import_time_nodes(tree: ast.Module):
    """Every node evaluated when the module is imported: module and class bodies, decorators and
    default values, but not the bodies of functions."""
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            args = node.args
            stack += [*node.decorator_list] if not isinstance(node, ast.Lambda) else []
            stack += [*args.defaults, *[d for d in args.kw_defaults if d is not None]]
        else:
            stack += list(ast.iter_child_nodes(node))


def consoles_made_at_import(trees: dict[str, ast.Module]) -> set[str]:
    """Modules that construct a rich ``Console`` when imported."""
    return {m for m, tree in trees.items() if any(_is_console_call(n) for n in _import_time_nodes(tree))}


def dynamic_imports(trees: dict[str, ast.Module]) -> set[str]:
    """Modules that import ``importlib`` or call ``import_module`` / ``__import__``."""
    found = set()
    for mod, tree in trees.items():
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Call):
                f = node.func
                names = [f.id if isinstance(f, ast.Name) else getattr(f, "attr", "")]
            if any(n.split(".")[0] == "importlib" or n in ("import_module", "__import__") for n in names):
                found.add(mod)
    return found


def environment_users(trees: dict[str, ast.Module]) -> set[str]:
    """Modules that read or write ``os.environ`` / call ``os.getenv`` / ``os.putenv``."""
    return {mod for mod, tree in trees.items() for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "putenv")
            and isinstance(node.value, ast.Name) and node.value.id == "os"}


def test_cli_commands_are_registered_by_plain_imports():
    """segkd/cli/ registers its command groups with plain imports: an importlib registration
    hid the circle cli <-> cli_export / cli_study (which imported helpers back from cli)."""
    assert not dynamic_imports(_trees(CLI))


def test_cli_modules_do_not_import_the_package_face():
    """segkd/cli/__init__ imports every command module to register it, so a command module that
    imports from ``segkd.cli`` itself closes a circle (which the circle check above forgives a
    child, as ``from . import x``). Shared helpers live in segkd/cli/base.py."""
    graph = import_graph()
    back = sorted(m for m, deps in graph.items()
                  if m.startswith("segkd.cli.") and m != "segkd.cli.__main__" and "segkd.cli" in deps)
    assert not back, f"modules importing segkd.cli's __init__: {back}"


def test_flags_are_passed_down_not_through_the_environment():
    """--quiet / --debug reach the code that prints as arguments; the CLI sets no environment
    variable (SEGKD_QUIET was set by the root callback and read by demo, download and sbd)."""
    assert not environment_users(_trees(CLI))
    assert not [p for p in PKG.rglob("*.py") if "SEGKD_QUIET" in p.read_text()]


def test_consoles_are_made_once():
    """The command line prints through segkd/core/console.py's consoles; no other module makes one at
    import time (each cli module had its own ``out = Console()``)."""
    made = consoles_made_at_import(_trees(PKG))
    assert made - OWN_CONSOLES == {"segkd.core.console"}


def test_structure_checks_see_planted_code():
    planted = {"segkd.cli.x": ast.parse(
        "import importlib, os\nfrom rich.console import Console\nout = Console()\n"
        "def f(c=Console()):\n    os.environ['SEGKD_QUIET'] = '1'\n"
        "    importlib.import_module('segkd.cli.y').register(None)\n"),
        "segkd.cli.y": ast.parse("def g():\n    from rich.console import Console\n    return Console()\n"),
        "segkd.cli.z": ast.parse("class A:\n    c = __import__('rich.console').console.Console()\n")}
    assert dynamic_imports(planted) == {"segkd.cli.x", "segkd.cli.z"}
    assert environment_users(planted) == {"segkd.cli.x"}
    assert consoles_made_at_import(planted) == {"segkd.cli.x", "segkd.cli.z"}
    assert consoles_made_at_import({"d": ast.parse("def f(c=Console()):\n    pass\n")}) == {"d"}


# ----------------------------------------------------------------------------- models and checkpoints
# Checkpoint I/O lives in segkd/core/checkpoint.py, a model's spec and rebuilding in segkd/models/spec.py
# (issue 19): models/ and data/ imported up into the engine for them, and tools imported the
# engine only to load a model.
HOMES = {**dict.fromkeys(("save_checkpoint", "load_checkpoint", "load_strict", "sha256_file",
                          "is_segkd"), "segkd.core.checkpoint"),
         **dict.fromkeys(("model_spec", "build_from_spec", "apply_replacements",
                          "model_from_checkpoint"), "segkd.models.spec")}
GONE = {"_logits", "_LogitsOnly"}  # every registered model returns the logits tensor


def engine_imports(trees: dict[str, ast.Module]) -> dict[str, set[str]]:
    """module -> the names it imports from ``segkd.engine`` (absolute or relative imports)."""
    found: dict[str, set[str]] = {}
    for mod, tree in trees.items():
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("segkd.engine")]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, node, False)
                if base == "segkd.engine" or base.startswith("segkd.engine."):
                    names = [a.name for a in node.names]
            if names:
                found.setdefault(mod, set()).update(names)
    return found


def definitions(trees: dict[str, ast.Module]) -> dict[str, set[str]]:
    """name -> the modules that define it at top level (function or class)."""
    out: dict[str, set[str]] = {}
    for mod, tree in trees.items():
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                out.setdefault(node.name, set()).add(mod)
    return out


def test_models_and_data_do_not_import_the_engine():
    up = {m: sorted(d for d in deps if d.startswith("segkd.engine"))
          for m, deps in import_graph().items() if m.startswith(("segkd.models", "segkd.data"))}
    assert not {m: d for m, d in up.items() if d}, f"models/data importing the engine: {up}"


def test_no_module_outside_the_engine_loads_a_model_through_it():
    outside = {m: t for m, t in _trees(PKG).items() if not m.startswith("segkd.engine")}
    loading = {m: sorted(names & set(HOMES)) for m, names in engine_imports(outside).items()}
    assert not {m: n for m, n in loading.items() if n}, \
        f"load models through segkd.models.spec / segkd.core.checkpoint, not the engine: {loading}"


def test_checkpoint_io_and_model_rebuilding_have_one_home():
    defs = definitions(_trees(PKG))
    misplaced = {n: sorted(defs.get(n, set())) for n, home in HOMES.items() if defs.get(n) != {home}}
    assert not misplaced, f"defined elsewhere than their home: {misplaced}"
    assert not GONE & set(defs), "call sites unwrap model outputs again; models return tensors"


def test_model_structure_checks_see_planted_code():
    planted = {"segkd.tools.x": ast.parse("from segkd.engine.build import model_from_checkpoint\n"),
               "segkd.models.y": ast.parse("def f():\n    from ..engine import loop\n"),
               "segkd.z": ast.parse("import segkd.engine.state\ndef load_strict(): pass\n")}
    assert engine_imports(planted) == {"segkd.tools.x": {"model_from_checkpoint"},
                                       "segkd.models.y": {"loop"}, "segkd.z": {"segkd.engine.state"}}
    assert definitions(planted) == {"f": {"segkd.models.y"}, "load_strict": {"segkd.z"}}


# ----------------------------------------------------------------------------- losses
# The generic parts: they ask a loss's declared contract (segkd/distill/losses/contract.py) and
# never name a method (the Distiller carried OFD's margin setup; build.py branched on "ce").
GENERIC = [PKG / "distill" / "distiller.py", *sorted((PKG / "engine").glob("*.py"))]
METHOD_WORDS = ("ofd", "margin", "bn_before")


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the docstring constants of a module and of its classes and functions."""
    owners = [tree] + [n for n in ast.walk(tree)
                       if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    return {id(o.body[0].value) for o in owners
            if o.body and isinstance(o.body[0], ast.Expr) and isinstance(o.body[0].value, ast.Constant)}


def loss_mentions(tree: ast.Module, loss_names: set[str]) -> list[str]:
    """What the code (not its comments or docstrings) says about specific losses: a string that is
    a registered loss name or holds a method's word, and an identifier that holds one."""
    docs, found = _docstrings(tree), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            text = node.value
            if text in loss_names or any(w in text.lower() for w in METHOD_WORDS):
                found.append(f"line {node.lineno}: string {text!r}")
        for attr in ("id", "attr", "name", "arg"):  # Name, Attribute, def/class/alias, argument
            ident = getattr(node, attr, None)
            if isinstance(ident, str) and any(w in ident.lower() for w in METHOD_WORDS):
                found.append(f"line {getattr(node, 'lineno', '?')}: name {ident!r}")
    return found


def _loss_names() -> set[str]:
    import segkd.distill.losses  # noqa: F401  (registers segkd's losses)
    from segkd.core.registry import LOSSES

    return set(LOSSES.names())


def test_generic_parts_name_no_loss():
    """segkd/distill/distiller.py and segkd/engine/*.py work with any registered loss: what a loss
    needs is in its contract, its teacher-side setup in its own ``bind``."""
    names = _loss_names()
    bad = {str(p.relative_to(PKG)): hits for p in GENERIC
           if (hits := loss_mentions(ast.parse(p.read_text()), names))}
    assert not bad, f"the generic parts name specific losses: {bad}"


def test_loss_mentions_sees_planted_code_and_skips_docs():
    names = {"ce", "ofd", "kd"}
    planted = ast.parse(
        '"""Module doc: OFD margins, ce."""\n'
        "# a comment about ofd and margin_bn\n"
        "def f(t, d):\n"
        '    """ofd, margin, ce in a docstring."""\n'
        '    teacher = None if t.loss == "ce" else t.teacher\n'
        '    if t.loss in ("kd", "x"):\n'
        "        d.margin_bn = {}\n"
        '    if hasattr(d, "set_margin"):\n'
        "        from .losses import ofd_margin\n"
        "    return _bn_before(t, d)\n")
    hits = loss_mentions(planted, names)
    assert {h.split(": ", 1)[1] for h in hits} == {
        "string 'ce'", "string 'kd'", "name 'margin_bn'", "string 'set_margin'",
        "name 'ofd_margin'", "name '_bn_before'"}
    clean = ast.parse('"""OFD and ce, documented."""\n# margin\ndef g(loss):\n'
                      '    """The kd loss."""\n    return loss.needs_teacher\n')
    assert loss_mentions(clean, names) == []


# ----------------------------------------------------------------------------- errors
BROAD = {"Exception", "BaseException"}


def silent_broad_excepts(trees: dict[str, ast.Module]) -> list[str]:
    """Handlers of a bare ``except:`` / ``except Exception`` / ``except BaseException`` that
    neither raise nor use the error they caught (``except Exception: pass`` hid a failing timm
    registration and a dataset that would not open)."""
    found = []
    for mod, tree in trees.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.ExceptHandler):
                continue
            kinds = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
            if not any(k is None or (isinstance(k, ast.Name) and k.id in BROAD) for k in kinds):
                continue
            body = [n for stmt in node.body for n in ast.walk(stmt)]
            raises = any(isinstance(n, ast.Raise) for n in body)
            uses = node.name is not None and any(isinstance(n, ast.Name) and n.id == node.name
                                                 for n in body)
            if not (raises or uses):
                found.append(f"{mod} line {node.lineno}")
    return found


def test_broad_excepts_raise_or_report_what_they_caught():
    """A bare ``except:`` or ``except Exception`` either re-raises or says what it caught; else it
    names the errors it expects."""
    assert not silent_broad_excepts(_trees(PKG))


def test_silent_except_check_sees_planted_code():
    planted = {"a": ast.parse("try:\n    f()\nexcept Exception:\n    pass\n"),
               "b": ast.parse("try:\n    f()\nexcept:\n    return None\n"),
               "c": ast.parse("try:\n    f()\nexcept (OSError, BaseException) as e:\n    x = 1\n"),
               "d": ast.parse("try:\n    f()\nexcept Exception as e:\n    say(e)\n"),
               "e": ast.parse("try:\n    f()\nexcept BaseException:\n    g()\n    raise\n"),
               "f": ast.parse("try:\n    f()\nexcept (OSError, ValueError):\n    pass\n")}
    assert sorted(h.split()[0] for h in silent_broad_excepts(planted)) == ["a", "b", "c"]
