"""Configuration as YAML files: `--config FILE` and `--print-config`, layered preset → file → `--set`.

A file holds the sections of `Config` with any subset of their fields:

    train:
      lr: 0.002
      step_epochs: [8, 11]
    data:
      data_dir: null

`config_yaml(cfg)` writes the whole resolved configuration in that same form (what
`--print-config` prints and every run logs as `config/config.yaml`), and `load_config_file`
reads it back to the identical `Config`. Values are checked against each field's declared type,
strictly (no "3" for an int, no 1 for a bool; an int is accepted for a float): a file is read by
people, and a silently coerced value is a wrong experiment. Every error names the file, the line
and the key.
"""
from __future__ import annotations

import argparse
import types
import typing
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import Config, apply_overrides

HEADER = "# maskaware configuration, every field resolved; jobs take it back with --config FILE\n"
_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


class _Dumper(yaml.SafeDumper):
    """Sections and fields one per line; a list (a tuple field) on its own line, `[3, 4, 5]`."""


_Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


def config_yaml(cfg: Config) -> str:
    """The whole configuration as YAML, sections and fields in declaration order."""
    plain = {s: {k: list(v) if isinstance(v, tuple) else v for k, v in sec.items()}
             for s, sec in cfg.to_dict().items()}
    return HEADER + yaml.dump(plain, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)


def add_config_arguments(parser: argparse.ArgumentParser, base: str) -> None:
    """`--config FILE` and `--print-config`, the same on every job that takes a configuration."""
    parser.add_argument("--config", metavar="FILE", default=None,
                        help=f"YAML file of config values, applied over {base} and under --set "
                             "(the form --print-config prints; a run logs it as config/config.yaml) "
                             "(default: none)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the fully resolved configuration as YAML and exit (default: off)")


def resolve_config(base: Config, config_file: str | Path | None, overrides: list[str]) -> Config:
    """`base` (a preset, or a checkpoint's config), then the file's values, then the `--set`s."""
    cfg = load_config_file(config_file, base) if config_file else base
    return apply_overrides(cfg, list(overrides))


def load_config_file(path: str | Path, base: Config) -> Config:
    """`base` with the values of the YAML file at `path`; a one-line `ValueError` naming the file,
    the line and the key for anything that is not a known field of the right type."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"--config {path}: no such file")
    try:
        loader = yaml.SafeLoader(path.read_text())
    except UnicodeDecodeError as e:
        raise ValueError(f"--config {path}: not a text file ({e.reason} at byte {e.start})") from None
    try:
        root = loader.get_single_node()
        if root is None:  # an empty file changes nothing
            return base
        sections = [f.name for f in fields(Config)]
        cfg = base
        for key, key_node, node in _mapping(root, path, "the top level"):
            if key not in sections:
                raise _error(path, key_node, key, f"unknown section; valid: {', '.join(sections)}")
            cfg = replace(cfg, **{key: _section(loader, getattr(cfg, key), node, path, key)})
        return cfg
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ValueError(f"{where}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
    finally:
        loader.dispose()


def _section(loader: yaml.SafeLoader, current: Any, node: yaml.Node, path: Path, name: str) -> Any:
    hints = typing.get_type_hints(type(current))
    values = {}
    for key, key_node, value_node in _mapping(node, path, f"section {name!r}", f"{name}."):
        dotted = f"{name}.{key}"
        if key not in hints:
            raise _error(path, key_node, dotted,
                         f"unknown key; valid: {', '.join(f.name for f in fields(current))}")
        value = loader.construct_object(value_node, deep=True)
        try:
            values[key] = _typed(hints[key], value)
        except TypeError as e:
            raise _error(path, value_node, dotted, f"{e}, got {value!r}") from None
    return replace(current, **values)


def _mapping(node: yaml.Node, path: Path, what: str, prefix: str = "") -> list[tuple[str, yaml.Node, yaml.Node]]:
    """(key, key node, value node) triples of a mapping node; duplicate keys are an error, not a silent win."""
    if not isinstance(node, yaml.MappingNode):
        raise ValueError(f"{path}:{node.start_mark.line + 1}: {what} must be a mapping of names to values")
    pairs, seen = [], set()
    for key_node, value_node in node.value:
        key = str(key_node.value)
        if key in seen:
            raise _error(path, key_node, prefix + key, "given twice")
        seen.add(key)
        pairs.append((key, key_node, value_node))
    return pairs


def _error(path: Path, node: yaml.Node, key: str, problem: str) -> ValueError:
    return ValueError(f"{path}:{node.start_mark.line + 1}: {key}: {problem}")


def _typed(tp: Any, value: Any) -> Any:
    """`value` as the field type `tp` wants it, or a TypeError saying what was expected."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _typed(inner, value)
    if origin is tuple:
        if not isinstance(value, list):
            raise TypeError(f"expected a list, each item {_TYPE_NAMES[args[0]]}")
        return tuple(_typed(args[0], v) for v in value)
    ok = isinstance(value, tp) and not (tp is not bool and isinstance(value, bool))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise TypeError(f"expected {_TYPE_NAMES[tp]}")
    return value
