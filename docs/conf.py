"""Sphinx configuration of vprob's documentation site.

Build it from the repository root with one command (docs/README.md)::

    sphinx-build -W -b html docs docs/_build/html

It builds offline: cross-references to Python, NumPy, PyTorch and Pyro (intersphinx) are switched on only for
inventories found in ``docs/_inventories/`` or when ``VPROB_DOCS_INTERSPHINX=1`` allows fetching them, since a
failed fetch is a warning and warnings fail the build. The notebooks are rendered with their stored outputs
(never executed here), and the command-line page is generated from ``vprob.cli.build_parser()``.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
# Document the working tree, not whatever vprob happens to be installed.
sys.path.insert(0, str(ROOT))

import vprob  # noqa: E402

project = "vprob"
author = "the vprob developers"
copyright = "the vprob developers"
release = vprob.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "myst_nb",  # Markdown (MyST, which includes myst_parser) and notebooks with their stored outputs
]

root_doc = "index"
# _generated/cli_reference.md is not a page of its own: cli.md includes it.
exclude_patterns = [
    "_build",
    "_inventories",
    "README.md",
    "**.ipynb_checkpoints",
    "_generated/cli_reference.md",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}

# --- Markdown and notebooks ---------------------------------------------------------------------------------
# Anchors for headings down to ###, so pages link sections of maths.md as maths.md#projected-normal.
myst_heading_anchors = 3
myst_enable_extensions = ["dollarmath", "amsmath"]
# Show the outputs stored in the notebooks; executing them is the test suite's job (tests/ runs them).
nb_execution_mode = "off"

# --- API reference ------------------------------------------------------------------------------------------
# undoc-members: a public name without a docstring (a constant such as CORRUPTIONS) is still listed.
autodoc_default_options = {
    "members": True,
    "undoc-members": True,
    "show-inheritance": True,
    "member-order": "bysource",
}
autodoc_member_order = "bysource"
# Type hints go into the parameter descriptions, where a long torch type does not bury the signature.
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_class_signature = "mixed"
autoclass_content = "both"
napoleon_google_docstring = True
napoleon_numpy_docstring = True
napoleon_use_rtype = False
# "Attributes:" sections become fields of the class, not attribute entries that would duplicate the
# dataclass fields autodoc lists itself.
napoleon_use_ivar = True
napoleon_preprocess_types = False
# A reference that cannot be resolved (a torch type with intersphinx off) is left as plain text, not an error.
nitpicky = False

# --- Cross-references to other projects (offline by default) -----------------------------------------------
_INVENTORIES = {
    "python": "https://docs.python.org/3/",
    "numpy": "https://numpy.org/doc/stable/",
    "torch": "https://docs.pytorch.org/docs/stable/",
    "pyro": "https://docs.pyro.ai/en/stable/",
}
_fetch = os.environ.get("VPROB_DOCS_INTERSPHINX", "") == "1"
intersphinx_mapping = {}
for _name, _url in _INVENTORIES.items():
    _local = DOCS / "_inventories" / f"{_name}.inv"
    if _local.is_file():
        intersphinx_mapping[_name] = (_url, str(_local))
    elif _fetch:
        intersphinx_mapping[_name] = (_url, None)
intersphinx_timeout = 10

# --- HTML ---------------------------------------------------------------------------------------------------
html_theme = "sphinx_rtd_theme"
html_title = f"vprob {release}"
html_show_sourcelink = False


# --- Generated pages ----------------------------------------------------------------------------------------
GENERATED = DOCS / "_generated"


def _write_if_changed(path: Path, text: str) -> None:
    # Rewriting an unchanged file would make Sphinx rebuild the page every time.
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def _copy_notebooks() -> None:
    """The notebooks live in notebooks/ (outside the Sphinx source folder): copy them in as tutorials.

    Their links to the maths page are written relative to notebooks/ (``../docs/maths.md#vje``); in the copy
    the page is one folder up from ``_generated/tutorials``, twice removed from the source root.
    """
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        text = notebook.read_text(encoding="utf-8")
        text = re.sub(r"\]\(\.\./docs/", "](../../", text)
        _write_if_changed(GENERATED / "tutorials" / notebook.name, text)
    stale = {p.name for p in (GENERATED / "tutorials").glob("*.ipynb")} - {
        p.name for p in (ROOT / "notebooks").glob("*.ipynb")
    }
    for name in stale:
        (GENERATED / "tutorials" / name).unlink()


def _command_line_reference() -> str:
    """Every subcommand's ``--help``, as the installed ``vprob`` prints it, from ``vprob.cli.build_parser()``.

    Shown as literal text: the help strings are written for a terminal (``nu / |mu|^2``), not as
    reStructuredText, and a literal block shows them exactly as ``vprob train --help`` does.
    """
    import argparse

    from vprob.cli import build_parser

    # argparse wraps help to the terminal's width; fix it so the page does not depend on who builds it, at
    # the width the theme shows without scrolling.
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "82"
    try:
        parser = build_parser()
        parts = [
            "<!-- Generated by docs/conf.py from vprob.cli.build_parser(); do not edit. -->",
            "",
            "```text",
            parser.format_help().rstrip(),
            "```",
            "",
        ]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    parts += [f"## vprob {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    return "\n".join(parts)


def _drop_builtin_type_docstrings(app, what, name, obj, options, lines) -> None:
    """A constant without a docstring of its own (``PROJECTIONS = (...)``) would be shown with the docstring
    of its type (tuple's, dict's): drop it, so the constant is shown with its value only."""
    if what not in ("data", "attribute") or not lines:
        return
    type_doc = type(obj).__doc__
    if type(obj).__module__ != "builtins" or not type_doc:
        return
    if lines[0].strip() == type_doc.strip().splitlines()[0]:
        lines.clear()


# Inline literals and roles (``|x|``, :math:`|x|`), where a backslash would be shown or change the maths.
_PROTECTED_SPAN = re.compile(r"(``.+?``|:[\w:.+-]+:`[^`]*`|`[^`]*`_{0,2})")
_BLOCK_STARTS = (".. math", ".. code", ".. doctest", ".. testcode", ".. highlight", ">>>")


def _escape_bars(text: str) -> str:
    parts = _PROTECTED_SPAN.split(text)
    return "".join(part if i % 2 else part.replace("|", "\\|") for i, part in enumerate(parts))


def _plain_text_norms(app, what, name, obj, options, lines) -> None:
    """Docstrings write norms in plain text, as docs/maths.md does: ``|mu|^2``, ``|z|``. In
    reStructuredText a bare ``|x|`` is a substitution reference (an error); vprob's docstrings define no
    substitutions, so a bar outside literals, roles, literal blocks and maths is escaped to stand for itself.
    """
    block_indent = None  # indentation of the line that opened a literal/maths block, while inside one
    for i, line in enumerate(lines):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if block_indent is not None:
            if not stripped or indent > block_indent:
                continue
            block_indent = None
        if stripped.endswith("::") or stripped.startswith(_BLOCK_STARTS):
            block_indent = indent
        if "|" in line and not stripped.startswith(_BLOCK_STARTS):
            head, sep, tail = line.partition("::") if stripped.endswith("::") else (line, "", "")
            lines[i] = _escape_bars(head) + sep + tail


# Packages whose public names (``__all__``) must each be documented on some page of docs/api/: the pages
# list these names one by one (to link each to its maths section), so a new export would otherwise be missed.
DOCUMENTED_PACKAGES = (
    "distributions",
    "vprob.losses",
    "vprob.models",
    "vprob.methods",
    "vprob.data",
    "vprob.diagnostics",
    "vprob.nets",
)


def _check_exports_documented(app, env) -> None:
    import importlib

    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    documented = set(env.get_domain("py").objects)
    for package in DOCUMENTED_PACKAGES:
        module = importlib.import_module(package)
        for name in getattr(module, "__all__", ()):
            # Documented at the package (distributions.ProjectedNormal) or in a submodule's automodule.
            if not any(
                full == f"{package}.{name}" or (full.startswith(f"{package}.") and full.endswith(f".{name}"))
                for full in documented
            ):
                logger.warning(
                    f"{package}.{name} is exported (__all__) but documented on no page of docs/api/",
                    type="vprob",
                    subtype="undocumented",
                )


def setup(app):
    app.connect("env-check-consistency", _check_exports_documented)
    # Before napoleon (priority 500) rewrites the lines.
    app.connect("autodoc-process-docstring", _drop_builtin_type_docstrings, priority=100)
    # After napoleon, on the reStructuredText it produced.
    app.connect("autodoc-process-docstring", _plain_text_norms, priority=600)
    return {"parallel_read_safe": True}


_copy_notebooks()
_write_if_changed(GENERATED / "cli_reference.md", _command_line_reference())
