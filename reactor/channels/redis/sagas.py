"""The instances of a saga whose channel is a redis stream, kept in Redis beside it.

Each instance's record (JSON, :func:`~reactor.channels.sagas.encode_instance`)
is a field of the hash ``{prefix}:{channel}:saga:{saga}``; its id is also in the
sorted set of its state, ``{prefix}:{channel}:saga:{saga}:{state}``, scored by its
start time, to count and list by state. The Redis calls are
:class:`~reactor.channels.redis.client.RedisClient`'s.
"""

from __future__ import annotations

import logging

from reactor.channels.redis.client import RedisClient, is_connection_error
from reactor.channels.sagas import (
    FINISHED_STATES,
    SAGA_STATES,
    SagaInstance,
    decode_instance,
    encode_instance,
)

__all__ = ["RedisSagaStore"]

logger = logging.getLogger("reactor")


class RedisSagaStore:
    """A :class:`~reactor.channels.sagas.SagaStore` in Redis.

    Thread-safety: every method may be called from any thread (redis-py's client is).
    Raises redis-py's connection errors when Redis is unreachable: the saga's
    consumer then fails the event it was handling, which is retried later. Only
    :meth:`counts`, which ``System.metrics()`` reads (a dashboard, many times a
    second), answers from what it last read instead: a snapshot must not fail
    during the outage it is there to show.
    """

    def __init__(self, client: RedisClient, channel: str, saga: str) -> None:
        self._client = client
        self._saga = saga
        self._where = f"saga {saga!r} on redis channel {channel!r}"
        self._counted: dict[str, int] = {}

    def load(self, instance: str) -> SagaInstance | None:
        found = self._client.load_saga(self._saga, instance)
        return None if found is None else decode_instance(found, self._where)

    def save(self, record: SagaInstance) -> None:
        self._client.save_saga(
            self._saga,
            record.id,
            encode_instance(record),
            state=record.state,
            started=record.started,
            states=SAGA_STATES,
        )

    def instances(self, state: str | None = None) -> list[SagaInstance]:
        records = [
            decode_instance(text, self._where)
            for text in self._client.saga_records(self._saga, state)
        ]
        return sorted(records, key=lambda record: (record.started, record.id))

    def counts(self) -> dict[str, int]:
        try:
            self._counted = self._client.saga_counts(self._saga, SAGA_STATES)
        except Exception as exc:
            if not is_connection_error(exc):
                raise
            logger.debug("%s: Redis unreachable, counts as last read: %s", self._where, exc)
        return dict(self._counted)

    def prune(self, keep: int) -> int:
        return self._client.prune_sagas(self._saga, FINISHED_STATES, keep)
