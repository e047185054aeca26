"""Spicepod keys declared on the dataclasses they fill, and the machinery that reads them.

A key is declared once, as a dataclass field made by `key(...)` (a value) or `nested(...)` (a mapping of
its own): the field carries the check, the default and the line of help. From the fields come the table
a YAML mapping is validated against (`table`), the dataclass built from the validated values (`build`)
and the text of `flightcast run --help-spicepod` (`describe`).
"""

from __future__ import annotations

from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any

from spicepod.checks import Check, Invalid, anything

_KEY = "spicepod_key"  # the metadata entry of a field that is a key


@dataclass(frozen=True)
class Key:
    """How a field is written in the spicepod."""

    check: Check
    help: str
    name: str | None = None  # the key as written, when it differs from the field's name
    required: bool = False
    section: str | None = None  # written inside this nested mapping (`params`); its help is in the class SECTIONS
    spec: type | None = None  # a mapping read into this dataclass
    many: bool = False  # a list of such mappings
    apart: bool = False  # read by the loader, which names it in messages (runtime, datasets, models)


def key(check: Check, default: Any = None, help: str = "", *, name: str | None = None, required: bool = False,
        section: str | None = None, factory: Any = None) -> Any:
    """A dataclass field that is a spicepod key; `factory` makes a mutable default (shown as none)."""
    metadata = {_KEY: Key(check, help, name, required, section)}
    if required:
        return field(metadata=metadata)
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def nested(spec: type, help: str, *, many: bool = False, apart: bool = False, section: str | None = None) -> Any:
    """A dataclass field written as a mapping of its own (a list of them with `many`)."""
    metadata = {_KEY: Key(anything, help, section=section, spec=spec, many=many, apart=apart)}
    if apart:
        return field(metadata=metadata)
    return field(default_factory=spec, metadata=metadata)


@dataclass(frozen=True)
class Entry:
    """One row of a key table: a key as the YAML mapping it sits in sees it."""

    check: Check
    default: Any
    required: bool
    help: str
    spec: type | None = None  # a nested mapping: its dataclass
    section: tuple[type, str] | None = None  # a flattened mapping: (dataclass, section)
    many: bool = False


def _key(f: Field[Any]) -> Key | None:
    return f.metadata.get(_KEY)


def _default(f: Field[Any]) -> Any:
    """The default a user sees: none for required keys and built defaults (mappings, lists)."""
    return None if f.default is MISSING else f.default


def table(cls: type, section: str | None = None) -> dict[str, Entry]:
    """The keys of the mapping `cls` (or its flattened `section`) is written as, in declaration order."""
    out: dict[str, Entry] = {}
    for f in fields(cls):
        k = _key(f)
        if k is None:
            continue
        if k.section != section:
            if section is None and k.section not in out:  # the flattened mapping sits at its first key
                out[k.section] = Entry(_mapping(table(cls, k.section)), None, False, cls.SECTIONS[k.section],
                                       section=(cls, k.section))
            continue
        if k.spec is not None:
            check = anything if k.apart else _mapping(table(k.spec))
            out[k.name or f.name] = Entry(check, None, False, k.help, spec=k.spec, many=k.many)
        else:
            out[k.name or f.name] = Entry(k.check, _default(f), k.required, k.help)
    return out


def _mapping(keys: dict[str, Entry]) -> Check:
    def check(value: Any, key: str) -> dict[str, Any]:
        return validate(value, keys, key)

    return check


def validate(value: Any, keys: dict[str, Entry], where: str) -> dict[str, Any]:
    """Check a mapping against declared keys; return it with defaults filled in."""
    if not isinstance(value, dict):
        # A string is not echoed: a misplaced value may be a key (`auth: <key>` instead of `auth: {api_key: ...}`).
        shown = "a string" if isinstance(value, str) else repr(value)
        raise Invalid(f"'{where}' must be a mapping, got {shown}")
    for name in value:
        if name not in keys:
            raise Invalid(f"unknown key '{name}'; expected one of {', '.join(sorted(keys))}")
    out: dict[str, Any] = {}
    for name, entry in keys.items():
        if name in value and value[name] is not None:
            out[name] = entry.check(value[name], name)
        elif entry.required:
            raise Invalid(f"missing required key '{name}'")
        else:
            out[name] = entry.default
    return out


def build(cls: type, values: dict[str, Any], **derived: Any) -> Any:
    """The dataclass from validated values; absent keys take the field's default, `derived` fills the rest."""
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        k = _key(f)
        if k is None or k.apart or f.name in derived:
            continue
        scope = (values.get(k.section) or {}) if k.section else values
        value = scope.get(k.name or f.name)
        if value is not None:
            kwargs[f.name] = build(k.spec, value) if k.spec is not None else value
    return cls(**kwargs, **derived)


def describe(cls: type, title: str) -> list[str]:
    """The help lines of the mapping `cls` is written as, then of every mapping nested in it."""
    lines: list[str] = []

    def section(title: str, keys: dict[str, Entry]) -> None:
        lines.append(f"{title}:")
        for name, entry in keys.items():
            default = "" if entry.default is None else f" (default {entry.default})"
            required = " (required)" if entry.required else ""
            lines.append(f"  {name}{required}{default}: {entry.help}")
        for name, entry in keys.items():
            inner = f"{name}[]" if entry.many else name
            inner = inner if title == "top level" else f"{title}.{inner}"
            if entry.spec is not None:
                section(inner, table(entry.spec))
            elif entry.section is not None:
                section(inner, table(*entry.section))

    section(title, table(cls))
    return lines
