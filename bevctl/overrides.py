"""`--set key.path=value` applied to a phase's data before validation, guided by the schema's types.

- The value is YAML (`--set train.epochs=3`, `--set model.heads=[object]`, `--set load_from=null`), loaded with
  the limits of `bevctl.yamlsafe`. Where the field is text, the value is taken as typed unless it is quoted, a
  list or mapping, or null (`--set run.name=007`, `--set data.version=1.0` stay text, not 7 and 1.0).
- A section (a nested settings group such as `train`) is never replaced by a mapping: the mapping is MERGED into
  it, key by key, exactly as the same keys given one by one would be. Replacing would silently reset every value
  of the section the user did not repeat to its default (`--set train={}` would undo the phase's epochs, batch
  size and precision), so `--set train={}` is refused as setting nothing, and `--set train=3` as not a section.
- A mapping field (`pretrained`, `container.env`) takes the rest of the dotted key as one key:
  `--set pretrained.encoders.camera.backbone=swint.pth`.
- Each applied override remembers the key path it set, so a validation error inside it is blamed on the `--set`
  argument rather than on the phase file's line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union, get_args, get_origin

from pydantic import BaseModel

from bevctl.errors import UsageError

EXAMPLE = "write e.g. --set train.epochs=3"
NULLS = ("null", "Null", "NULL", "~")


@dataclass(frozen=True)
class Override:
    item: str  # as given on the command line
    path: tuple  # the key path it set

    def shown(self, width: int = 80) -> str:
        return _clip(repr(self.item)[1:-1], width)


def _clip(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _unwrap(annotation: Any) -> Any:
    """Optional[X] -> X (the other members of a Union are kept)."""
    if get_origin(annotation) is Union:
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _optional(annotation: Any) -> bool:
    return get_origin(annotation) is Union and type(None) in get_args(annotation)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _merge(into: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def apply_override(data: dict, item: str, model: type[BaseModel]) -> Override:
    """Apply one `key.path=value` to `data` (a phase as plain data) following `model`'s fields."""
    from bevctl.yamlsafe import load_value

    if "=" not in item:
        raise UsageError(f"--set {_clip(item)!r} is not key=value", fix=EXAMPLE)
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not key.strip() or any(not p for p in parts):
        raise UsageError(f"--set {_clip(item)!r} has an empty key part", fix=EXAMPLE)
    node: Any = data
    current: Optional[type[BaseModel]] = model
    annotation: Any = None
    path: list = []
    part: Any = None
    for i, name in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not name.isdigit() or int(name) >= len(node):
                dotted = _clip(".".join(parts[:i]))
                raise UsageError(f"--set {_clip(item)!r}: {dotted} is a list of {len(node)} and {_clip(name, 20)!r} is not an index "
                                 "in it", fix=f"give the whole list, e.g. --set {dotted}=[...]")
            part, annotation = int(name), current
        else:
            field = current.model_fields.get(name) if current is not None else None
            part, annotation = name, (field.annotation if field is not None else None)
        path.append(part)
        inner = _unwrap(annotation)
        if get_origin(inner) is dict and not last:
            # a mapping field: the rest of the dotted key is one key of it (module prefixes contain dots)
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node, part, annotation = child, ".".join(parts[i + 1:]), get_args(inner)[1]
            path.append(part)
            break
        if last:
            break
        child = node[part] if isinstance(node, list) else node.get(part)
        if child is None and get_origin(inner) is list:
            dotted = _clip(".".join(parts[: i + 1]))
            raise UsageError(f"--set {_clip(item)!r}: {dotted} is a list the phase does not spell out", fix=f"give the whole list, e.g. "
                             f"--set {dotted}=[...]")
        if child is None:
            child = node[part] = {}
        if not isinstance(child, (dict, list)):
            dotted = _clip(".".join(parts[: i + 1]))
            raise UsageError(f"--set {_clip(item)!r}: {dotted} is a value, not a section", fix=f"set {dotted} itself")
        node = child
        if isinstance(child, list):
            item_type = get_args(inner)[0] if get_args(inner) else None
            current = item_type if _is_model(item_type) else None
        else:
            current = inner if _is_model(inner) else None
    inner = _unwrap(annotation)
    text = raw.strip()
    if inner is str and text and text not in NULLS and text[0] not in "'\"[{":
        value: Any = text  # a text field takes the text as typed: `run.name=007` stays "007", `a b` stays "a b"
    else:
        value = load_value(raw, f"--set {key}") if text else None
    override = Override(item, tuple(path))
    if _is_model(inner):
        dotted = _clip(".".join(parts))
        if isinstance(value, dict):
            if not value:
                raise UsageError(f"--set {_clip(item)!r} sets nothing: {dotted} is a section and a mapping is merged into it, "
                                 "never replaces it", fix=f"set its keys, e.g. --set {dotted}.KEY=VALUE")
            existing = node[part] if isinstance(node, list) else node.get(part)
            if isinstance(existing, dict):
                _merge(existing, value)
                return override
        elif value is not None or not _optional(annotation):
            raise UsageError(f"--set {_clip(item)!r}: {dotted} is a section, not a value",
                             fix=f"set one of its keys, e.g. --set {dotted}.KEY=VALUE")
    node[part] = value
    return override


def blame(overrides: list[Override], loc: tuple, missing: bool = False) -> Optional[Override]:
    """The override (latest first) whose key path holds the error location `loc`, or lies inside it; for a
    `missing` field, also one that set a sibling (it created the section: `--set trainer.repo=X` lacks config)."""
    loc = tuple(loc)
    for override in reversed(overrides):
        n = len(override.path)
        if loc[:n] == override.path or (loc and override.path[: len(loc)] == loc):
            return override
        if missing and len(loc) > 1 and override.path[: len(loc) - 1] == loc[:-1]:
            return override
    return None
