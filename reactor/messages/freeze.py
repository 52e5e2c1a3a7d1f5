"""Deep-immutable copies of event payloads: :class:`FrozenDict`, :func:`freeze`, :func:`thaw`.

Events cross threads (and actors) without copying, so everything inside them
must be immutable. :func:`freeze` makes a deep immutable copy of what a
publisher hands in, so the publisher's own mutable objects are never shared
with consumers; anything it cannot make immutable is refused with
:class:`~reactor.errors.ImmutableMessageError` naming where the value sits.

=============================================  ==========================================
input                                          frozen as
=============================================  ==========================================
``dict`` and any other ``Mapping``             :class:`FrozenDict` (keys frozen too)
``list``, ``tuple``                            ``tuple`` (a ``namedtuple`` keeps its type)
``set``, ``frozenset``                         ``frozenset``
``bytearray``                                  ``bytes``
``str``, ``bytes``, ``int``, ``float``,        passed as is
``bool``, ``None``, ``complex``, ``Decimal``,
``datetime``, ``date``, ``time``,
``timedelta``, ``UUID``, ``Enum`` members
:class:`FrozenDict`                            passed as is (it is deep-frozen already)
frozen attrs / dataclass instances             passed as is (their fields are trusted)
anything else                                  :class:`~reactor.errors.ImmutableMessageError`
=============================================  ==========================================
"""

from __future__ import annotations

import dataclasses
import enum
import marshal
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID

from reactor.errors import ImmutableMessageError

__all__ = ["FrozenDict", "freeze", "freeze_flat", "marshal_size", "thaw"]

_K = TypeVar("_K")
_V = TypeVar("_V")

# Exact types that are immutable and pass untouched. Checked with ``type(x) in``
# before anything else because almost every leaf of a payload is one of these.
_SCALARS: frozenset[type] = frozenset(
    {
        str,
        bytes,
        int,
        float,
        bool,
        type(None),
        complex,
        Decimal,
        datetime,
        date,
        time,
        timedelta,
        UUID,
    }
)
# Subclasses of these (``StrEnum``, pendulum's ``DateTime``...) are immutable by
# convention; they are accepted on the slow path.
_SCALAR_BASES: tuple[type, ...] = tuple(_SCALARS - {type(None), bool})


class FrozenDict(Mapping[_K, _V]):
    """An immutable, hashable mapping whose values are deep-frozen.

    Every ``FrozenDict`` is deeply immutable: the constructor freezes keys and
    values with :func:`freeze`, so :func:`freeze` can pass an existing
    ``FrozenDict`` through without copying it. It compares equal to any mapping
    with the same items, including a plain ``dict``.

    Thread-safety: instances never change, so they can be shared freely.

    Args:
        mapping: a mapping or an iterable of ``(key, value)`` pairs.
        **kwargs: more items, as for ``dict``.

    Raises:
        ImmutableMessageError: a key or value cannot be made immutable.
    """

    __slots__ = ("_d", "_hash")

    _d: dict[_K, _V]
    _hash: int

    def __init__(
        self, mapping: Mapping[_K, _V] | Iterable[tuple[_K, _V]] = (), /, **kwargs: _V
    ) -> None:
        items: dict[Any, Any] = dict(mapping)
        items.update(kwargs)
        _set_d(self, _freeze_dict(items, "FrozenDict()")._d)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"FrozenDict is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"FrozenDict is immutable; cannot delete {name!r}")

    def __getitem__(self, key: _K) -> _V:
        return self._d[key]

    def __iter__(self) -> Iterator[_K]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __contains__(self, key: object) -> bool:
        return key in self._d

    def __reversed__(self) -> Iterator[_K]:
        return reversed(self._d)

    # The Mapping mixins would go through __getitem__ one key at a time; the
    # wrapped dict's views are read-only and much faster.
    def get(self, key: _K, default: Any = None) -> Any:
        return self._d.get(key, default)

    def keys(self) -> KeysView[_K]:
        return self._d.keys()

    def values(self) -> ValuesView[_V]:
        return self._d.values()

    def items(self) -> ItemsView[_K, _V]:
        return self._d.items()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenDict):
            return self._d == other._d
        if isinstance(other, dict):
            return self._d == other
        if isinstance(other, Mapping):
            return len(self._d) == len(other) and self._d == dict(other.items())
        return NotImplemented

    def __hash__(self) -> int:
        # Cached: events are hashed when deduplicated or used as dict keys.
        try:
            return self._hash
        except AttributeError:  # first call: the slot is left unset until then
            h = hash(frozenset(self._d.items()))
            _set_hash(self, h)
            return h

    def __or__(self, other: Mapping[_K, _V]) -> FrozenDict[_K, _V]:
        """Return a new ``FrozenDict`` with the items of both, ``other`` winning."""
        if not isinstance(other, Mapping):
            return NotImplemented
        merged = dict(self._d)
        merged.update(other)
        return FrozenDict(merged)

    def __repr__(self) -> str:
        return f"FrozenDict({self._d!r})"

    def __copy__(self) -> FrozenDict[_K, _V]:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenDict[_K, _V]:
        return self

    def __reduce__(self) -> tuple[Callable[..., FrozenDict[_K, _V]], tuple[dict[_K, _V]]]:
        # Lets in-process tools (copy, multiprocessing queues in tests) rebuild it;
        # reactor itself never pickles anything that crosses a process.
        return (FrozenDict, (self._d,))


# Slot descriptors, used to fill a FrozenDict despite its __setattr__ guard.
_set_d = FrozenDict.__dict__["_d"].__set__
_set_hash = FrozenDict.__dict__["_hash"].__set__
_new = object.__new__


def _wrap(d: dict[Any, Any]) -> FrozenDict[Any, Any]:
    """Wrap a dict whose keys and values are frozen already and that nobody else holds."""
    fd: FrozenDict[Any, Any] = _new(FrozenDict)
    _set_d(fd, d)
    return fd


class _Refused(Exception):
    """Internal: a value was refused; ``segments`` collects the path on the way up.

    Building the path only on failure keeps the success path free of string work.
    """

    def __init__(self, value_type: type) -> None:
        super().__init__(value_type)
        self.value_type = value_type
        self.segments: list[str] = []


def freeze(value: Any, path: str = "data") -> Any:
    """Return a deep immutable copy of ``value``.

    See the module docstring for what each type becomes. Immutable values are
    returned as they are, so ``freeze`` is idempotent and cheap on frozen input.

    Args:
        value: the payload to freeze.
        path: how to name ``value`` in an error, e.g. ``"data"`` or ``"headers"``.

    Returns:
        A deeply immutable value equal in content to ``value``.

    Raises:
        ImmutableMessageError: some part of ``value`` cannot be made immutable;
            its ``path`` says where, in Python subscript form (``data['items'][2]``).

    Thread-safety: safe, provided no other thread mutates ``value`` meanwhile.
    """
    t = type(value)
    if t in _SCALARS:
        return value
    if t is dict:
        frozen = freeze_flat(value)
        if frozen is not None:
            return frozen
    try:
        if t is dict:  # the usual payload: skip the dispatch
            return _freeze_mapping(value)
        return _freeze_any(value)
    except _Refused as refused:
        raise ImmutableMessageError(
            path + "".join(reversed(refused.segments)), refused.value_type
        ) from None


def freeze_flat(value: dict[Any, Any]) -> FrozenDict[Any, Any] | None:
    """The frozen form of a dict of scalars (a copy, wrapped); None if it is not flat.

    Flat dicts are the usual payload: a copy is their frozen form, without
    :func:`freeze`'s generic walk. (A loop with no call in it: for the few items
    of a payload it beats building a set of their types in C.)
    """
    scalars = _SCALARS
    for item in value.values():
        if item.__class__ not in scalars:
            return None
    for key in value:
        if key.__class__ not in scalars:
            return None
    frozen: FrozenDict[Any, Any] = _new(FrozenDict)
    _set_d(frozen, value.copy())
    return frozen


def marshal_size(value: FrozenDict[Any, Any]) -> int | None:
    """How many bytes :mod:`marshal` (format 0) writes for the items of ``value``; None
    if it cannot write them (a nested mapping, a datetime, a subclass).

    A measure, for :func:`reactor.messages.sizes.size_bound`: one C call over the
    items, whose bytes are thrown away at once (nothing marshalled leaves this
    function). Format 0 writes every object in full, never a reference to an
    earlier one, so repeated values count each time, as JSON writes them.
    """
    try:
        return len(_marshal(value._d, 0))
    except ValueError:
        return None


_marshal = marshal.dumps


def _freeze_dict(value: Mapping[Any, Any], path: str) -> FrozenDict[Any, Any]:
    try:
        return _freeze_mapping(value)
    except _Refused as refused:
        raise ImmutableMessageError(
            path + "".join(reversed(refused.segments)), refused.value_type
        ) from None


def _freeze_mapping(value: Mapping[Any, Any]) -> FrozenDict[Any, Any]:
    out: dict[Any, Any] = {}
    scalars = _SCALARS
    for key, item in value.items():
        k = key if type(key) in scalars else _freeze_at(key, " key {!r}", key)
        out[k] = item if type(item) in scalars else _freeze_at(item, "[{!r}]", k)
    return _wrap(out)


def _freeze_items(value: Any) -> list[Any]:
    scalars = _SCALARS
    return [
        item if type(item) in scalars else _freeze_at(item, "[{}]", i)
        for i, item in enumerate(value)
    ]


def _freeze_at(value: Any, where: str, label: object) -> Any:
    """``value`` frozen; a refusal inside it is placed at ``where.format(label)``."""
    # The segment is formatted only on refusal: a repr per key would cost every freeze.
    try:
        return _freeze_any(value)
    except _Refused as refused:
        refused.segments.append(where.format(label))
        raise


def _freeze_tuple(value: tuple[Any, ...]) -> tuple[Any, ...]:
    # A tuple whose items are all immutable already is shared, not copied.
    scalars = _SCALARS
    for v in value:
        if type(v) not in scalars:
            break
    else:
        return value
    items = _freeze_items(value)
    if all(a is b for a, b in zip(items, value, strict=True)):
        return value
    return tuple(items)


def _freeze_set(value: Any) -> frozenset[Any]:
    # Sets have no subscripts; name the member instead.
    scalars = _SCALARS
    return frozenset(
        item if type(item) in scalars else _freeze_at(item, " member {!r}", item) for item in value
    )


def _freeze_list(value: Any) -> tuple[Any, ...]:
    return tuple(_freeze_items(value))


def _freeze_frozenset(value: frozenset[Any]) -> frozenset[Any]:
    for v in value:
        if type(v) not in _SCALARS:
            return _freeze_set(value)
    return value


def _same(value: Any) -> Any:
    return value


def _refuse(value: Any) -> Any:
    raise _Refused(type(value))


def _freeze_any(value: Any) -> Any:
    t = type(value)
    if t in _SCALARS:
        return value
    freezer = _FREEZERS.get(t)
    if freezer is None:
        freezer = _freezer_for(t)
        # Benign race: two threads may classify the same type; both agree.
        _FREEZERS[t] = freezer
    return freezer(value)


# How to freeze each exact type seen so far; other types are classified once by
# _freezer_for and cached here, so isinstance checks run once per type, not per value.
_FREEZERS: dict[type, Callable[[Any], Any]] = {
    dict: _freeze_mapping,
    list: _freeze_list,
    tuple: _freeze_tuple,
    FrozenDict: _same,
    frozenset: _freeze_frozenset,
    set: _freeze_set,
    bytearray: bytes,
}


def _freezer_for(t: type) -> Callable[[Any], Any]:  # noqa: PLR0911 - one return per kind
    if issubclass(t, (FrozenDict, enum.Enum, *_SCALAR_BASES)):
        return _same
    if _is_frozen_attrs(t):
        return _same
    if dataclasses.is_dataclass(t) and t.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        return _same
    if issubclass(t, Mapping):
        return _freeze_mapping
    if issubclass(t, tuple) and hasattr(t, "_fields") and hasattr(t, "_make"):
        make = t._make

        def freeze_namedtuple(value: Any) -> Any:
            return make(_freeze_items(value))

        return freeze_namedtuple
    if issubclass(t, (tuple, list)):
        return _freeze_list
    if issubclass(t, (set, frozenset)):
        return _freeze_set
    if issubclass(t, bytearray):
        return bytes
    return _refuse


def _is_frozen_attrs(t: type) -> bool:
    if getattr(t, "__attrs_attrs__", None) is None:
        return False
    props = getattr(t, "__attrs_props__", None)
    if props is not None:  # attrs >= 25.4 says so directly
        return bool(props.is_frozen)
    # Older attrs: a frozen class gets attrs' own __setattr__ that always raises.
    return getattr(t.__setattr__, "__name__", "") == "_frozen_setattrs"


def thaw(value: Any) -> Any:
    """Return a plain mutable copy of a frozen value, for JSON encoders and users.

    Mappings become ``dict``, tuples and lists become ``list`` and frozensets
    become ``set``, recursively (set members stay as they are, since a set can
    only hold hashable values). Everything else is returned as is.

    Args:
        value: a value, typically one produced by :func:`freeze`.

    Returns:
        A new, mutable copy that the caller owns.
    """
    t = type(value)
    if t in _SCALARS:
        return value
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [thaw(v) for v in value]
    if isinstance(value, (frozenset, set)):
        return set(value)
    return value
