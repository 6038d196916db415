"""Sphinx configuration for the supervisor documentation.

Built by tox's ``docs`` environment with warnings as errors and nitpicky
references: ``sphinx-build -W --keep-going -n -b html docs <out>``.
"""

from __future__ import annotations

import os
import sys

# The package is documented from the checkout, whether or not it is installed.
sys.path.insert(0, os.path.abspath(".."))

project = "supervisor"
author = "the supervisor authors"
copyright = "the supervisor authors"

try:
    from supervisor import __version__ as release
except Exception:  # pragma: no cover - the docs still build without the package
    release = "0.1.0"
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

# Google-style docstrings (trio's convention), rendered by napoleon.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True

autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_member_order = "bysource"
autodoc_class_signature = "mixed"
autodoc_default_options = {
    "undoc-members": False,
}

# No intersphinx (the docs build offline), so names from other projects that
# appear in signatures and type descriptions cannot be resolved: ignore them.
nitpick_ignore_regex = [
    (r"py:.*", r"(anyio|trio|_?asyncio)(\..*)?"),
    (r"py:.*", r"(collections\.abc|typing|types)\..*"),
]
# ``Result.reason`` is annotated with a private ``Literal`` alias; its values are
# listed in the docstring.
nitpick_ignore = [("py:class", "Reason")]

exclude_patterns = ["_build"]
html_theme = "alabaster"
html_title = f"supervisor {release}"
html_static_path: list[str] = []


# -- The public facade ---------------------------------------------------------
#
# ``supervisor/__init__.py`` re-exports each public name and rewrites its
# ``__module__`` to ``"supervisor"``, so that references read
# ``supervisor.Phase``. Autodoc reads attribute docstrings (the ``"""..."""``
# after an enum member or an instance attribute) from the source of
# ``__module__``, which is then the facade, not the private module that defines
# the class. These hooks find the defining module and take the docs from there.


def _defining_module(public_name: str) -> str | None:
    import supervisor

    obj = getattr(supervisor, public_name, None)
    for name, module in sorted(sys.modules.items()):
        if name.startswith("supervisor._") and getattr(module, public_name, None) is obj:
            return name
    return None


def _attribute_docs(app, what, name, obj, options, lines):  # noqa: ANN001
    """Fill in attribute docstrings of public classes from their real module."""
    if what != "attribute" or any(line.strip() for line in lines):
        return
    parts = name.split(".")
    if len(parts) != 3 or parts[0] != "supervisor":
        return
    _, cls, attr = parts
    modname = _defining_module(cls)
    if modname is None:
        return
    from sphinx.pycode import ModuleAnalyzer

    docs = ModuleAnalyzer.for_module(modname).find_attr_docs()
    lines.extend(docs.get((cls, attr), []))


def _signature(app, what, name, obj, options, signature, return_annotation):  # noqa: ANN001
    """Show ``anyio.TASK_STATUS_IGNORED`` instead of its object repr."""
    if signature and "_IgnoredTaskStatus object" in signature:
        import re

        signature = re.sub(r"<anyio\.[\w.]*_IgnoredTaskStatus object[^>]*>", "anyio.TASK_STATUS_IGNORED", signature)
        return signature, return_annotation
    return None


def setup(app):  # noqa: ANN001, ANN201
    app.connect("autodoc-process-docstring", _attribute_docs)
    app.connect("autodoc-process-signature", _signature)
