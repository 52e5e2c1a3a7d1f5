"""Handlers of the ``shop.toml`` demo: plain functions named by ``module:function``.

``demos/`` is not a package: ``reactor.runtime.toml`` finds this module because
it sits next to ``shop.toml``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from reactor import Event

log = logging.getLogger("reactor.demos.shop")

ORDERS = 300


def orders() -> Iterator[dict[str, Any]]:
    """The web shop's new orders: a generator function, so each run starts afresh."""
    for number in range(1, ORDERS + 1):
        yield {"id": number, "customer": f"customer-{number % 5}", "total": 10 * number}


def bill(event: Event) -> Event:
    """Charge an order; the returned event goes back into ``orders`` as ``orders.paid``."""
    return event.derive("orders.paid", {"id": event.data["id"], "charged": event.data["total"]})


def send_mail(event: Event) -> tuple[str, dict[str, Any]]:
    """Mail the receipt of a paid order; the ``(topic, data)`` pair goes to ``audit``."""
    return ("mail.sent", {"id": event.data["id"]})


def record(event: Event) -> None:
    """Keep an audit trail of what happened."""
    log.info("audit: %s %s", event.topic, dict(event.data))
