"""One direction through the house: the library never imports a recipe, plugins never import evaluation/."""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "taste_toolkit")


def _sources(folder):
    for root, _, names in os.walk(folder):
        for name in sorted(names):
            if name.endswith(".py"):
                path = os.path.join(root, name)
                with open(path, encoding="utf-8") as f:
                    yield os.path.relpath(path, PACKAGE), ast.parse(f.read(), path)


def _imported_modules(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_library_never_touches_sys_path():
    offenders = []
    for rel, tree in _sources(PACKAGE):
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys":
                offenders.append(rel)
    assert not offenders, f"modules that edit sys.path (to import a recipe?): {sorted(set(offenders))}"


def test_library_never_imports_a_recipe_script():
    recipe_modules = {name[:-3] for name in os.listdir(os.path.join(os.path.dirname(PACKAGE), "recipes", "librispeech"))
                      if name.endswith(".py")}
    offenders = [(rel, m) for rel, tree in _sources(PACKAGE) for m in _imported_modules(tree)
                 if m.split(".")[0] in recipe_modules]
    assert not offenders, offenders


PLUGIN_KINDS = sorted(d for d in os.listdir(os.path.join(PACKAGE, "plugins"))
                      if os.path.isdir(os.path.join(PACKAGE, "plugins", d)) and not d.startswith("_"))


@pytest.mark.parametrize("kind", PLUGIN_KINDS)
def test_plugins_do_not_import_evaluation(kind):
    folder = os.path.join(PACKAGE, "plugins", kind)
    offenders = [(rel, m) for rel, tree in _sources(folder) for m in _imported_modules(tree)
                 if m.startswith("taste_toolkit.evaluation")]
    assert not offenders, offenders
