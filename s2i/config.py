"""Typed stage configs: dataclass defaults, then an optional YAML file, then command-line flags.

Every stage script describes its settings as one dataclass. :func:`parse_config` turns it into an
argparse parser (one ``--name`` flag per field, ``--block.name`` for fields of a nested dataclass),
merges ``--config FILE`` (YAML) over the defaults and the explicit flags over both. Unknown keys and
values of the wrong type are errors that name the key and where it came from.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A setting is unknown, has the wrong type, or contradicts another."""


def require(checks: list[tuple[bool, str]], where: str | None = None) -> None:
    """Raises ConfigError with the message of the first failed ``(condition, message)`` pair."""
    for ok, msg in checks:
        if not ok:
            raise ConfigError(f"{where}: {msg}" if where else msg)


def option(default: Any, help: str, *, flags: tuple[str, ...] = (), choices: tuple | None = None) -> Any:
    """A dataclass field with its help text, extra flag spellings and allowed values."""
    meta = {"help": help, "flags": flags, "choices": choices}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _field_type(cls: type, field: dataclasses.Field) -> tuple[Any, bool]:
    """Returns (base type, optional) for a field annotation such as ``float | None``."""
    hint = typing.get_type_hints(cls)[field.name]
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"{cls.__name__}.{field.name}: only `T | None` unions are supported")
        return args[0], True
    return hint, False


def _coerce(value: Any, base: Any, optional: bool, key: str, where: str) -> Any:
    """Checks a YAML/CLI value against the field's type; ints widen to floats, nothing else converts."""
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: '{key}' may not be null")
    if base is bool:
        if isinstance(value, bool):
            return value
    elif base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif base is str:
        if isinstance(value, str):
            return value
    elif dataclasses.is_dataclass(base):
        if isinstance(value, dict):
            return value
    elif typing.get_origin(base) is list:
        (item,) = typing.get_args(base)
        if isinstance(value, list) and all(_is_a(v, item) for v in value):
            return [float(v) if item is float else v for v in value]
    elif isinstance(value, base):
        return value
    name = str(base) if typing.get_origin(base) is list else getattr(base, "__name__", str(base))
    raise ConfigError(f"{where}: '{key}' must be {name}{' or null' if optional else ''}, got {value!r}")


def _is_a(value: Any, base: type) -> bool:
    """A list item's type check, with the same rules as a single value's (bool is not an int, ints widen)."""
    if isinstance(value, bool):
        return base is bool
    return isinstance(value, (int, float)) if base is float else isinstance(value, base)


def _parse_cli_value(text: str, base: Any, optional: bool, flag: str) -> Any:
    if optional and text.lower() in ("none", "null"):
        return None
    try:
        return base(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{flag} expects {base.__name__}, got {text!r}") from None


def _flat_fields(cls: type, prefix: str = "") -> list[tuple[str, dataclasses.Field, type]]:
    """(dotted name, field, owning class) for every leaf field, nested dataclasses expanded."""
    out = []
    for f in dataclasses.fields(cls):
        base, _ = _field_type(cls, f)
        if dataclasses.is_dataclass(base):
            out.extend(_flat_fields(base, f"{prefix}{f.name}."))
        else:
            out.append((prefix + f.name, f, cls))
    return out


def build_parser(cls: type, description: str) -> argparse.ArgumentParser:
    """One flag per leaf field of ``cls``; defaults are suppressed so explicit flags can be told apart."""
    # allow_abbrev=False: a misspelt flag must be an error, not a silent match of a longer one.
    parser = argparse.ArgumentParser(description=description, argument_default=argparse.SUPPRESS,
                                     allow_abbrev=False)
    parser.add_argument("--config", metavar="FILE", help="YAML file of settings, applied over the defaults")
    for name, f, owner in _flat_fields(cls):
        base, optional = _field_type(owner, f)
        flags = [f"--{name}", *f.metadata.get("flags", ())]
        helptext = f.metadata.get("help") or name
        helptext = f"{helptext} (default: {f.default if f.default is not dataclasses.MISSING else '…'})"
        kwargs: dict[str, Any] = {"dest": name, "help": helptext.replace("%", "%%")}
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(base) is list:
            # ``--wav a.wav b.wav`` and ``--wav a.wav --wav b.wav`` both give [a.wav, b.wav].
            (item,) = typing.get_args(base)
            kwargs.update(action="extend", nargs="+", metavar=item.__name__.upper(),
                          type=lambda text, b=item, fl=flags[0]: _parse_cli_value(text, b, False, fl))
        else:
            kwargs["type"] = lambda text, b=base, o=optional, fl=flags[0]: _parse_cli_value(text, b, o, fl)
            kwargs["metavar"] = base.__name__.upper()
        parser.add_argument(*flags, **kwargs)
    return parser


def _apply(cfg: Any, updates: dict[str, Any], where: str, prefix: str = "") -> Any:
    """Returns a copy of dataclass ``cfg`` with nested ``updates`` applied, checking keys and types."""
    known = {f.name: f for f in dataclasses.fields(cfg)}
    changes = {}
    for key, value in updates.items():
        dotted = prefix + key
        if key not in known:
            close = ", ".join(sorted(known))
            raise ConfigError(f"{where}: unknown key '{dotted}' (known keys: {close})")
        base, optional = _field_type(type(cfg), known[key])
        value = _coerce(value, base, optional, dotted, where)
        if dataclasses.is_dataclass(base):
            value = _apply(getattr(cfg, key), value, where, dotted + ".")
        elif known[key].metadata.get("choices") and value not in known[key].metadata["choices"]:
            raise ConfigError(f"{where}: '{dotted}' must be one of {known[key].metadata['choices']}, got {value!r}")
        changes[key] = value
    try:
        return dataclasses.replace(cfg, **changes)
    except ConfigError:
        raise
    except ValueError as exc:  # a nested block's own __post_init__ check (e.g. FrontEndConfig)
        raise ConfigError(f"{where}: {exc}") from None


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return nested


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float, as YAML 1.2 does (PyYAML's 1.1 rules need a dot)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Reads a YAML mapping safely; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.load(path.read_text(), Loader=_YamlLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}".replace("\n", " ")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def parse_config(cls: type, argv: list[str] | None, description: str) -> tuple[Any, argparse.Namespace]:
    """Defaults of ``cls`` ← ``--config`` YAML ← explicit flags. Returns (config, raw namespace)."""
    parser = build_parser(cls, description)
    ns = parser.parse_args(argv)
    cfg = cls()
    try:
        if getattr(ns, "config", None):
            cfg = _apply(cfg, load_yaml(ns.config), str(ns.config))
        explicit = {k: v for k, v in vars(ns).items() if k != "config"}
        cfg = _apply(cfg, _nest(explicit), "command line")
    except ConfigError as exc:
        parser.error(str(exc))
    return cfg, ns


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config (for YAML, JSON and checkpoints)."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: dict[str, Any], where: str = "checkpoint config") -> Any:
    """Rebuilds a config from :func:`to_dict` output, with the same key and type checks as YAML."""
    return _apply(cls(), data, where)


def dump_yaml(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
