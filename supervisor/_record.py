"""Records: the package's dataclasses, made without the ``dataclasses`` module.

``supervisor run`` is a new interpreter each time, and importing
``dataclasses`` (with ``inspect``, which it imports) and building some twenty
dataclasses with it took about 24 ms of a 80 ms command. :func:`record` makes
the same classes (a generated ``__init__`` with the defaults and default
factories, ``__post_init__``, ``__repr__``, ``__eq__``, and for frozen ones
``__hash__`` and :class:`dataclasses.FrozenInstanceError` on assignment) in
a fraction of that, and they stay dataclasses for everyone else:
``dataclasses.fields``, ``replace``, ``asdict`` and ``is_dataclass`` work on
them, because ``__dataclass_fields__`` is made, by the ``dataclasses``
module itself on a copy of the class, the first time something asks for it.

Only what the package uses is supported: annotated fields in order (those of
record bases first), plain defaults, ``field(default=...)`` and
``field(default_factory=...)``, ``frozen``.
"""

from __future__ import annotations

import operator

TYPE_CHECKING = False  # not typing's: importing typing costs the command line some 3 ms
if TYPE_CHECKING:
    from collections.abc import Callable
    from dataclasses import Field
    from typing import Any, TypeVar, dataclass_transform, overload

    _T = TypeVar("_T")
    _C = TypeVar("_C", bound=type)

_MISSING = object()


class _Field:
    """A field's default, as :func:`field` gives it (the ``dataclasses`` one's subset)."""

    __slots__ = ("default", "default_factory")

    def __init__(self, default: Any = _MISSING, default_factory: Any = _MISSING) -> None:
        self.default = default
        self.default_factory = default_factory


class _Factory:
    """The default of a field with a factory, in the generated ``__init__``'s signature."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()


if TYPE_CHECKING:  # to type checkers, as dataclasses.field: the type of the default

    @overload
    def field(*, default: _T) -> _T: ...
    @overload
    def field(*, default_factory: Callable[[], _T]) -> _T: ...
    def field(*, default: Any = ..., default_factory: Any = ...) -> Any: ...

else:

    def field(*, default=_MISSING, default_factory=_MISSING):
        """A field with a default or a default factory (:func:`dataclasses.field`'s subset)."""
        return _Field(default, default_factory)


class _LazyFields:
    """``__dataclass_fields__``, made by ``dataclasses`` itself on first use."""

    def __get__(self, obj: object, owner: type) -> dict[str, Field[Any]]:
        import dataclasses

        spec: dict[str, Any] = {"__annotations__": {}, "__module__": owner.__module__}
        for name, kind, value in owner.__record_fields__:  # type: ignore[attr-defined]
            spec["__annotations__"][name] = owner.__record_types__[name]  # type: ignore[attr-defined]
            if kind == "default":
                spec[name] = dataclasses.field(default=value)
            elif kind == "factory":
                spec[name] = dataclasses.field(default_factory=value)
        make: Any = dataclasses.dataclass(frozen=owner.__record_frozen__)  # type: ignore[attr-defined]
        shadow: Any = make(type(owner.__name__, (), spec))
        fields: dict[str, Field[Any]] = shadow.__dataclass_fields__
        type.__setattr__(owner, "__dataclass_fields__", fields)
        type.__setattr__(owner, "__dataclass_params__", shadow.__dataclass_params__)
        return fields


def _frozen_setattr(self: object, name: str, value: object) -> None:
    import dataclasses

    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: object, name: str) -> None:
    import dataclasses

    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


def _repr(self: object) -> str:
    names = type(self).__record_names__  # type: ignore[attr-defined]
    inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
    return f"{type(self).__qualname__}({inner})"


def _eq(self: object, other: object) -> bool:
    if other.__class__ is not self.__class__:
        return NotImplemented  # type: ignore[no-any-return]
    values = type(self).__record_values__  # type: ignore[attr-defined]
    same: bool = values(self) == values(other)
    return same


def _hash(self: object) -> int:
    return hash(type(self).__record_values__(self))  # type: ignore[attr-defined]


def _make(cls: type, frozen: bool) -> type:
    """Make ``cls`` a record (the body of :func:`record` and :func:`mutable_record`)."""
    fields: list[tuple[str, str, Any]] = []
    types: dict[str, Any] = {}
    for base in reversed(cls.__mro__[1:]):
        if "__record_fields__" in base.__dict__:
            parent: Any = base
            fields = [f for f in fields if f[0] not in parent.__record_names__] + list(parent.__record_fields__)
            types.update(parent.__record_types__)
    # (inspect.get_annotations would import inspect, the cost this module avoids)
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():  # noqa: RUF063
        if isinstance(annotation, str) and annotation.startswith(("ClassVar", "typing.ClassVar")):
            continue
        value = cls.__dict__.get(name, _MISSING)
        if isinstance(value, _Field):
            kind, value = (
                ("factory", value.default_factory)
                if value.default_factory is not _MISSING
                else ("default", value.default)
                if value.default is not _MISSING
                else ("required", None)
            )
        else:
            kind = "required" if value is _MISSING else "default"
        if kind != "default" and name in cls.__dict__:
            delattr(cls, name)  # a marker or nothing: no class attribute
        elif kind == "default":
            setattr(cls, name, value)  # as dataclasses leaves it
        fields = [f for f in fields if f[0] != name] + [(name, kind, value)]
        types[name] = annotation
    seen_default = False
    for name, kind, _value in fields:
        if kind == "required" and seen_default:
            raise TypeError(f"non-default argument {name!r} follows default argument")
        seen_default = seen_default or kind != "required"

    params, body, scope = [], [], {"_FACTORY": _FACTORY, "_object_setattr": object.__setattr__}
    for name, kind, value in fields:
        if kind == "required":
            params.append(name)
        elif kind == "default":
            scope[f"_d_{name}"] = value
            params.append(f"{name}=_d_{name}")
        else:
            scope[f"_f_{name}"] = value
            params.append(f"{name}=_FACTORY")
        source = f"_f_{name}() if {name} is _FACTORY else {name}" if kind == "factory" else name
        body.append(f"_object_setattr(self, {name!r}, {source})" if frozen else f"self.{name} = {source}")
    if "__post_init__" in dir(cls):
        body.append("self.__post_init__()")
    text = f"def __init__(self, {', '.join(params)}):\n    " + "\n    ".join(body or ["pass"]) + "\n"
    exec(text, scope)  # our own generated __init__, as dataclasses does
    init: Any = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__

    cls.__init__ = init  # type: ignore[misc]
    cls.__record_fields__ = tuple(fields)  # type: ignore[attr-defined]
    cls.__record_names__ = tuple(name for name, _k, _v in fields)  # type: ignore[attr-defined]
    cls.__record_types__ = types  # type: ignore[attr-defined]
    # The fields' values, in C: a tuple (or the one value, or nothing), for __eq__ and __hash__.
    cls.__record_values__ = operator.attrgetter(*cls.__record_names__) if fields else (lambda _self: ())  # type: ignore[attr-defined]
    cls.__record_frozen__ = frozen  # type: ignore[attr-defined]
    cls.__match_args__ = cls.__record_names__  # type: ignore[attr-defined,misc]
    cls.__dataclass_fields__ = _LazyFields()  # type: ignore[attr-defined]
    if "__repr__" not in cls.__dict__:
        cls.__repr__ = _repr  # type: ignore[assignment]
    if "__eq__" not in cls.__dict__:
        cls.__eq__ = _eq  # type: ignore[assignment]
        cls.__hash__ = _hash if frozen else None  # type: ignore[assignment]
    if frozen:
        cls.__setattr__ = _frozen_setattr  # type: ignore[assignment]
        cls.__delattr__ = _frozen_delattr  # type: ignore[assignment]
    return cls


if TYPE_CHECKING:

    @dataclass_transform(frozen_default=True, field_specifiers=(field,))
    def record(cls: _C, /) -> _C: ...
    @dataclass_transform(field_specifiers=(field,))
    def mutable_record(cls: _C, /) -> _C: ...

else:

    def record(cls, /):
        """``@dataclass(frozen=True)``: a frozen record of ``cls``'s annotated fields."""
        return _make(cls, True)

    def mutable_record(cls, /):
        """``@dataclass``: a record whose fields may be assigned."""
        return _make(cls, False)
