"""Orders: a saga with compensations, and a CQRS read model kept by a projection.

::

    storefront ──order.placed──▶ [orders]
      inventory   order.placed   → stock.reserved | order.rejected
      payments    stock.reserved → payment.charged | payment.failed
      shipping    payment.charged → order.shipped
      inventory   payment.failed → stock.released + order.cancelled   (the compensation)
      order-view  #              → the read model (idempotent projection)

Every step returns ``(topic, data)`` pairs, which reactor turns into events
with ``event.derive``: each follow-up keeps the order's ``correlation_id`` and
points at its cause, so the read model can check that a whole saga shares one
correlation id. The payment gateway times out now and then on a first attempt:
``payments`` crashes, restarts, and the redelivered charge goes through.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from reactor.demos.crashing import quick_restarts
from reactor.messages.event import Event
from reactor.runtime.topology import Topology

__all__ = [
    "DESCRIPTION",
    "GatewayTimeout",
    "Inventory",
    "OrderView",
    "Payments",
    "Storefront",
    "build",
    "panels",
]

DESCRIPTION = "order saga (stock, payment, shipping), compensations, a CQRS read model"

PLACE_INTERVAL_S = 0.15
CARD_LIMIT = 250
_SKUS = {"kettle": 40, "lamp": 65, "chair": 120, "desk": 210}
_STATUS = {
    "order.placed": "placed",
    "stock.reserved": "reserved",
    "order.rejected": "rejected",
    "payment.charged": "paid",
    "payment.failed": "payment failed",
    "stock.released": "compensating",
    "order.cancelled": "cancelled",
    "order.shipped": "shipped",
}
_FINAL = ("shipped", "cancelled", "rejected")


class GatewayTimeout(ConnectionError):
    """The (simulated) payment gateway did not answer in time."""


class Storefront:
    """Places an order each time it is polled."""

    def __init__(self) -> None:
        self.placed = 0

    def __call__(self) -> dict[str, Any]:
        self.placed += 1
        n = self.placed
        sku = list(_SKUS)[n % len(_SKUS)]
        qty = 1 + n % 3
        return {
            "order_id": f"o-{n:05d}",
            "customer": f"c-{n % 7}",
            "sku": sku,
            "qty": qty,
            "amount": _SKUS[sku] * qty,
        }


class Inventory:
    """Reserves stock for placed orders; releases it when a payment fails (compensation).

    Thread-safety: one consumer uses it; the instance (the stock) survives restarts.
    """

    def __init__(self) -> None:
        self.stock = dict.fromkeys(_SKUS, 12)

    def handle(self, event: Event) -> list[tuple[str, dict[str, Any]]]:
        order = event.data
        sku, qty = order["sku"], order["qty"]
        if event.topic == "payment.failed":
            self.stock[sku] += qty
            return [
                ("stock.released", {**order}),
                ("order.cancelled", {**order, "reason": order.get("reason", "payment failed")}),
            ]
        if self.stock[sku] < qty:
            self.stock[sku] += 10  # the warehouse restocks, too late for this order
            return [("order.rejected", {**order, "reason": f"out of stock: {sku}"})]
        self.stock[sku] -= qty
        return [("stock.reserved", {**order})]


class Payments:
    """Charges reserved orders; cards decline above a limit; the gateway sometimes times out.

    Thread-safety: one consumer uses it; the instance survives restarts.
    """

    def __init__(self) -> None:
        self.attempts = 0
        self._timed_out: set[str] = set()

    def handle(self, event: Event) -> tuple[str, dict[str, Any]]:
        order = event.data
        self.attempts += 1
        if self.attempts % 11 == 3 and event.id not in self._timed_out:
            self._timed_out.add(event.id)
            raise GatewayTimeout(f"payment gateway timed out charging {order['order_id']}")
        if order["amount"] > CARD_LIMIT:
            return (
                "payment.failed",
                {**order, "reason": f"card declined: {order['amount']} > {CARD_LIMIT}"},
            )
        return ("payment.charged", {**order, "payment_id": f"pay-{order['order_id']}"})


def ship(event: Event) -> tuple[str, dict[str, Any]]:
    """Ships a paid order."""
    return ("order.shipped", {**event.data, "tracking": f"TRK{event.data['order_id'][2:]}"})


class OrderView:
    """The read model: each order's status, kept by a projection of every saga event.

    It also checks the saga's correlation: every event of one order must carry
    the correlation id of its ``order.placed``.

    Thread-safety: safe; the dashboard reads it while the projection writes.
    """

    def __init__(self, keep: int = 6) -> None:
        self._lock = threading.Lock()
        self._orders: dict[str, tuple[str, str | None]] = {}
        self._recent: collections.deque[str] = collections.deque(maxlen=keep)
        self.mismatched = 0

    def handle(self, event: Event) -> None:
        status = _STATUS.get(event.topic)
        if status is None:
            return
        order_id = event.data["order_id"]
        with self._lock:
            previous = self._orders.get(order_id)
            correlation = event.correlation_id if previous is None else previous[1]
            if previous is not None and event.correlation_id != correlation:
                self.mismatched += 1
            if previous is not None and previous[0] in _FINAL:
                return  # a late event must not reopen a finished order
            self._orders[order_id] = (status, correlation)
            if order_id in self._recent:
                self._recent.remove(order_id)
            self._recent.append(order_id)

    def counts(self) -> dict[str, int]:
        """How many orders are in each status."""
        with self._lock:
            return dict(collections.Counter(status for status, _ in self._orders.values()))

    def status(self, order_id: str) -> str | None:
        with self._lock:
            entry = self._orders.get(order_id)
            return entry[0] if entry is not None else None

    def render(self) -> RenderableType:
        """The live view: orders per status, and the latest orders with their correlation ids."""
        with self._lock:
            counts = collections.Counter(status for status, _ in self._orders.values())
            recent = [(order_id, *self._orders[order_id]) for order_id in reversed(self._recent)]
            mismatched = self.mismatched
        summary = Text()
        for status in ("placed", "reserved", "paid", "shipped", "cancelled", "rejected"):
            style = {"shipped": "green", "cancelled": "yellow", "rejected": "red"}.get(status, "")
            summary.append(f"{status} {counts.get(status, 0)}  ", style=style)
        summary.append(f"correlation mismatches {mismatched}", style="red" if mismatched else "dim")
        table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        table.add_column("order", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("correlation id", no_wrap=True, overflow="ellipsis", max_width=20)
        for order_id, status, correlation in recent:
            table.add_row(order_id, status, (correlation or "")[-12:])
        grid = Table.grid()
        grid.add_row(summary)
        grid.add_row(table)
        return grid


def build() -> Topology:
    """The orders topology: storefront, saga steps under one supervisor, a projection."""
    topo = Topology("orders")
    topo.channel("orders", capacity=2_000)
    topo.producer(
        "storefront",
        channel="orders",
        topic="order.placed",
        source=Storefront(),
        interval=PLACE_INTERVAL_S,
        key="order_id",
    )
    strategy = quick_restarts(max_restarts=50)
    with topo.supervisor("saga", strategy) as saga:
        saga.consumer(
            "inventory", Inventory(), channel="orders", pattern=("order.placed", "payment.failed")
        )
        saga.consumer(
            "payments",
            Payments(),
            channel="orders",
            pattern="stock.reserved",
            max_deliveries=3,
            failure_threshold=1,  # a gateway timeout restarts it: the demo shows supervision
        )
        saga.consumer("shipping", ship, channel="orders", pattern="payment.charged")
    topo.consumer("order-view", OrderView(), channel="orders", pattern="#", idempotent=True)
    return topo


def panels(topology: Topology) -> list[tuple[str, Callable[[], RenderableType]]]:
    """The read model's live view, for the dashboard."""
    for decl in topology.consumers():
        if isinstance(decl.handler, OrderView):
            return [("read model: orders (projection)", decl.handler.render)]
    return []
