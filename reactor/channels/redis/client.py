"""Every call the ``redis`` backend makes to Redis, as typed methods on one client.

One concept: the backend's Redis I/O (key names, commands, pipelines, the Lua
scripts of eviction and delayed events, and what counts as a lost connection).
The rest of the backend never touches redis-py.

Thread-safety: redis-py's client is thread-safe (a connection pool); every
method may be called from any thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from reactor.channels.redis.options import RedisOptions
from reactor.errors import RedisUnavailable

try:
    import redis as redis_py
    from redis import exceptions as redis_errors
except ModuleNotFoundError:  # pragma: no cover - exercised by monkeypatching in tests
    redis_py = None  # type: ignore[assignment]
    redis_errors = None  # type: ignore[assignment]

__all__ = [
    "FIELD",
    "GROUP_FIELD",
    "KEY_FIELD",
    "TOPIC_FIELD",
    "RedisClient",
    "entry_seq",
    "is_connection_error",
    "is_missing_group",
    "require_redis_py",
    "seq_entry_id",
]

FIELD = b"event"
# Written beside the event by reactor, so that a worker can route and place an entry
# without decoding it (its consumer decodes it). Entries without them are decoded
# by the reader.
TOPIC_FIELD = b"reactor.topic"
KEY_FIELD = b"reactor.key"
# Written on an entry a redrive adds again: the one group it is for. Every other
# group acks it unread, as an entry of a topic it does not route.
GROUP_FIELD = b"reactor.group"

_SEQ_BITS = 40
_SEQ_MASK = (1 << _SEQ_BITS) - 1

# Deletes up to ARGV[1] of the oldest entries that no group (ARGV[2..]) has been
# delivered yet, atomically, so a reader cannot take one while it is deleted.
_EVICT_SCRIPT = """
local function newer(a, b)
  local am, as = string.match(a, '(%d+)-(%d+)')
  local bm, bs = string.match(b, '(%d+)-(%d+)')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am > bm or (am == bm and as > bs)
end
local top = '0-0'
local info = redis.call('XINFO', 'GROUPS', KEYS[1])
for _, group in ipairs(info) do
  local name, last
  for i = 1, #group, 2 do
    if group[i] == 'name' then name = group[i + 1] end
    if group[i] == 'last-delivered-id' then last = group[i + 1] end
  end
  for j = 2, #ARGV do
    if ARGV[j] == name and newer(last, top) then top = last end
  end
end
local victims = redis.call('XRANGE', KEYS[1], '(' .. top, '+', 'COUNT', tonumber(ARGV[1]))
for _, entry in ipairs(victims) do redis.call('XDEL', KEYS[1], entry[1]) end
return victims
"""

# Delayed events: a sorted set of members by due time, and a hash of each member's
# event bytes, topic and key ("k" + key, or "" for none). A member is a zero-padded
# number from a counter, so events due at one time keep their scheduling order.
# KEYS: the set, the hash, the counter. ARGV: the due time, then (event, topic, key)
# triples. Returns how many wait in the set.
_SCHEDULE_SCRIPT = """
for i = 2, #ARGV, 3 do
  local m = string.format('%016d', redis.call('INCR', KEYS[3]))
  redis.call('ZADD', KEYS[1], ARGV[1], m)
  redis.call('HSET', KEYS[2], m, ARGV[i], m .. ':t', ARGV[i + 1], m .. ':k', ARGV[i + 2])
end
return redis.call('ZCARD', KEYS[1])
"""

# Moves up to ARGV[2] members due at ARGV[1] (earliest first) into the stream, and out
# of the set and hash, atomically: with several processes on one stream, each due
# event is added to the stream exactly once. ARGV[3..5]: the entry's field names.
# ARGV[6..]: the XADD's retention arguments (MAXLEN/MINID, ~/=, threshold), or none.
# KEYS: the set, the hash, the stream. Returns {moved, next due or false, left}.
_RELEASE_SCRIPT = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(due) do
  local f = redis.call('HMGET', KEYS[2], m, m .. ':t', m .. ':k')
  if f[1] then
    local args = {KEYS[3]}
    for i = 6, #ARGV do table.insert(args, ARGV[i]) end
    for _, v in ipairs({'*', ARGV[3], f[1], ARGV[4], f[2]}) do table.insert(args, v) end
    if f[3] and string.len(f[3]) > 0 then
      table.insert(args, ARGV[5])
      table.insert(args, string.sub(f[3], 2))
    end
    redis.call('XADD', unpack(args))
  end
  redis.call('ZREM', KEYS[1], m)
  redis.call('HDEL', KEYS[2], m, m .. ':t', m .. ':k')
end
local after = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {#due, after[2] or false, redis.call('ZCARD', KEYS[1])}
"""


def entry_seq(entry_id: bytes | str) -> int:
    """The local sequence number of a stream entry id; orders like the ids do."""
    # int() reads ASCII digits from bytes as well as from str: no decoding needed.
    millis, _, counter = (
        entry_id.partition(b"-") if isinstance(entry_id, bytes) else entry_id.partition("-")
    )
    return (int(millis) << _SEQ_BITS) | int(counter or 0)


def seq_entry_id(seq: int) -> str:
    """The stream entry id of a local sequence number."""
    return f"{seq >> _SEQ_BITS}-{seq & _SEQ_MASK}"


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` means Redis is unreachable (retry later) rather than a bug."""
    return redis_errors is not None and isinstance(
        exc, redis_errors.ConnectionError | redis_errors.TimeoutError
    )


def is_missing_group(exc: BaseException) -> bool:
    """Whether ``exc`` says the stream or a group vanished (Redis restarted without data)."""
    return redis_errors is not None and isinstance(exc, redis_errors.ResponseError)


def require_redis_py(channel: str, display: str) -> None:
    """Raise :class:`RedisUnavailable` if redis-py is not installed."""
    if redis_py is None:
        raise RedisUnavailable(
            f"channel {channel!r} uses the redis backend ({display}), but the "
            "redis package is not installed; run: pip install reactor-actors[redis]"
        )


def entry(payload: bytes, topic: str, key: str | None) -> dict[bytes, bytes]:
    """The fields of the stream entry for an event."""
    fields = {FIELD: payload, TOPIC_FIELD: topic.encode()}
    if key is not None:
        fields[KEY_FIELD] = key.encode()
    return fields


def fields_of(raw: Any) -> dict[bytes, bytes]:
    """An entry's fields, from a reply (a dict) or a Lua reply (a flat list)."""
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, list):
        return {raw[i]: raw[i + 1] for i in range(0, len(raw) - 1, 2)}
    return {}


# A reply inbox keeps at most this many unread replies, and expires this long after
# its last reply: the inbox of a process that died goes away by itself.
_INBOX_MAXLEN = 10_000
_INBOX_TTL_S = 3600


class RedisClient:
    """One channel's connection to Redis and its keys.

    Args:
        channel: the channel's name (its stream is ``{prefix}:{channel}``).
        options: the channel's parsed URL.
    """

    def __init__(self, channel: str, options: RedisOptions) -> None:
        require_redis_py(channel, options.display)
        self.options = options
        self.stream = f"{options.prefix}:{channel}"
        self.consumer = options.worker
        self._redis: Any = redis_py.Redis.from_url(
            options.client_url,
            socket_connect_timeout=2.0,
            socket_timeout=max(5.0, options.block_ms / 1000 + 5.0),
        )
        self._evict = self._redis.register_script(_EVICT_SCRIPT)
        self._schedule = self._redis.register_script(_SCHEDULE_SCRIPT)
        self._release = self._redis.register_script(_RELEASE_SCRIPT)

    def close(self) -> None:
        self._redis.close()

    def attempts_key(self, group: str) -> str:
        return f"{self.stream}:attempts:{group}"

    def seen_key(self, group: str) -> str:
        return f"{self.stream}:seen:{group}"

    @property
    def letters_key(self) -> str:
        """The stream of the channel's dead letters, one entry per letter."""
        return f"{self.stream}:deadletters"

    # -- groups and writes ---------------------------------------------------------

    def create_groups(self, starts: Iterable[tuple[str, str]]) -> None:
        """Create the stream and each ``(group, start id)`` that does not exist yet."""
        for name, start in starts:
            try:
                self._redis.xgroup_create(self.stream, name, id=start, mkstream=True)
            except redis_errors.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def trim(self, wall: float) -> dict[str, Any]:
        """The retention arguments of an ``XADD`` at wall time ``wall`` (MAXLEN or MINID)."""
        options = self.options
        if options.maxage_s is not None:
            minid = f"{int((wall - options.maxage_s) * 1000)}-0"
            return {"minid": minid, "approximate": options.approximate}
        if options.maxlen is not None:
            return {"maxlen": options.maxlen, "approximate": options.approximate}
        return {}

    def add(self, entries: Sequence[dict[bytes, bytes]], trim: Mapping[str, Any]) -> None:
        """XADD ``entries`` in one pipeline, each with the ``trim`` arguments (MAXLEN/MINID)."""
        pipe = self._redis.pipeline(transaction=False)
        stream = self.stream
        for fields in entries:
            pipe.xadd(stream, fields, **trim)
        pipe.execute()

    def evict(self, count: int, groups: Sequence[str]) -> list[tuple[Any, dict[bytes, bytes]]]:
        """Delete up to ``count`` of the oldest entries none of ``groups`` was delivered yet."""
        victims = self._evict(keys=[self.stream], args=[count, *groups])
        return [(entry_id, fields_of(fields)) for entry_id, fields in victims]

    # -- projections: a checkpoint hash each, and the stream read back in order -------

    def projection_key(self, name: str) -> str:
        return f"{self.stream}:projection:{name}"

    def checkpoint(self, name: str) -> dict[bytes, bytes]:
        """The fields of projection ``name``'s checkpoint hash (empty if it has none)."""
        return dict(self._redis.hgetall(self.projection_key(name)))

    def save_checkpoint(self, name: str, fields: Mapping[str, str | int]) -> None:
        """Replace the checkpoint's fields (position, pending, state) in one MULTI/EXEC."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self.projection_key(name), mapping=dict(fields))
        pipe.execute()

    def entries_after(self, after: int, count: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Up to ``count`` entries of the stream after local sequence number ``after``."""
        reply: Any = self._redis.xrange(self.stream, f"({seq_entry_id(after)}", "+", count=count)
        return [(entry_id, fields_of(fields)) for entry_id, fields in reply]

    def settled(self, group: str) -> int:
        """The sequence number at or below which ``group`` has acked every entry it was given."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.xinfo_groups(self.stream)
        pipe.xpending(self.stream, group)
        infos, pending = pipe.execute()
        last = next(
            (info["last-delivered-id"] for info in infos if info["name"] == group.encode()), None
        )
        if last is None:
            return 0
        settled = entry_seq(last)
        if pending and pending.get("pending") and pending.get("min") is not None:
            settled = min(settled, entry_seq(pending["min"]) - 1)
        return settled

    def last_seq(self) -> int:
        """The local sequence number of the newest entry ever added (0 for no stream)."""
        reply: Any = self._redis.xrevrange(self.stream, "+", "-", count=1)
        return entry_seq(reply[0][0]) if reply else 0

    # -- the scheduled area ----------------------------------------------------------

    @property
    def scheduled_keys(self) -> tuple[str, str]:
        """The sorted set (member -> due time) and hash (member -> event) of delayed events."""
        return f"{self.stream}:scheduled", f"{self.stream}:scheduled:events"

    def schedule(self, due: float, entries: Sequence[tuple[bytes, str, str | None]]) -> int:
        """Store ``(event bytes, topic, key)`` due at wall time ``due``; how many wait now."""
        args: list[Any] = [repr(float(due))]
        for payload, topic, key in entries:
            args += [payload, topic, "" if key is None else "k" + key]
        zset, events = self.scheduled_keys
        return int(self._schedule(keys=[zset, events, f"{zset}:seq"], args=args))

    def release_due(self, now: float, limit: int) -> tuple[int, float | None, int]:
        """Move up to ``limit`` events due at ``now`` into the stream, atomically.

        Returns:
            ``(moved, earliest due time left or None, how many are left)``.
        """
        zset, events = self.scheduled_keys
        trim: list[Any] = []
        retention = self.trim(now)
        for name in ("minid", "maxlen"):
            if name in retention:
                trim = [name.upper(), "~" if retention["approximate"] else "=", retention[name]]
        moved, after, left = self._release(
            keys=[zset, events, self.stream],
            args=[repr(float(now)), limit, FIELD, TOPIC_FIELD, KEY_FIELD, *trim],
        )
        return int(moved), None if after is None else float(after), int(left)

    # -- the backlog ---------------------------------------------------------------

    def backlog(self, names: frozenset[str], cap: int) -> tuple[int, dict[str, int], int]:
        """``(backlog, lag of each group, groups seen)`` of the groups ``names``.

        The backlog is ``max(lag + pending)`` over them; a lag is counted up to ``cap``.
        """
        pipe = self._redis.pipeline(transaction=False)
        pipe.xinfo_stream(self.stream)
        pipe.xinfo_groups(self.stream)
        replies: Any = pipe.execute()
        stream, infos = replies
        top = entry_seq(stream["last-generated-id"])
        deleted = entry_seq(stream.get("max-deleted-entry-id") or b"0-0")
        lags: dict[str, int] = {}
        backlog = 0
        for info in infos:
            name = info["name"].decode()
            if name not in names:
                continue
            last = entry_seq(info["last-delivered-id"])
            lag = info.get("lag")
            if last >= top:
                lag = 0
            elif lag is None or deleted > last:
                # Redis's lag counts entries deleted after the group's position (XDEL,
                # trimming); count what really follows the last delivery instead.
                after = f"({seq_entry_id(last)}"
                lag = len(self._redis.xrange(self.stream, after, "+", count=cap))
            lags[name] = int(lag)
            backlog = max(backlog, int(lag) + int(info["pending"]))
        return backlog, lags, len(lags)

    # -- reads -------------------------------------------------------------------------

    def read(self, group: str, start: str, count: int, block_ms: int | None = None) -> list[Any]:
        """XREADGROUP from ``start`` (``>`` for new entries, an id for this worker's pending)."""
        reply: Any = self._redis.xreadgroup(
            group, self.consumer, {self.stream: start}, count=count, block=block_ms
        )
        return list(reply[0][1]) if reply else []

    def claim(self, group: str, cursor: str, count: int) -> tuple[str, list[Any], list[Any]]:
        """XAUTOCLAIM entries idle past the lease: ``(next cursor, claimed, deleted ids)``."""
        lease_ms = int(self.options.lease_s * 1000)
        reply: Any = self._redis.xautoclaim(
            self.stream, group, self.consumer, lease_ms, cursor, count=count
        )
        after = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        return after, reply[1], (reply[2] if len(reply) > 2 else [])

    def attempts(self, group: str, ids: list[bytes], charge: bytes | None) -> dict[int, int]:
        """seq -> the attempt a re-read or claimed entry is on: the attempts it spent + 1.

        Args:
            group: the group the entries are pending in.
            ids: their entry ids.
            charge: the entry id a lost delivery is charged to (one more attempt
                spent, recorded before the count is read), or None.
        """
        key = self.attempts_key(group)
        pipe = self._redis.pipeline(transaction=False)
        if charge is not None:
            pipe.hincrby(key, charge, 1)
        pipe.hmget(key, ids)
        replies: Any = pipe.execute()
        spent = replies[-1]
        return {
            entry_seq(entry_id): int(count or 0) + 1
            for entry_id, count in zip(ids, spent, strict=True)
        }

    # -- settlement --------------------------------------------------------------------

    def settle(
        self,
        acks: Mapping[str, list[int]],
        forget: Mapping[str, list[int]],
        letters: Sequence[Mapping[bytes, bytes]] = (),
    ) -> None:
        """Store ``letters``, then XACK ``acks`` and forget the attempts of ``forget`` (group -> seqs).

        The letters go first in the pipeline: a dead-lettered entry is acked only
        once its letter is stored.
        """
        pipe = self._redis.pipeline(transaction=False)
        for letter in letters:
            pipe.xadd(self.letters_key, dict(letter))
        for name, seqs in acks.items():
            pipe.xack(self.stream, name, *[seq_entry_id(s) for s in seqs])
        for name, seqs in forget.items():
            pipe.hdel(self.attempts_key(name), *[seq_entry_id(s) for s in seqs])
        pipe.execute()

    def remember_attempt(self, group: str, seq: int, attempt: int) -> None:
        """Record that ``seq`` failed ``attempt`` times, for whoever handles it next."""
        self._redis.hset(self.attempts_key(group), seq_entry_id(seq), attempt)

    def touch(self, held: Mapping[str, Iterable[int]]) -> None:
        """Reset the idle time of the entries this worker holds (group -> seqs)."""
        pipe = self._redis.pipeline(transaction=False)
        touched = False
        for name, seqs in held.items():
            ids = [seq_entry_id(seq) for seq in seqs]
            if ids:
                pipe.xclaim(self.stream, name, self.consumer, 0, ids, justid=True)
                touched = True
        if touched:
            pipe.execute()

    # -- dead letters ------------------------------------------------------------------------

    def dead_letters(self) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Every stored letter, oldest first, as ``(letter id, fields)``."""
        return [(i, fields_of(f)) for i, f in self._redis.xrange(self.letters_key, "-", "+")]

    def count_letters(self) -> int:
        return int(self._redis.xlen(self.letters_key))

    def delete_letters(self, ids: Sequence[bytes | str]) -> None:
        if ids:
            self._redis.xdel(self.letters_key, *ids)

    def redrive(self, entries: Sequence[tuple[bytes | str, dict[bytes, bytes]]]) -> None:
        """Add each entry to the stream again and delete its letter, atomically (MULTI)."""
        pipe = self._redis.pipeline(transaction=True)
        for _, fields in entries:
            pipe.xadd(self.stream, fields)
        pipe.xdel(self.letters_key, *[letter for letter, _ in entries])
        pipe.execute()

    # -- reply inboxes (request-reply) ------------------------------------------------------

    def inbox_key(self, inbox: str) -> str:
        """The stream of one requester's replies (its system's inbox)."""
        return f"{self.options.prefix}:inbox:{inbox}"

    def send_reply(self, inbox: str, fields: dict[bytes, bytes]) -> None:
        """XADD a reply to ``inbox``; the inbox of a requester that died expires in an hour."""
        key = self.inbox_key(inbox)
        pipe = self._redis.pipeline(transaction=False)
        pipe.xadd(key, fields, maxlen=_INBOX_MAXLEN, approximate=True)
        pipe.expire(key, _INBOX_TTL_S)
        pipe.execute()

    def read_replies(
        self, inbox: str, after: bytes | str, block_ms: int
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """The replies in ``inbox`` after entry ``after``, waiting up to ``block_ms`` for one."""
        found = self._redis.xread({self.inbox_key(inbox): after}, count=100, block=block_ms)
        if not found:
            return []
        return [(entry_id, fields_of(fields)) for entry_id, fields in found[0][1]]

    def drop_replies(self, inbox: str, ids: Sequence[bytes]) -> None:
        if ids:
            self._redis.xdel(self.inbox_key(inbox), *ids)

    def close_inbox(self, inbox: str) -> None:
        self._redis.delete(self.inbox_key(inbox))

    # -- handled ids (idempotent groups) ----------------------------------------------------

    def seen(self, group: str, event_id: str) -> bool:
        return self._redis.zscore(self.seen_key(group), event_id) is not None

    def add_seen(self, group: str, event_id: str, score: float, keep: int | None) -> None:
        """Record a handled id (scored by ``score``); trim to the last ``keep`` if given."""
        key = self.seen_key(group)
        pipe = self._redis.pipeline(transaction=False)
        pipe.zadd(key, {event_id: score}, nx=True)
        if keep is not None:
            pipe.zremrangebyrank(key, 0, -(keep + 1))
        pipe.execute()

    # -- saga instances: {stream}:saga:{saga} (records) and ...:{state} (ids by start) ------

    def saga_key(self, saga: str, state: str | None = None) -> str:
        """The hash of ``saga``'s records, or the sorted set of its ids in ``state``."""
        key = f"{self.stream}:saga:{saga}"
        return key if state is None else f"{key}:{state}"

    def save_saga(
        self,
        saga: str,
        instance: str,
        record: str,
        *,
        state: str,
        started: float,
        states: Iterable[str],
    ) -> None:
        """Store a record and file its id under ``state`` only, atomically (MULTI)."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self.saga_key(saga), instance, record)
        for other in states:
            if other != state:
                pipe.zrem(self.saga_key(saga, other), instance)
        pipe.zadd(self.saga_key(saga, state), {instance: started})
        pipe.execute()

    def load_saga(self, saga: str, instance: str) -> bytes | None:
        found: bytes | None = self._redis.hget(self.saga_key(saga), instance)
        return found

    def saga_records(self, saga: str, state: str | None) -> list[bytes]:
        """The records of ``saga`` (in ``state`` only, if given; then oldest first)."""
        if state is None:
            return list(self._redis.hvals(self.saga_key(saga)))
        ids = self._redis.zrange(self.saga_key(saga, state), 0, -1)
        if not ids:
            return []
        return [record for record in self._redis.hmget(self.saga_key(saga), ids) if record]

    def prune_sagas(self, saga: str, states: Sequence[str], keep: int) -> int:
        """Delete the oldest-started instances in ``states`` beyond the latest ``keep``.

        Not atomic: a saga's instances are saved by one runner (the caller's).
        """
        counts = self.saga_counts(saga, states)
        excess = sum(counts.values()) - keep
        if excess <= 0:
            return 0
        pipe = self._redis.pipeline(transaction=False)
        for state in states:
            pipe.zrange(self.saga_key(saga, state), 0, excess - 1, withscores=True)
        oldest = sorted(
            (float(score), bytes(member), state)
            for state, found in zip(states, pipe.execute(), strict=True)
            for member, score in found
        )[:excess]
        pipe = self._redis.pipeline(transaction=True)
        for _, member, state in oldest:
            pipe.zrem(self.saga_key(saga, state), member)
            pipe.hdel(self.saga_key(saga), member)
        pipe.execute()
        return len(oldest)

    def saga_counts(self, saga: str, states: Sequence[str]) -> dict[str, int]:
        pipe = self._redis.pipeline(transaction=False)
        for state in states:
            pipe.zcard(self.saga_key(saga, state))
        return {state: int(count) for state, count in zip(states, pipe.execute(), strict=True)}
