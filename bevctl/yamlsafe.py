"""YAML from users, loaded with limits: every problem is one `UsageError` line naming the file, the line and a fix.

PyYAML's safe loader runs no code, but it accepts documents that cost minutes and gigabytes downstream (nested
aliases, a "billion laughs", expand exponentially as soon as anything walks the data) and it lets a repeated key
silently replace the first one. Here a document is composed into nodes first, then measured before anything
is built from it:

- at most `MAX_BYTES` of text, read only from a regular file (a FIFO or device is refused, never opened for reading
  in a way that could block), decoded as UTF-8 (a bad byte is reported with its offset and line);
- at most `MAX_VALUES` values after alias expansion, nesting at most `MAX_DEPTH` deep, no alias inside its own
  anchor (all counted on the node graph, where an alias is a shared node, so the count itself is linear);
- no mapping key twice (both lines named) and only plain scalar keys.

`parse` also returns the line of every key, by its key path, so validation errors can point at the line.
Import this module lazily (it imports yaml).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from bevctl.errors import UsageError

MAX_BYTES = 256 * 1024  # phase files are a few KB; composing this much takes well under a second
MAX_VALUES = 10_000  # after alias expansion; a phase has about a hundred
MAX_DEPTH = 32  # a phase nests four levels

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_UTF8_FIX = "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 FILE > NEW)"


def read_text(path: Path | str, what: str = "phase file") -> str:
    """The text of a regular file of at most MAX_BYTES, decoded as UTF-8 (a leading BOM is dropped)."""
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO without a writer must not hang; it is refused below by its type
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise UsageError(f"{what} {path} not found", fix="give an existing YAML path") from None
    except IsADirectoryError:
        raise UsageError(f"{what} {path} is a folder", fix="give the path of a YAML file") from None
    except PermissionError:
        raise UsageError(f"{what} {path} is not readable (permission denied)",
                         fix=f"make it readable (chmod u+r {path}) or copy it somewhere readable") from None
    except OSError as exc:
        raise UsageError(f"cannot open {what} {path}: {exc.strerror}", fix="give a readable YAML file") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{what} {path} is not a regular file", fix="give the path of a YAML file")
        if st.st_size > MAX_BYTES:
            raise UsageError(f"{what} {path} is {st.st_size} bytes (at most {MAX_BYTES})",
                             fix="a phase file holds a few KB of settings: check that this is the right file")
        try:
            raw = fh.read(MAX_BYTES + 1)
        except OSError as exc:
            raise UsageError(f"cannot read {what} {path}: {exc.strerror}", fix="give a readable YAML file") from None
    if len(raw) > MAX_BYTES:  # grew while we read it
        raise UsageError(f"{what} {path} is over {MAX_BYTES} bytes", fix="check that this is the right file")
    return decode(raw, str(path))


def decode(raw: bytes, source: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise UsageError(f"{_at(source, line)}: byte 0x{raw[exc.start]:02x} at offset {exc.start} is not UTF-8",
                         fix=_UTF8_FIX) from None
    return text[1:] if text.startswith("\ufeff") else text


def parse(text: str, source: str, numbered: bool = True) -> tuple[Any, dict[tuple, int]]:
    """The data of one YAML document and the line of every mapping key and list item, by key path. Messages
    name `source` and the line (`numbered`), e.g. `phase.yaml:3: duplicate key 'train' (first at line 1)`."""
    if not numbered:
        source = _Unnumbered(source)
    node = _compose(text, source)
    if node is None:
        return None, {}
    _measure(node, source)
    lines = _key_lines(node, source)
    loader = _Loader(text)
    try:
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, text, source) from None
    except RecursionError:
        raise UsageError(f"{source}: nested too deeply", fix=f"a phase needs at most {MAX_DEPTH} levels") from None
    except ValueError as exc:  # a date such as 2001-13-45; an integer of more than 4300 digits
        long = [n.start_mark.line + 1 for n in _scalars(node) if len(n.value) > 4000]
        if long:
            raise UsageError(f"{_at(source, long[0])}: a number with thousands of digits",
                             fix="write a number of sensible size") from None
        raise UsageError(f"{source}: a value cannot be read: {' '.join(str(exc).split())[:120]}",
                         fix="quote it to make it text, or correct it") from None
    finally:
        loader.dispose()
    return data, lines


def load_file(path: Path | str, what: str = "phase file") -> tuple[Any, dict[tuple, int]]:
    return parse(read_text(path, what), str(path))


def load_value(text: str, source: str) -> Any:
    """One value given on the command line (e.g. `--set k=VALUE`), with the same limits as a file."""
    return parse(text, source, numbered=False)[0]


# ---------------------------------------------------------------------------------------------- internals


class _Unnumbered(str):
    """A source whose messages carry no line number (a one-line command-line value)."""


def _at(source: str, line: int) -> str:
    return source if isinstance(source, _Unnumbered) else f"{source}:{line}"


def _compose(text: str, source: str) -> Any:
    loader = _Loader(text)
    try:
        return loader.get_single_node()
    except yaml.YAMLError as exc:
        raise _syntax_error(exc, text, source) from None
    except RecursionError:
        raise UsageError(f"{source}: nested too deeply", fix=f"a phase needs at most {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()


def _syntax_error(exc: yaml.YAMLError, text: str, source: str) -> UsageError:
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        return UsageError(f"{_at(source, line)}: character {chr(exc.character)!r} (offset {exc.position}) is not "
                          "allowed in YAML", fix="remove the control character")
    if isinstance(exc, yaml.constructor.ConstructorError) and "constructor for the tag" in str(exc):
        mark, tag = exc.problem_mark, exc.problem.rsplit(" ", 1)[-1]
        return UsageError(f"{_at(source, mark.line + 1)}: YAML tag {tag} is "
                          "not allowed", fix="write plain values; tags such as !!python/... are never run")
    mark = getattr(exc, "problem_mark", None)
    where = _at(source, mark.line + 1) if mark is not None else source
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["unknown problem"])[0]
    problem = " ".join(problem.split())
    return UsageError(f"{where}: not valid YAML: {problem}", fix="fix the YAML syntax at that line")


def _children(node: Any) -> list:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _scalars(root: Any) -> list:
    seen, out, stack = set(), [], [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            out.append(node)
        stack.extend(_children(node))
    return out


def _measure(root: Any, source: str) -> None:
    """Refuse recursive aliases, nesting deeper than MAX_DEPTH and more than MAX_VALUES values once aliases are
    expanded; counted on the node graph with memoised sizes, so a billion laughs costs microseconds."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            kids = _children(node)
            size[key] = min(MAX_VALUES + 1, 1 + sum(size[id(k)] for k in kids))
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            if depth[key] > MAX_DEPTH:
                raise UsageError(f"{_at(source, node.start_mark.line + 1)}: nested more than {MAX_DEPTH} levels deep",
                                 fix="flatten the structure; a phase nests a few levels")
            if size[key] > MAX_VALUES:
                raise UsageError(
                    f"{_at(source, node.start_mark.line + 1)}: YAML aliases here expand to more than {MAX_VALUES} values",
                    fix="write the values out instead of nesting aliases; a phase holds a few hundred at most")
            continue
        if key in size:
            continue
        if key in on_path:
            raise UsageError(f"{_at(source, node.start_mark.line + 1)}: a YAML alias refers to its own anchor",
                             fix="remove the recursive alias")
        on_path.add(key)
        stack.append((node, True))
        for kid in _children(node):
            kid_key = id(kid)
            if kid_key in on_path:
                raise UsageError(f"{_at(source, kid.start_mark.line + 1)}: a YAML alias refers to its own anchor",
                                 fix="remove the recursive alias")
            if kid_key not in size:
                stack.append((kid, False))


def _key_lines(root: Any, source: str) -> dict[tuple, int]:
    """Line of every key path; refuses repeated and non-scalar keys. Walks the expanded tree (bounded above)."""
    lines: dict[tuple, int] = {}
    stack: list[tuple[Any, tuple]] = [(root, ())]
    while stack:
        node, prefix = stack.pop()
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], int] = {}
            for key_node, value_node in node.value:
                line = key_node.start_mark.line + 1
                if key_node.tag == _MERGE_TAG:
                    continue
                if not isinstance(key_node, yaml.ScalarNode):
                    raise UsageError(f"{_at(source, line)}: a mapping key must be a plain name, not a "
                                     f"{'list' if isinstance(key_node, yaml.SequenceNode) else 'mapping'}",
                                     fix="write keys as plain words (e.g. epochs: 3)")
                ident = (key_node.tag, key_node.value)
                if ident in seen:
                    dotted = ".".join(str(p) for p in prefix + (key_node.value,))
                    raise UsageError(f"{_at(source, line)}: duplicate key {dotted!r} (first at line {seen[ident]}); "
                                     "YAML would silently keep only the second",
                                     fix="merge the two into one entry")
                seen[ident] = line
                path = prefix + (key_node.value,)
                lines.setdefault(path, line)
                stack.append((value_node, path))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines.setdefault(prefix + (i,), item.start_mark.line + 1)
                stack.append((item, prefix + (i,)))
    return lines
