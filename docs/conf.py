"""Sphinx configuration for the supervisor documentation.

Built by tox's ``docs`` environment with warnings as errors and nitpicky
references: ``sphinx-build -W --keep-going -n -b html docs <out>``.
"""

from __future__ import annotations

import os
import sys

# The package as installed (tox -e docs installs the wheel, with its C
# extension); else the checkout, which must then have the extension built in
# place (python setup.py build_ext --inplace).
try:
    import supervisor  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.abspath(".."))
# Local extensions: docs/_ext/protocol_tables.py renders the protocol's tables
# from supervisor/_protocol.py, docs/_ext/sandbox_options.py the pytest
# plugin's options from supervisor/_pytest/options.py (see their docstrings).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "_ext"))

project = "supervisor"
author = "the supervisor authors"
copyright = "the supervisor authors"

try:
    from supervisor import __version__ as release
except Exception:  # noqa: BLE001 - the docs still build without the package
    release = "0.1.0"
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "protocol_tables",
    "sandbox_options",
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
    # The standard library, also unlinked without intersphinx (builtins such as
    # ``str`` and ``ValueError`` are handled by Sphinx itself).
    (r"py:.*", r"(collections\.abc|typing|types|contextvars|enum|os|subprocess|socket|signal|resource)\..*"),
    # Private modules have no page to link to.
    (r"py:.*", r"supervisor\._.*"),
]
# References in the package's docstrings to private names that are written
# without their module. ``Reason`` and ``EventKind`` are ``Literal`` aliases
# whose values the docstrings list.
nitpick_ignore = [
    ("py:class", "Reason"),
    ("py:class", "EventKind"),
    ("py:func", "sweep"),
    ("py:data", "CFS_PERIOD_US"),
]

exclude_patterns = ["_build"]
html_theme = "alabaster"
html_title = f"supervisor {release}"
# Wide enough for the code blocks on a 1280 px screen (alabaster's default
# page is 940 px, which made most of them scroll).
html_theme_options = {"page_width": "1240px", "sidebar_width": "220px"}
html_static_path = ["_static"]
html_css_files = ["custom.css"]


# -- The public facade ---------------------------------------------------------
#
# ``supervisor/__init__.py`` re-exports each public name and rewrites its
# ``__module__`` to ``"supervisor"``, so that references read
# ``supervisor.Phase``. Autodoc reads attribute docstrings (the ``"""..."""``
# after an enum member or an instance attribute) from the source of
# ``__module__``, which is then the facade, not the private module that defines
# the class. So the facade's source analysis is given the attribute docs of the
# private modules as well (keys are ``(class qualname, attribute)``).


def _merge_attribute_docs(app):
    import pkgutil

    from sphinx.pycode import ModuleAnalyzer

    import supervisor

    facade = ModuleAnalyzer.for_module("supervisor")
    facade.analyze()
    for info in pkgutil.walk_packages(supervisor.__path__, "supervisor."):
        if info.name.startswith("supervisor._child") or info.name == "supervisor.__main__":
            continue  # nothing public is defined there
        try:
            private = ModuleAnalyzer.for_module(info.name)
            private.analyze()
        except Exception:  # noqa: BLE001 - no source, nothing to merge
            continue
        for key, lines in private.attr_docs.items():
            # Class attributes, and the ``#:`` comments of module-level names
            # that the facade re-exports (such as ``PIPE``).
            if key[0] or key[1] in supervisor.__all__:
                facade.attr_docs.setdefault(key, lines)


def _signature(app, what, name, obj, options, signature, return_annotation):
    """Show ``anyio.TASK_STATUS_IGNORED`` instead of its object repr."""
    if signature and "_IgnoredTaskStatus object" in signature:
        import re

        signature = re.sub(r"<anyio\.[\w.]*_IgnoredTaskStatus object[^>]*>", "anyio.TASK_STATUS_IGNORED", signature)
        return signature, return_annotation
    return None


_attribute_text: dict[str, list[str]] = {}


def _keep_attribute_text(app, what, name, obj, options, lines):
    """Keep attribute docstrings as written (before napoleon, priority 400).

    Napoleon reads ``X: text`` on an attribute docstring's first line as an
    attribute of type ``X``; the phase docstrings are prose whose first line
    may hold a colon (``*Request*: the supervisor writes ...``). Attribute
    docstrings here are plain reStructuredText, so the text is restored after
    napoleon ran (priority 600).
    """
    if what == "attribute" and name.startswith("supervisor."):
        _attribute_text[name] = list(lines)


def _restore_attribute_text(app, what, name, obj, options, lines):
    if what == "attribute" and name in _attribute_text:
        lines[:] = _attribute_text.pop(name)


def _cli_help(argv: list[str]) -> str:
    """What ``supervisor ARGV --help`` prints, at 80 columns."""
    import contextlib
    import io

    from supervisor._cli import build_parser

    out = io.StringIO()
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "80"
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            build_parser().parse_args([*argv, "--help"])
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved
    return out.getvalue()


def _help_directive():
    """``.. supervisor-help:: [SUBCOMMAND]``: the CLI's own ``--help`` text.

    The CLI page shows the parser's help as generated from
    ``supervisor._cli.build_parser``, so it cannot drift from the code.
    """
    from docutils import nodes
    from sphinx.util.docutils import SphinxDirective

    class SupervisorHelp(SphinxDirective):
        optional_arguments = 1
        has_content = False

        def run(self) -> list[nodes.Node]:
            text = _cli_help(list(self.arguments)).rstrip()
            block = nodes.literal_block(text, text)
            block["language"] = "text"
            cli = os.path.join(self.env.srcdir, "..", "supervisor", "_cli")
            for module in sorted(os.listdir(cli)):
                if module.endswith(".py"):
                    self.env.note_dependency(os.path.join(cli, module))
            return [block]

    return SupervisorHelp


def _check_public_names_documented(app, env):
    """Warn (an error under ``-W``) when a name of ``supervisor.__all__`` has no entry."""
    from sphinx.util import logging

    import supervisor

    documented = set(env.get_domain("py").objects)
    for name in supervisor.__all__:
        if f"supervisor.{name}" not in documented:
            logging.getLogger(__name__).warning(
                "supervisor.%s is public (in supervisor.__all__) but not documented in docs/api.rst", name
            )


def setup(app):
    app.connect("env-check-consistency", _check_public_names_documented)
    app.add_directive("supervisor-help", _help_directive())
    app.connect("builder-inited", _merge_attribute_docs)
    app.connect("autodoc-process-docstring", _keep_attribute_text, priority=400)
    app.connect("autodoc-process-docstring", _restore_attribute_text, priority=600)
    app.connect("autodoc-process-signature", _signature)
