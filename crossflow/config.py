"""Typed configs: YAML + dotted ``a.b=1`` overrides <-> validated (nested) dataclasses.

Annotations are resolved with ``typing.get_type_hints`` (``from __future__ import annotations`` is
fine). Every :class:`ConfigError` message starts with the dotted key, e.g. ``train.max_steps: ...``.

A field annotated ``Union[A, B, ...]`` of dataclasses whose first fields are one-value ``Literal`` tags
of one name (``arch: Literal["image"] = "image"``) is a *tagged union*: the tag in the mapping picks
the class (a mapping without it gets the class of the field's default), and each class accepts only
its own keys. ``to_dict`` writes the tag, so a saved config reloads as the same class.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import re
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")
_NoneType = type(None)
_UNIONS = (Union, types.UnionType)


class ConfigError(ValueError):
    """Invalid configuration; the message names the dotted key and what would be valid."""


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with YAML 1.2 booleans: only true/false (any case) are booleans; yes/no/on/off (YAML
    1.1 booleans) are strings, so a Literal or str field gets the word the user typed (``mixed_precision=no``)."""


_BOOL_TAG = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL_TAG]
                                   for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def read_yaml_text(text: str) -> Any:
    """Parse YAML text as configs are read: safe types, YAML 1.2 booleans (only true/false)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(tp: Any) -> str:
    """Human-readable name of a type annotation (``int | None``, ``tuple[float, float]``)."""
    if tp is _NoneType or tp is Any:
        return "None" if tp is _NoneType else "Any"
    origin, args = get_origin(tp), get_args(tp)
    if get_origin(tp) in _UNIONS:
        return " | ".join(_type_name(a) for a in args)
    if origin is Literal:
        return "Literal[" + ", ".join(repr(a) for a in args) + "]"
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else _type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]" if args else origin.__name__
    return getattr(tp, "__name__", str(tp))


_hints = functools.lru_cache(maxsize=None)(get_type_hints)


def _fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


def _tag_of(cls: Any) -> tuple[str, Any] | None:
    """``(field name, value)`` if ``cls`` is a dataclass whose first field is a one-value ``Literal``."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        return None
    fields = _fields(cls)
    if not fields:
        return None
    tp = _hints(cls)[fields[0].name]
    if get_origin(tp) is Literal and len(get_args(tp)) == 1:
        return fields[0].name, get_args(tp)[0]
    return None


def tagged_union(tp: Any) -> tuple[str, dict[Any, type]] | None:
    """``(tag field, {tag value: member class})`` if ``tp`` is a tagged union of dataclasses, else None.

    A tagged union is ``Union[A, B, ...]`` (``None`` may be one more option) of two or more dataclasses
    whose first fields share one name and are each a one-value ``Literal``, e.g. ``arch: Literal["image"]``.
    """
    if get_origin(tp) not in _UNIONS:
        return None
    options = [a for a in get_args(tp) if a is not _NoneType]
    tags = [_tag_of(a) for a in options]
    if len(options) < 2 or any(t is None for t in tags) or len({name for name, _ in tags}) != 1:
        return None
    members = {value: cls for (_, value), cls in zip(tags, options)}
    if len(members) != len(options):
        raise TypeError(f"tagged union {_type_name(tp)}: two members share a tag value")
    return tags[0][0], members


def _tag_list(members: Mapping[Any, type]) -> str:
    return ", ".join(repr(v) for v in members)


def _default_of(f: dataclasses.Field | None) -> Any:
    if f is None:
        return dataclasses.MISSING
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _convert_tagged(tag: str, members: dict[Any, type], value: Any, path: str, f: dataclasses.Field | None) -> Any:
    """Pick the member named by ``value[tag]`` (default: the class of the field's default) and build it."""
    if isinstance(value, tuple(members.values())):
        return value
    if not isinstance(value, Mapping):
        names = " | ".join(c.__name__ for c in members.values())
        raise ConfigError(f"{path or '<root>'}: expected a mapping ({names}), got "
                          f"{type(value).__name__} {_short(value)}")
    if tag in value:
        chosen = value[tag]
        cls = next((c for v, c in members.items() if v == chosen and type(v) is type(chosen)), None)
        if cls is None:
            raise ConfigError(f"{_join(path, tag)}: unknown {_short(chosen)}; valid: {_tag_list(members)}")
    else:
        default = _default_of(f)
        cls = type(default) if type(default) in members.values() else None
        if cls is None:
            raise ConfigError(f"{_join(path, tag)}: missing; valid: {_tag_list(members)}")
    return from_dict(cls, value, path=path)


def _mismatch(path: str, tp: Any, value: Any) -> ConfigError:
    got = f"{type(value).__name__} {_short(value)}"
    return ConfigError(f"{path or '<root>'}: expected {_type_name(tp)}, got {got}")


def _convert(tp: Any, value: Any, path: str, f: dataclasses.Field | None = None) -> Any:
    """Validate ``value`` against annotation ``tp`` and return the converted value.

    ``f`` is the dataclass field being set (if any): its default picks the member of a tagged union
    when the mapping has no tag.
    """
    if tp is Any:
        return value
    origin, args = get_origin(tp), get_args(tp)
    if get_origin(tp) in _UNIONS:
        if value is None and _NoneType in args:
            return None
        if (tagged := tagged_union(tp)) is not None:
            return _convert_tagged(*tagged, value, path, f)
        options = [a for a in args if a is not _NoneType]
        if len(options) == 1 and (get_origin(options[0]) or dataclasses.is_dataclass(options[0])):
            return _convert(options[0], value, path)  # keep the more specific nested message
        for option in options:
            try:
                return _convert(option, value, path)
            except ConfigError:
                continue
        raise _mismatch(path, tp, value)
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise ConfigError(f"{path or '<root>'}: invalid value {_short(value)}; expected one of "
                          + ", ".join(repr(a) for a in args))
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return value if isinstance(value, tp) else from_dict(tp, value, path=path)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _mismatch(path, tp, value)
        if origin is list or tp is list or not args or (len(args) == 2 and args[1] is Ellipsis):
            items = [_convert(args[0] if args else Any, v, f"{path}[{i}]") for i, v in enumerate(value)]
            return items if (origin is list or tp is list) else tuple(items)
        if len(value) != len(args):
            raise ConfigError(f"{path or '<root>'}: expected {_type_name(tp)} with {len(args)} items, "
                              f"got {len(value)} items {_short(value)}")
        return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise _mismatch(path, tp, value)
        key_tp, val_tp = args if args else (Any, Any)
        return {_convert(key_tp, k, f"{path}.<key>"): _convert(val_tp, v, _join(path, k))
                for k, v in value.items()}
    if tp is float:
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:
                return float(value)  # strings too: YAML 1.1 reads "1e-4" as a string
            except ValueError:
                pass
    elif isinstance(tp, type):  # int, bool, str and other plain classes; bool is not an int here
        if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
            return value
        if tp is bool and isinstance(value, str) and value.lower() in ("yes", "no", "on", "off"):
            raise ConfigError(f"{path or '<root>'}: expected bool (true or false), got str {_short(value)}")
    else:
        raise TypeError(f"{path}: unsupported annotation {tp!r}")
    raise _mismatch(path, tp, value)


def from_dict(cls: type[T], data: Mapping, *, path: str = "") -> T:
    """Build dataclass ``cls`` from a nested mapping, validating keys and types.

    Args:
        cls: Dataclass type (may contain nested dataclasses).
        data: Plain nested mapping, e.g. loaded from YAML.
        path: Dotted prefix of this section, used in error messages.

    Returns:
        An instance of ``cls``.

    Raises:
        ConfigError: On unknown/missing keys, wrong types or a failing ``__post_init__``.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or '<root>'}: expected a mapping (section {cls.__name__}), got "
                          f"{type(data).__name__} {_short(data)}")
    hints, fields = _hints(cls), _fields(cls)
    names = [f.name for f in fields]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            tag = _tag_of(cls)
            which = f" for {tag[0]}={tag[1]!r}" if tag else ""
            raise ConfigError(f"{_join(path, key)}: unknown key {str(key)!r}{hint}; "
                              f"valid keys{which}: {', '.join(names) or '(none)'}")
    kwargs: dict[str, Any] = {}
    for f in fields:
        key_path = _join(path, f.name)
        if f.name in data:
            kwargs[f.name] = _convert(hints[f.name], data[f.name], key_path, f)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key_path}: missing required key (expected {_type_name(hints[f.name])})")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:  # cross-field checks in __post_init__
        raise ConfigError(f"{path or cls.__name__}: {err}") from err


def to_dict(obj: Any) -> Any:
    """Convert a dataclass/containers to plain YAML/JSON data (tuples -> lists, ``init`` fields only)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in _fields(type(obj))}
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def load_yaml(path: str | Path) -> dict:
    """Read a YAML file whose top level is a mapping (an empty file gives ``{}``).

    ``path`` that is not a file may name a shipped config (``t2i/toy``; :func:`crossflow.config_names.find_config`).

    Raises:
        ConfigError: If the file is missing, unreadable, not valid YAML or not a mapping.
    """
    p = Path(path)
    if not p.is_file():
        from crossflow.config_names import find_config  # imports this module

        p = find_config(p)
    try:
        data = read_yaml_text(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{p}: cannot read config file: {err}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: invalid YAML: {err}") from err
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping of keys, got {type(data).__name__}")
    return data or {}


def parse_overrides(items: Iterable[str]) -> list[tuple[str, Any]]:
    """Parse ``KEY=VALUE`` strings; values are read as YAML (:func:`read_yaml_text`; ``a=`` gives ``""``).

    Raises:
        ConfigError: Naming the offending item if it has no ``=``, an empty key segment or bad YAML.
    """
    out: list[tuple[str, Any]] = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not all(key.split(".")):
            raise ConfigError(f"override {item!r}: expected KEY=VALUE with a dotted key, "
                              "e.g. train.max_steps=1000")
        try:
            value = read_yaml_text(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {err}") from err
        out.append((key, value))
    return out


def apply_overrides(data: Mapping, overrides: Iterable[tuple[str, Any]]) -> dict:
    """Return a deep copy of ``data`` with dotted-key overrides applied (a dict value replaces a section).

    Missing (or ``None``) intermediate sections are created as dicts.

    Raises:
        ConfigError: If an intermediate key holds a non-mapping value.
    """
    result = copy.deepcopy(dict(data))
    for key, value in overrides:
        parts = key.split(".")
        node = result
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"{key}: cannot set a sub-key, {'.'.join(parts[: i + 1])} holds "
                                  f"{type(child).__name__} {_short(child)}, not a section")
            node = child
        node[parts[-1]] = copy.deepcopy(value)
    return result


def _deep_merge(base: dict, update: Mapping) -> dict:
    out = copy.deepcopy(base)
    for k, v in update.items():
        both = isinstance(v, Mapping) and isinstance(out.get(k), dict)
        out[k] = _deep_merge(out[k], v) if both else copy.deepcopy(v)
    return out


def load_config(cls: type[T], path: str | Path | None = None,
                overrides: Iterable[str | tuple[str, Any]] = (), *, base: dict | None = None) -> T:
    """Load a typed config: ``base`` dict, deep-merged with the YAML file, then overrides.

    Args:
        cls: Root dataclass type.
        path: Optional YAML file.
        overrides: ``"a.b=1"`` strings and/or already parsed ``(key, value)`` pairs.
        base: Optional defaults dict that the YAML file is merged onto.

    Returns:
        A validated instance of ``cls``.

    Raises:
        ConfigError: For any file, override or validation problem.
    """
    data = copy.deepcopy(base) if base else {}
    if path is not None:
        data = _deep_merge(data, load_yaml(path))
    pairs = [parse_overrides([o])[0] if isinstance(o, str) else tuple(o) for o in overrides]
    return from_dict(cls, apply_overrides(data, pairs))


def save_yaml(obj: Any, path: str | Path) -> None:
    """Write a dataclass or dict to ``path`` as YAML (parent directories are created)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(to_dict(obj), sort_keys=False, default_flow_style=False), encoding="utf-8")


def replace_path(obj: T, dotted: str, value: Any) -> T:
    """Return a validated copy of dataclass ``obj`` with the field at ``dotted`` set to ``value``."""
    return from_dict(type(obj), apply_overrides(to_dict(obj), [(dotted, to_dict(value))]))


def describe(cls: type, prefix: str = "", *, _when: tuple[str, ...] = (),
             _skip_tag: bool = False) -> list[tuple[str, str, str, str]]:
    """List ``(dotted key, type, default repr, help)`` for every leaf field, recursively.

    Optional nested sections get a row of their own (default ``None``) followed by their fields.
    Required fields show ``<required>`` as default; help comes from ``field(metadata={"help": ...})``.
    A tagged union gets one row for its tag (type: the choices) and then every member's own fields,
    with the member named after the key: ``model.source_encoder.width [arch=tokens]``.
    """
    rows: list[tuple[str, str, str, str]] = []

    def label(key: str) -> str:
        return f"{key} [{', '.join(_when)}]" if _when else key

    for i, f in enumerate(_fields(cls)):
        if i == 0 and _skip_tag:
            continue
        key, tp = _join(prefix, f.name), _hints(cls)[f.name]
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(to_dict(f.default_factory()))
        else:
            default = "<required>"
        help_ = str(f.metadata.get("help", ""))
        if (tagged := tagged_union(tp)) is not None:
            tag, members = tagged
            value = _default_of(f)
            tag_default = repr(getattr(value, tag)) if type(value) in members.values() else default
            optional = " | None" if _NoneType in get_args(tp) else ""
            notes = {v: _fields(c)[0].metadata.get("help") for v, c in members.items()}
            choices = "; ".join(f"{v}: {note}" if note else str(v) for v, note in notes.items())
            rows.append((label(_join(key, tag)), f"Literal[{_tag_list(members)}]{optional}", tag_default,
                         f"{help_}; {choices}" if help_ else choices))
            for v, member in members.items():
                rows.extend(describe(member, key, _when=(*_when, f"{tag}={v}"), _skip_tag=True))
            continue
        options = [a for a in get_args(tp) if a is not _NoneType] if get_origin(tp) in _UNIONS else [tp]
        section = options[0] if len(options) == 1 and dataclasses.is_dataclass(options[0]) else None
        if section is not tp:  # leaf, or Optional section whose on/off switch gets a row too
            rows.append((label(key), _type_name(tp), default, help_))
        if section is not None:
            rows.extend(describe(section, key, _when=_when))
    return rows
