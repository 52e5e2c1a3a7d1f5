"""freeze(), thaw() and FrozenDict: deep immutability of payloads."""

from __future__ import annotations

import collections
import dataclasses
import enum
import math
from collections.abc import Mapping, MutableMapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, NamedTuple
from uuid import UUID

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reactor import FrozenDict, freeze, thaw
from reactor.errors import ImmutableMessageError, ReactorError
from reactor.messages.freeze import freeze_flat

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.floats(allow_nan=False)
)
json_like = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=25,
)


class Color(enum.Enum):
    RED = "red"


class Point(NamedTuple):
    x: Any
    y: Any


@attrs.frozen
class FrozenThing:
    items: list[int]


@attrs.define
class MutableThing:
    x: int


@dataclasses.dataclass(frozen=True)
class FrozenData:
    x: int


@dataclasses.dataclass
class MutableData:
    x: int


SCALARS = [
    "s",
    b"b",
    1,
    1.5,
    True,
    None,
    1j,
    Decimal("1.1"),
    datetime(2024, 1, 1, tzinfo=UTC),
    date(2024, 1, 1),
    time(12, 0),
    timedelta(seconds=3),
    UUID(int=7),
    Color.RED,
]


@pytest.mark.parametrize("value", SCALARS, ids=lambda v: type(v).__name__)
def test_scalars_pass_as_is(value: object) -> None:
    assert freeze(value) is value


def test_dict_becomes_frozendict_equal_to_the_dict() -> None:
    frozen = freeze({"a": 1, "b": [1, 2], "c": {"d": {1, 2}}})
    assert isinstance(frozen, FrozenDict)
    assert frozen == {"a": 1, "b": (1, 2), "c": {"d": frozenset({1, 2})}}
    assert isinstance(frozen["c"], FrozenDict)
    assert isinstance(frozen["c"]["d"], frozenset)


def test_containers_are_converted() -> None:
    assert freeze([1, [2]]) == (1, (2,))
    assert type(freeze([1])) is tuple
    assert freeze({1, 2}) == frozenset({1, 2})
    assert freeze(bytearray(b"xy")) == b"xy"
    assert type(freeze(bytearray(b"xy"))) is bytes
    assert freeze(collections.OrderedDict(a=[1])) == {"a": (1,)}
    assert freeze(frozenset({(1, 2)})) == frozenset({(1, 2)})


def test_namedtuple_keeps_its_type() -> None:
    frozen = freeze(Point([1], {"a": 2}))
    assert type(frozen) is Point
    assert frozen == Point((1,), FrozenDict({"a": 2}))


def test_keys_are_frozen_too() -> None:
    frozen = freeze({(1, 2): "tuple key", Point("a", "b"): "named"})
    assert frozen[(1, 2)] == "tuple key"
    assert type(next(iter(k for k in frozen if k != (1, 2)))) is Point


def test_publisher_objects_are_not_shared() -> None:
    items = [1, 2]
    inner: dict[str, Any] = {"k": items}
    members = {1}
    payload = {"inner": inner, "set": members}
    frozen = freeze(payload)
    items.append(3)
    inner["new"] = 1
    members.add(2)
    assert frozen == {"inner": {"k": (1, 2)}, "set": frozenset({1})}


def test_already_frozen_values_are_not_copied() -> None:
    fd = freeze({"a": (1, 2)})
    assert freeze(fd) is fd
    t = (1, "a", (2, 3))
    assert freeze(t) is t
    fs = frozenset({1, 2})
    assert freeze(fs) is fs


def test_frozen_attrs_and_dataclasses_pass() -> None:
    thing = FrozenThing(items=[1])
    assert freeze(thing) is thing
    data = FrozenData(1)
    assert freeze({"d": data})["d"] is data


@pytest.mark.parametrize(
    "value",
    [MutableThing(1), MutableData(1), object(), iter([1]), memoryview(b"x"), lambda: 1],
    ids=["attrs", "dataclass", "object", "iterator", "memoryview", "function"],
)
def test_mutable_or_unknown_values_are_refused(value: object) -> None:
    with pytest.raises(ImmutableMessageError) as info:
        freeze(value)
    assert info.value.path == "data"
    assert info.value.value_type is type(value)


def test_error_names_the_path_in_subscript_form() -> None:
    with pytest.raises(ImmutableMessageError) as info:
        freeze({"items": [1, 2, MutableThing(3)]})
    assert info.value.path == "data['items'][2]"
    assert info.value.value_type is MutableThing
    assert "data['items'][2]" in str(info.value)
    assert "MutableThing" in str(info.value)
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, ReactorError)


def test_error_paths_for_nested_keys_sets_and_custom_roots() -> None:
    with pytest.raises(ImmutableMessageError) as info:
        freeze({"a": {1: [{"b": object()}]}}, path="payload")
    assert info.value.path == "payload['a'][1][0]['b']"
    with pytest.raises(ImmutableMessageError) as info:
        freeze({"a": {FrozenKey(): 1}})
    assert info.value.path.startswith("data['a'] key ")
    with pytest.raises(ImmutableMessageError) as info:
        freeze([{FrozenKey()}])
    assert info.value.path.startswith("data[0] member ")


class FrozenKey:
    """Hashable but mutable: a dict key that freeze must refuse."""


def test_frozendict_is_immutable() -> None:
    fd = FrozenDict({"a": 1})
    assert not isinstance(fd, MutableMapping)
    assert isinstance(fd, Mapping)
    with pytest.raises(TypeError):
        fd["a"] = 2  # type: ignore[index]
    with pytest.raises(AttributeError):
        fd.x = 1
    with pytest.raises(AttributeError):
        fd._d = {}
    assert fd == {"a": 1}


def test_frozendict_constructor_deep_freezes() -> None:
    source = [1]
    fd = FrozenDict({"a": source}, b={"c": [2]})
    source.append(2)
    assert fd == {"a": (1,), "b": {"c": (2,)}}
    assert FrozenDict([("x", 1)]) == {"x": 1}
    with pytest.raises(ImmutableMessageError):
        FrozenDict(a=object())


def test_frozendict_mapping_behaviour() -> None:
    fd: FrozenDict[str, Any] = FrozenDict({"a": 1, "b": 2})
    assert len(fd) == 2
    assert list(fd) == ["a", "b"]
    assert list(reversed(fd)) == ["b", "a"]
    assert "a" in fd
    assert "z" not in fd
    assert fd.get("z", 0) == 0
    assert fd.get("a") == 1
    assert list(fd.items()) == [("a", 1), ("b", 2)]
    assert list(fd.keys()) == ["a", "b"]
    assert list(fd.values()) == [1, 2]
    assert repr(fd) == "FrozenDict({'a': 1, 'b': 2})"
    assert (fd | {"b": 3}) == {"a": 1, "b": 3}
    assert isinstance(fd | {"b": [3]}, FrozenDict)
    assert fd != {"a": 1}
    assert fd != [("a", 1), ("b", 2)]
    assert fd == collections.OrderedDict(a=1, b=2)


def test_frozendict_hash_follows_equality() -> None:
    a = FrozenDict({"a": 1, "b": (1, 2)})
    b = FrozenDict({"b": (1, 2), "a": 1})
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert hash(a) == hash(a)  # cached value is stable


def test_thaw_returns_plain_mutable_values() -> None:
    frozen = freeze({"a": [1, {"b": {2}}], "c": Point(1, 2)})
    thawed = thaw(frozen)
    assert thawed == {"a": [1, {"b": {2}}], "c": [1, 2]}
    assert type(thawed) is dict
    assert type(thawed["a"]) is list
    assert type(thawed["a"][1]) is dict
    assert type(thawed["a"][1]["b"]) is set
    assert thaw(5) == 5


@given(json_like)
def test_thaw_undoes_freeze(value: Any) -> None:
    assert thaw(freeze(value)) == value


@given(json_like)
def test_freeze_is_idempotent_and_hashable(value: Any) -> None:
    once = freeze(value)
    twice = freeze(once)
    assert twice == once
    assert hash(twice) == hash(once)
    if isinstance(once, (FrozenDict, tuple)):
        assert twice is once


@given(json_like)
def test_frozen_values_contain_no_mutable_containers(value: Any) -> None:
    def walk(v: Any) -> None:
        assert not isinstance(v, (list, dict, set, bytearray))
        if isinstance(v, FrozenDict):
            for item in v.values():
                walk(item)
        elif isinstance(v, (tuple, frozenset)):
            for item in v:
                walk(item)

    walk(freeze(value))


def test_float_nan_passes() -> None:
    assert math.isnan(freeze(float("nan")))


def test_freeze_flat_copies_a_dict_of_scalars_and_declines_anything_else() -> None:
    source = {"n": 1, "name": "x", "when": None}
    frozen = freeze_flat(source)
    assert type(frozen) is FrozenDict
    assert frozen == source
    source["n"] = 2
    assert frozen["n"] == 1  # a copy: the caller keeps its dict
    assert freeze_flat({}) == FrozenDict()
    assert freeze_flat({"items": [1]}) is None  # a list inside: freeze() walks it
    assert freeze_flat({(1, 2): "tuple key"}) is None
    assert freeze({"items": [1]}) == {"items": (1,)}
