"""Sphinx configuration of sparselmm's documentation site, built by ``nox -s docs`` (warnings are errors).

Extensions: autodoc + autosummary (one page per public name, docs/api/), numpydoc (the docstrings' format)
and sphinx-gallery (docs/examples/*.py, run at build time, their figures kept). ``check_api_coverage``
fails the build when a public name of the modules in ``COVERED_MODULES`` has no page.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import sparselmm

HERE = Path(__file__).resolve().parent

project = "sparselmm"
author = "sparselmm developers"
copyright = "sparselmm developers, BSD-3-Clause"
version = release = sparselmm.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "examples", "**.ipynb_checkpoints", "auto_examples/*.ipynb", "auto_examples/*.py"]
root_doc = "index"
default_role = "literal"  # `x` in the guides is code, as in Markdown

# ---- API reference ---------------------------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": True}
autodoc_member_order = "groupwise"
autodoc_typehints = "signature"
autodoc_preserve_defaults = False
# the signatures' aliases (sparselmm/_typing.py, imported by the modules for type checkers only) link to docs/api/typing
autodoc_type_aliases = {
    name: f"sparselmm._typing.{name}"
    for name in ("DataLike", "FrameLike", "PathLike", "ColumnOrValues", "ContrastLike", "Seed")
}
numpydoc_show_class_members = False  # autodoc's :members: lists them (numpydoc's tables would duplicate)
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

# every public name of these modules must have an API page (check_api_coverage); aliases of a documented
# object (sparselmm.glmm.glmer is sparselmm.glmer) count as documented
COVERED_MODULES = [
    "sparselmm",
    "sparselmm.statsmodels",
    "sparselmm.scale",
    "sparselmm.glmm",
    "sparselmm.plot",
    "sparselmm.datasets",
]

# ---- gallery -----------------------------------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    "abort_on_example_error": True,
    "download_all_examples": False,
    "remove_config_comments": True,
    "image_scrapers": ("matplotlib",),
    "min_reported_time": 0,
    "write_computation_times": False,
    "show_memory": False,
}

# ---- HTML --------------------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"sparselmm {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_show_sourcelink = False
html_static_path = ["_static"]
html_css_files = ["custom.css"]
# pages without sub-pages get the whole width (the tables of the guides need it)
html_sidebars = {"index": [], "install": [], "guides/*": [], "api/generated/*": []}


def _documented_names() -> set[str]:
    """Qualified names listed in the autosummary directives of docs/api/*.rst."""
    names: set[str] = set()
    for path in sorted((HERE / "api").glob("*.rst")):
        module = None
        in_summary = False
        for line in path.read_text(encoding="utf-8").splitlines():
            m = re.match(r"\.\. (?:current)?module:: (\S+)", line)
            if m:
                module = m.group(1)
                in_summary = False
                continue
            if line.startswith(".. autosummary::"):
                in_summary = True
                continue
            if in_summary:
                entry = line.strip()
                if not entry or entry.startswith(":"):
                    continue
                if not line.startswith(" "):
                    in_summary = False
                    continue
                entry = entry.lstrip("~")
                names.add(entry if module is None or entry.startswith("sparselmm.") else f"{module}.{entry}")
    return names


def _resolve(qualified: str):
    parts = qualified.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(qualified)


def check_api_coverage(app) -> None:
    """Fail the build when a public name has no API page (the reference must cover ``__all__``)."""
    from sphinx.errors import ExtensionError

    documented = _documented_names()
    objects = {id(_resolve(n)) for n in documented}
    missing = []
    for module_name in COVERED_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if f"{module_name}.{name}" in documented or id(obj) in objects:
                continue
            if type(obj).__name__ == "module" and obj.__name__ in COVERED_MODULES:
                continue  # sparselmm.scale, sparselmm.datasets: their names are checked one by one
            missing.append(f"{module_name}.{name}")
    if missing:
        raise ExtensionError(f"public names without an API page (add them to docs/api/*.rst): {missing}")


def setup(app):
    app.connect("builder-inited", check_api_coverage)
