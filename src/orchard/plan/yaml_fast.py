"""YAML for plan files: libyaml's event stream turned into Python values in one pass, with PyYAML's safe loader
as the reference for everything outside the plain data plans are made of.

For mappings, lists and untagged scalars the result equals `yaml.load(text, Loader=CSafeLoader)` (YAML 1.1
implicit types resolved by PyYAML's own resolver table and constructors). Anchors, aliases, explicit tags, merge
keys, container keys, deep nesting, several documents and every error are handed to the safe loader, so those
values and error messages (with their line numbers) stay PyYAML's own.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.events import (
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

try:
    import yaml.cyaml

    _CParser: Any = getattr(yaml.cyaml, "CParser", None)
except ImportError:  # PyYAML built without libyaml: only the safe loader is available
    _CParser = None

SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_DEPTH = 64  # deeper documents go to the safe loader, which reports them as it always did
_TAG = "tag:yaml.org,2002:"
_NULL, _BOOL = _TAG + "null", _TAG + "bool"
_CONSTRUCTED = frozenset({_TAG + "int", _TAG + "float", _TAG + "timestamp"})
_NO_KEY: Any = object()  # marks an open container with no mapping key pending


def _resolver_table() -> dict[str, tuple[tuple[str, re.Pattern[str]], ...]]:
    """First character of a plain scalar ('' if empty) → the (tag, regexp) pairs Resolver.resolve tries, in order."""
    table: dict[Any, list[tuple[str, re.Pattern[str]]]] = Resolver.yaml_implicit_resolvers
    wildcard = tuple(table.get(None, ()))
    return {first: tuple(pairs) + wildcard for first, pairs in table.items() if first is not None}


_RESOLVERS = _resolver_table()
_ANY_START: tuple[tuple[str, re.Pattern[str]], ...] = tuple(Resolver.yaml_implicit_resolvers.get(None, ()))


class _Unusual(Exception):
    """The document uses something this reader leaves to the safe loader."""


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a large tree of new objects is built.

    Every few hundred new containers CPython's collector runs, and its older generations re-scan the whole tree
    built so far: PyYAML's safe loader spent two thirds of its time on a 10,000-task plan there (the fallback
    below still builds such a tree of nodes). Parsed data holds no garbage cycles for the collector to free.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load(text: str) -> Any:
    """The single YAML document in `text`, as `yaml.load(text, Loader=CSafeLoader)` gives it (or raises)."""
    with gc_paused():
        if _CParser is not None:
            try:
                return _read_events(text)
            except Exception:  # noqa: S110 - _Unusual or an error: the safe loader gives the reference result
                pass
        return yaml.load(text, Loader=SAFE_LOADER)  # noqa: S506 - a safe loader (CSafeLoader or SafeLoader)


def _read_events(text: str) -> Any:
    """The document built from libyaml's events; _Unusual (or the parser's error) when the safe loader must."""
    parser = _CParser(text)
    try:
        get: Callable[[], Any] = parser.get_event
        if type(get()) is not StreamStartEvent:
            raise _Unusual
        start = get()
        if type(start) is StreamEndEvent:
            return None  # an empty stream, which yaml.load reads as null
        if type(start) is not DocumentStartEvent:
            raise _Unusual
        value = _document(get, SafeConstructor())
        if type(get()) is not DocumentEndEvent or type(get()) is not StreamEndEvent:
            raise _Unusual  # more than one document: the safe loader reports it
        return value
    finally:
        parser.dispose()


def _document(get: Callable[[], Any], constructor: SafeConstructor) -> Any:
    """The value of one document's node events (iterative: open containers live on a stack)."""
    open_: list[Any] = []  # open lists and dicts, innermost last
    keys: list[Any] = []  # for each open container: the mapping key waiting for its value, else _NO_KEY
    while True:
        event = get()
        kind = type(event)
        if kind is ScalarEvent:
            value = _scalar(event, constructor)
        elif kind is MappingStartEvent or kind is SequenceStartEvent:
            if event.tag is not None or event.anchor is not None or len(open_) >= MAX_DEPTH:
                raise _Unusual
            if open_ and keys[-1] is _NO_KEY and type(open_[-1]) is dict:
                raise _Unusual  # a list or mapping as a mapping key
            open_.append({} if kind is MappingStartEvent else [])
            keys.append(_NO_KEY)
            continue
        elif kind is MappingEndEvent or kind is SequenceEndEvent:
            keys.pop()
            value = open_.pop()
        else:
            raise _Unusual  # an alias
        if not open_:
            return value
        top = open_[-1]
        if type(top) is list:
            top.append(value)
        elif keys[-1] is _NO_KEY:
            keys[-1] = value
        else:
            top[keys[-1]] = value  # a repeated key keeps its first position and takes the last value, as PyYAML
            keys[-1] = _NO_KEY


def _scalar(event: Any, constructor: SafeConstructor) -> Any:
    """A scalar's value: its implicit YAML 1.1 type found and built as PyYAML's Resolver and SafeConstructor do."""
    if event.tag is not None or event.anchor is not None:
        raise _Unusual
    value: str = event.value
    if not event.implicit[0]:  # quoted or block scalars are strings
        return value
    tag = _implicit_tag(value)
    if tag is None:
        return value
    if tag == _NULL:
        return None
    if tag == _BOOL:
        return SafeConstructor.bool_values[value.lower()]
    if tag in _CONSTRUCTED:
        return SafeConstructor.yaml_constructors[tag](constructor, ScalarNode(tag, value))
    raise _Unusual  # merge keys ('<<'), value keys ('='), or a tag a newer PyYAML resolves


def _implicit_tag(plain: str) -> str | None:
    """The tag Resolver.resolve gives a plain scalar, or None for a string."""
    for tag, regexp in _RESOLVERS.get(plain[:1], _ANY_START):
        if regexp.match(plain):
            return tag
    return None
