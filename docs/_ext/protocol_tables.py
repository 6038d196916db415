"""Tables of the setup protocol, rendered from ``supervisor/_protocol.py``.

The protocol is declared once, in :mod:`supervisor._protocol`; the build of the
package renders ``sv_protocol.h`` for PID 1's C code from it
(:func:`supervisor._protocol.c_header`), and this extension renders the
tables of ``docs/protocol.rst`` from it, so that neither can drift from the
declaration. Directives:

``.. protocol-choreography::``
    The diagram of the module docstring (its ``::`` block).
``.. protocol-phases::``
    :class:`Phase`: number, C name, label, whether it is a request
    (``REQUEST_PHASES``), whether the supervisor has a step of its own in it
    (``PARENT_STEP_PHASES``), and the member's docstring.
``.. protocol-records::``
    :class:`Record`: number, C name, docstring.
``.. protocol-layout:: NAME``
    A binary :class:`Layout` (``HEADER``, ``MARK``): field, C type (read from
    the rendered header), struct format, offset, size, description.
``.. spawn-config:: [CLASS]``
    :class:`SpawnConfig` (the default) or one of its nested dataclasses:
    field, type annotation, default, attribute docstring.
``.. protocol-constants:: NAME [NAME ...]``
    Module constants: value, C macro where the header has one, ``#:`` comment.

Attribute docstrings are not kept at run time, so they are read from the
source with :class:`sphinx.pycode.ModuleAnalyzer`. Every row is a link target
of the Python domain (``supervisor._protocol.SpawnConfig.rootfs``,
``supervisor.Phase.USERNS``, ...), so the docstrings' own references
(``:data:`MARK```, ``:attr:`rootfs```) resolve. At the end of reading, every
documented module-level name of ``_protocol`` and every dataclass the spawn
configuration nests must have been rendered by one of these directives, or
the build warns: a new declaration cannot go undocumented.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import struct
import typing
from types import ModuleType
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

MODULE = "supervisor._protocol"
#: Where the public facade re-exports ``Phase`` (its members are link targets there).
PHASE_PUBLIC = "supervisor.Phase"

logger = logging.getLogger(__name__)


def _module() -> ModuleType:
    return importlib.import_module(MODULE)


def _attr_docs() -> dict[tuple[str, str], list[str]]:
    """``(class, attribute) -> lines``: docstrings after attributes, ``#:`` comments."""
    return ModuleAnalyzer.for_module(MODULE).find_attr_docs()


def _header() -> str:
    """``sv_protocol.h`` as the package build renders it."""
    return _module().c_header()


def _c_enum(prefix: str) -> dict[int, str]:
    """``value -> C name`` of an enum of the rendered header (``SV_PHASE_``, ``SV_REC_``)."""
    return {int(v): f"{prefix}{n}" for n, v in re.findall(rf"\b{prefix}(\w+) = (\d+),", _header())}


def _c_struct(c_name: str) -> dict[str, str]:
    """``field -> C type`` of a struct of the rendered header."""
    match = re.search(rf"struct {c_name} \{{\n(.*?)\n\}};", _header(), re.S)
    if match is None:
        return {}
    return {name: ctype for ctype, name in re.findall(r"^\s*(\w+) (\w+);$", match.group(1), re.M)}


def _c_macros() -> dict[str, str]:
    """``macro -> value`` of the rendered header's ``#define SV_...`` lines."""
    return dict(re.findall(r"^#define (SV_\w+) (.+)$", _header(), re.M))


def _rendered(env: BuildEnvironment) -> dict[str, set[str]]:
    if not hasattr(env, "protocol_tables_rendered"):
        env.protocol_tables_rendered = {}  # type: ignore[attr-defined]
    return env.protocol_tables_rendered  # type: ignore[attr-defined,no-any-return]


# -- building blocks ------------------------------------------------------------


def _literal(text: str) -> list[nodes.Node]:
    return [nodes.paragraph("", "", nodes.literal(text, text))]


def _text(text: str) -> list[nodes.Node]:
    return [nodes.paragraph(text, text)] if text else []


def _table(
    headers: list[str],
    rows: list[list[list[nodes.Node]]],
    widths: list[int],
    *,
    title: str | None = None,
    ids: list[str] | None = None,
) -> nodes.table:
    table = nodes.table(classes=["protocol-table"], ids=list(ids or []))
    if title:
        table += nodes.title(title, title)
    group = nodes.tgroup(cols=len(headers))
    table += group
    for width in widths:
        group += nodes.colspec(colwidth=width)
    head = nodes.thead()
    group += head
    head += _row([_text(h) for h in headers])
    body = nodes.tbody()
    group += body
    for cells in rows:
        body += _row(cells)
    return table


def _row(cells: list[list[nodes.Node]]) -> nodes.row:
    row = nodes.row()
    for cell in cells:
        entry = nodes.entry()
        entry.extend(cell)
        row += entry
    return row


class _ProtocolDirective(SphinxDirective):
    """Shared helpers: parsing docstrings in the module's context, link targets."""

    def run(self) -> list[nodes.Node]:
        module = _module()
        if module.__file__:
            self.env.note_dependency(module.__file__)
        return self.render(module)

    def render(self, module: ModuleType) -> list[nodes.Node]:
        raise NotImplementedError

    def rst(self, lines: list[str] | str, name: str, cls: str | None = None) -> list[nodes.Node]:
        """reStructuredText of a docstring of ``name``, with references resolved
        as the module's own (``:data:`MARK``` is ``supervisor._protocol.MARK``)."""
        if isinstance(lines, str):
            lines = lines.splitlines()
        source = f"{_module().__file__}:docstring of {MODULE}.{name}"
        saved = dict(self.env.ref_context)
        self.env.ref_context["py:module"] = MODULE
        if cls is None:
            self.env.ref_context.pop("py:class", None)
        else:
            self.env.ref_context["py:class"] = cls
        try:
            holder = nodes.Element()
            self.state.nested_parse(StringList(list(lines), source), self.content_offset, holder)
        finally:
            self.env.ref_context.clear()
            self.env.ref_context.update(saved)
        return list(holder.children)

    def target(self, cell: list[nodes.Node], fullname: str, objtype: str) -> list[nodes.Node]:
        """Make ``cell`` the Python domain's entry for ``fullname``."""
        cell[0]["ids"].append(fullname)
        self.note(fullname, objtype, fullname)
        return cell

    def note(self, fullname: str, objtype: str, node_id: str) -> None:
        self.env.get_domain("py").note_object(fullname, objtype, node_id, location=self.get_location())
        if fullname.startswith(MODULE + "."):
            _rendered(self.env).setdefault(self.env.docname, set()).add(fullname[len(MODULE) + 1 :])

    def doc(self, cls: str, name: str) -> list[str]:
        return list(_attr_docs().get((cls, name), []))


# -- the directives -------------------------------------------------------------


class ProtocolChoreography(_ProtocolDirective):
    """The ``::`` block of the module docstring: who sends what, in order."""

    def render(self, module: ModuleType) -> list[nodes.Node]:
        lines = (module.__doc__ or "").splitlines()
        start = next((i + 1 for i, line in enumerate(lines) if line.rstrip().endswith("::")), None)
        if start is None:
            logger.warning("%s: the module docstring has no '::' block", MODULE, location=self.get_location())
            return []
        block: list[str] = []
        for line in lines[start:]:
            if line.strip() and not line.startswith((" ", "\t")):
                break
            block.append(line)
        text = "\n".join(block).strip("\n")
        indent = min(len(line) - len(line.lstrip()) for line in block if line.strip())
        text = "\n".join(line[indent:] for line in text.splitlines())
        literal = nodes.literal_block(text, text)
        literal["language"] = "text"
        return [literal]


class ProtocolPhases(_ProtocolDirective):
    """:class:`Phase`, in protocol order."""

    def render(self, module: ModuleType) -> list[nodes.Node]:
        requests, steps = module.REQUEST_PHASES, module.PARENT_STEP_PHASES
        c_names = _c_enum("SV_PHASE_")
        rows = []
        for phase in module.Phase:
            rows.append(
                [
                    _literal(str(int(phase))),
                    self.target(_literal(phase.label), f"{PHASE_PUBLIC}.{phase.name}", "attribute"),
                    _literal(c_names.get(int(phase), "?")),
                    _text("yes" if phase in requests else ""),
                    _text("yes" if phase in steps else ""),
                    self.rst(self.doc("Phase", phase.name), f"Phase.{phase.name}", "Phase"),
                ]
            )
        table = _table(
            ["#", "label", "C", "request", "supervisor's step", "what, and why here"],
            rows,
            [3, 12, 18, 8, 10, 55],
            ids=[f"{MODULE}.Phase"],
        )
        self.note(f"{MODULE}.Phase", "class", f"{MODULE}.Phase")
        legend = nodes.bullet_list()
        for name, column in (("REQUEST_PHASES", "request"), ("PARENT_STEP_PHASES", "supervisor's step")):
            item = nodes.list_item()
            body = self.rst(self.doc("", name), name)
            if not body or not isinstance(body[0], nodes.paragraph):
                body.insert(0, nodes.paragraph())
            prefix = [nodes.strong(column, column), nodes.Text(" ("), nodes.literal(name, name), nodes.Text("): ")]
            body[0][0:0] = prefix
            item.extend(body)
            item["ids"].append(f"{MODULE}.{name}")
            self.note(f"{MODULE}.{name}", "data", f"{MODULE}.{name}")
            legend += item
        return [table, legend]


class ProtocolRecords(_ProtocolDirective):
    """:class:`Record`: the record types between PID 1 and the supervisor."""

    def render(self, module: ModuleType) -> list[nodes.Node]:
        c_names = _c_enum("SV_REC_")
        rows = [
            [
                _literal(str(int(record))),
                self.target(_literal(record.name), f"{MODULE}.Record.{record.name}", "attribute"),
                _literal(c_names.get(int(record), "?")),
                self.rst(self.doc("Record", record.name), f"Record.{record.name}", "Record"),
            ]
            for record in module.Record
        ]
        self.note(f"{MODULE}.Record", "class", f"{MODULE}.Record")
        return [
            _table(["tag", "record", "C", "direction and meaning"], rows, [4, 10, 16, 70], ids=[f"{MODULE}.Record"])
        ]


class ProtocolLayout(_ProtocolDirective):
    """A fixed binary layout, field by field, beside its C struct."""

    required_arguments = 1

    def render(self, module: ModuleType) -> list[nodes.Node]:
        name = self.arguments[0]
        layout = getattr(module, name, None)
        if not isinstance(layout, module.Layout):
            logger.warning("%s.%s is not a Layout", MODULE, name, location=self.get_location())
            return []
        c_types = _c_struct(layout.c_name)
        rows = []
        offset = 0
        for field, fmt, description in layout.fields:
            size = struct.calcsize("=" + fmt)
            if field not in c_types:
                logger.warning(
                    "%s.%s.%s is not in struct %s of sv_protocol.h",
                    MODULE,
                    name,
                    field,
                    layout.c_name,
                    location=self.get_location(),
                )
            rows.append(
                [
                    _literal(field),
                    _literal(c_types.get(field, "?")),
                    _literal(fmt),
                    _text(str(offset)),
                    _text(str(size)),
                    self.rst(description, name),
                ]
            )
            offset += size
        fullname = f"{MODULE}.{name}"
        self.note(fullname, "data", fullname)
        title = f"{name}: struct {layout.c_name}, {layout.struct.size} bytes"
        table = _table(
            ["field", "C type", "struct", "offset", "size", "meaning"],
            rows,
            [10, 10, 7, 7, 6, 60],
            title=title,
            ids=[fullname],
        )
        return [*self.rst(self.doc("", name), name), table]


class SpawnConfigTable(_ProtocolDirective):
    """:class:`SpawnConfig` or a dataclass it nests: its fields and their docstrings."""

    optional_arguments = 1

    def render(self, module: ModuleType) -> list[nodes.Node]:
        name = self.arguments[0] if self.arguments else "SpawnConfig"
        cls = getattr(module, name, None)
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            logger.warning("%s.%s is not a dataclass", MODULE, name, location=self.get_location())
            return []
        rows = []
        for field in dataclasses.fields(cls):
            if field.default is not dataclasses.MISSING:
                default = _literal(repr(field.default))
            elif field.default_factory is not dataclasses.MISSING:
                default = _literal(repr(field.default_factory()))
            else:
                default = _text("")
            annotation = (
                field.type if isinstance(field.type, str) else getattr(field.type, "__name__", repr(field.type))
            )
            rows.append(
                [
                    self.target(_literal(field.name), f"{MODULE}.{name}.{field.name}", "attribute"),
                    _literal(annotation),
                    default,
                    self.rst(self.doc(name, field.name), f"{name}.{field.name}", name),
                ]
            )
        fullname = f"{MODULE}.{name}"
        self.note(fullname, "class", fullname)
        intro = self.rst(inspect.cleandoc(cls.__doc__ or ""), name, name)
        table = _table(["field", "type", "default", "meaning"], rows, [16, 20, 8, 56], title=name, ids=[fullname])
        return [*intro, table]


class ProtocolConstants(_ProtocolDirective):
    """Module constants with their ``#:`` comments, beside the C macros."""

    required_arguments = 1
    final_argument_whitespace = True

    def render(self, module: ModuleType) -> list[nodes.Node]:
        macros = _c_macros()
        rows = []
        for name in self.arguments[0].split():
            if not hasattr(module, name):
                logger.warning("%s has no %s", MODULE, name, location=self.get_location())
                continue
            value = getattr(module, name)
            macro = f"SV_{name}"
            rows.append(
                [
                    self.target(_literal(name), f"{MODULE}.{name}", "data"),
                    _literal(repr(value)),
                    _literal(macro) if macro in macros else _text(""),
                    self.rst(self.doc("", name), name),
                ]
            )
        return [_table(["name", "value", "in sv_protocol.h", "meaning"], rows, [18, 16, 20, 46])]


# -- every declaration rendered -------------------------------------------------


def _required(module: ModuleType) -> set[str]:
    """Names of ``_protocol`` that some table must render."""
    names = {name for (cls, name) in _attr_docs() if cls == ""}
    names |= {"Phase", "Record", "SpawnConfig"}

    def nested(tp: Any) -> None:
        if isinstance(tp, type) and dataclasses.is_dataclass(tp) and tp.__module__ == MODULE:
            names.add(tp.__name__)
        for arg in typing.get_args(tp):
            nested(arg)

    for tp in typing.get_type_hints(module.SpawnConfig, vars(module)).values():
        nested(tp)
    return names


def _check(app: Sphinx, env: BuildEnvironment) -> None:
    done = set().union(*_rendered(env).values())
    for name in sorted(_required(_module()) - done):
        logger.warning(
            "%s.%s is declared but no protocol table renders it (see docs/_ext/protocol_tables.py)", MODULE, name
        )


def _purge(app: Sphinx, env: BuildEnvironment, docname: str) -> None:
    _rendered(env).pop(docname, None)


def _merge(app: Sphinx, env: BuildEnvironment, docnames: set[str], other: BuildEnvironment) -> None:
    for docname, names in _rendered(other).items():
        if docname in docnames:
            _rendered(env)[docname] = names


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("protocol-choreography", ProtocolChoreography)
    app.add_directive("protocol-phases", ProtocolPhases)
    app.add_directive("protocol-records", ProtocolRecords)
    app.add_directive("protocol-layout", ProtocolLayout)
    app.add_directive("spawn-config", SpawnConfigTable)
    app.add_directive("protocol-constants", ProtocolConstants)
    app.connect("env-purge-doc", _purge)
    app.connect("env-merge-info", _merge)
    app.connect("env-check-consistency", _check)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True, "env_version": 1}
