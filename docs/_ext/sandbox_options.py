"""``.. sandbox-options::``: the pytest plugin's options, rendered from their declaration.

The options of ``--sandbox`` sandboxes are declared once, in
:data:`supervisor._pytest.options.OPTIONS`; the ini options and the marker's
keywords come from that table, and so does this table of ``docs/testing.rst``:
the marker's keyword, the ini name, the default and the meaning.
"""

from __future__ import annotations

import importlib

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

MODULE = "supervisor._pytest.options"


def _cell(text: str, literal: bool) -> nodes.entry:
    entry = nodes.entry()
    paragraph = nodes.paragraph()
    paragraph += nodes.literal(text, text) if literal else nodes.Text(text)
    entry += paragraph
    return entry


class SandboxOptions(SphinxDirective):
    """The table of :func:`supervisor._pytest.options.options_table`."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        module = importlib.import_module(MODULE)
        if module.__file__:
            self.env.note_dependency(module.__file__)
        headers = ("marker keyword", "ini option", "default", "meaning")
        table = nodes.table(classes=["protocol-table"])
        group = nodes.tgroup(cols=len(headers))
        table += group
        for width in (12, 18, 10, 60):
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        group += head
        row = nodes.row()
        for header in headers:
            row += _cell(header, literal=False)
        head += row
        body = nodes.tbody()
        group += body
        for name, ini, default, meaning in module.options_table():
            row = nodes.row()
            row += _cell(name, literal=True)
            row += _cell(ini, literal=True)
            row += _cell(default, literal=True)
            row += _cell(meaning, literal=False)
            body += row
        return [table]


def setup(app: Sphinx) -> dict[str, bool]:
    app.add_directive("sandbox-options", SandboxOptions)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
