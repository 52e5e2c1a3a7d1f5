"""Orders: a saga with compensations, and CQRS read models kept by projections.

::

    storefront ──order.placed──▶ [orders]
      inventory   order.placed   → stock.reserved | order.rejected (+ stock.restocked)
      payments    stock.reserved → payment.charged | payment.failed
      shipping    payment.charged → order.shipped
      inventory   payment.failed → stock.released + order.cancelled   (the compensation)
      order-view  projection of every order event → each order's status (the read model)
      stock       projection of stock.* events    → stock per sku (what inventory decides on)

Every step returns ``(topic, data)`` pairs, which reactor turns into events
with ``event.derive``: each follow-up keeps the order's ``correlation_id`` and
points at its cause, so the read model can check that a whole saga shares one
correlation id. The payment gateway times out now and then on a first attempt:
``payments`` crashes, restarts, and the redelivered charge goes through.

No state lives in a handler: the read models are projections. Started with
``--backend sqlite:///orders.db`` they are checkpointed in that file, so the
demo stopped and started again shows the orders and the stock it had.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from reactor.demos.crashing import quick_restarts
from reactor.messages.event import Event
from reactor.runtime.system import System
from reactor.runtime.topology import Topology

__all__ = [
    "DESCRIPTION",
    "GatewayTimeout",
    "Inventory",
    "Payments",
    "Storefront",
    "build",
    "order_view",
    "panels",
    "render_view",
    "stock_levels",
]

DESCRIPTION = "order saga (stock, payment, shipping), compensations, CQRS read models"

PLACE_INTERVAL_S = 0.15
CARD_LIMIT = 250
START_STOCK = 12
RESTOCK = 10
KEEP_RECENT = 6
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
_SHOWN = ("placed", "reserved", "paid", "shipped", "cancelled", "rejected")


class GatewayTimeout(ConnectionError):
    """The (simulated) payment gateway did not answer in time."""


class Storefront:
    """Places an order each time it is polled.

    Order ids carry a tag of their run (``o-3fa-0007``), so a demo started again on
    its sqlite file places new orders rather than ones its read model has seen.
    """

    def __init__(self) -> None:
        self.placed = 0
        self.run = uuid.uuid4().hex[:3]

    def __call__(self) -> dict[str, Any]:
        self.placed += 1
        n = self.placed
        sku = list(_SKUS)[n % len(_SKUS)]
        qty = 1 + n % 3
        return {
            "order_id": f"o-{self.run}-{n:04d}",
            "customer": f"c-{n % 7}",
            "sku": sku,
            "qty": qty,
            "amount": _SKUS[sku] * qty,
        }


# -- the read models: pure folds, kept by projections ------------------------------------


def order_view(state: Mapping[str, Any], event: Event) -> dict[str, Any]:
    """Fold one order event into the read model: counts per status and the latest orders.

    Open orders are kept by id; a finished one leaves them (the counts keep it), so
    the state stays small however long the demo runs. Every event of one order
    must carry the correlation id of its ``order.placed``: ``mismatched`` counts
    those that do not.
    """
    status = _STATUS.get(event.topic)
    if status is None:
        return dict(state)
    order_id = event.data["order_id"]
    open_orders = dict(state.get("open", {}))
    counts = dict(state.get("counts", {}))
    recent = [entry for entry in state.get("recent", ()) if entry[0] != order_id]
    mismatched = state.get("mismatched", 0)
    previous = open_orders.get(order_id)
    if previous is None and any(entry[0] == order_id for entry in state.get("recent", ())):
        return dict(state)  # a late event must not reopen a finished order
    correlation = event.correlation_id if previous is None else previous[1]
    if previous is not None:
        counts[previous[0]] -= 1
        if event.correlation_id != correlation:
            mismatched += 1
    counts[status] = counts.get(status, 0) + 1
    if status in _FINAL:
        open_orders.pop(order_id, None)
    else:
        open_orders[order_id] = (status, correlation)
    recent.append((order_id, status, correlation))
    return {
        "open": open_orders,
        "counts": counts,
        "recent": tuple(recent[-KEEP_RECENT:]),
        "mismatched": mismatched,
    }


def stock_levels(state: Mapping[str, int], event: Event) -> dict[str, int]:
    """Fold a stock movement into the stock per sku (it starts at ``START_STOCK`` each)."""
    sku, qty = event.data["sku"], event.data["qty"]
    change = {"stock.reserved": -qty, "stock.released": qty, "stock.restocked": qty}
    return {**state, sku: state.get(sku, START_STOCK) + change.get(event.topic, 0)}


# -- the participants ----------------------------------------------------------------


class Inventory:
    """Reserves stock for placed orders; releases it when a payment fails (compensation).

    It decides on the ``stock`` projection (attached once the system runs), so it
    keeps no state of its own: a restart of the process loses nothing. Being a
    read model, the stock may lag behind the last reservation by the few
    milliseconds its projection takes to fold it.

    Thread-safety: one consumer calls ``handle``; ``attach`` may be called from any thread.
    """

    def __init__(self) -> None:
        self._system: System | None = None
        self._attached = threading.Event()

    def attach(self, system: System) -> None:
        """Read the stock from ``system``'s ``stock`` projection from now on."""
        self._system = system
        self._attached.set()

    def stock(self, sku: str) -> int:
        system = self._system
        if system is None:
            return START_STOCK
        return int(system.projection("stock").state.get(sku, START_STOCK))

    def handle(self, event: Event) -> list[tuple[str, dict[str, Any]]]:
        self._attached.wait(5.0)  # the first order may come before the demo attached it
        order = event.data
        sku, qty = order["sku"], order["qty"]
        if event.topic == "payment.failed":
            return [
                ("stock.released", {**order}),
                ("order.cancelled", {**order, "reason": order.get("reason", "payment failed")}),
            ]
        if self.stock(sku) < qty:
            # The warehouse restocks, too late for this order.
            return [
                ("stock.restocked", {"sku": sku, "qty": RESTOCK, "order_id": order["order_id"]}),
                ("order.rejected", {**order, "reason": f"out of stock: {sku}"}),
            ]
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
    tracking = "TRK" + event.data["order_id"][2:].replace("-", "")
    return ("order.shipped", {**event.data, "tracking": tracking})


# -- the topology and its panel --------------------------------------------------------


def build(backend: str = "memory") -> Topology:
    """The orders topology on ``backend`` (``memory``, or a ``sqlite://`` URL to keep it)."""
    topo = Topology("orders")
    topo.channel("orders", capacity=2_000, backend=backend)
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
    topo.projection("order-view", order_view, channel="orders", pattern="#")
    topo.projection("stock", stock_levels, channel="orders", pattern="stock.*")
    return topo


def panels(system: System) -> list[tuple[str, Callable[[], RenderableType]]]:
    """Attach the inventory to the running ``system``; the read model's live view."""
    for decl in system.topology.consumers():
        if isinstance(decl.handler, Inventory):
            decl.handler.attach(system)
    return [("read model: orders (projection)", lambda: render_view(system))]


def render_view(system: System) -> RenderableType:
    """The live view: orders per status, stock, and the latest orders with their correlation."""
    view = system.projection("order-view")
    state = view.state
    counts = state.get("counts", {})
    summary = Text()
    for status in _SHOWN:
        style = {"shipped": "green", "cancelled": "yellow", "rejected": "red"}.get(status, "")
        summary.append(f"{status} {counts.get(status, 0)}  ", style=style)
    mismatched = state.get("mismatched", 0)
    summary.append(f"mismatches {mismatched}", style="red" if mismatched else "dim")
    stock = system.projection("stock").state
    levels = Text("stock ", style="dim")
    for sku in _SKUS:
        levels.append(f"{sku} {stock.get(sku, START_STOCK)}  ")
    table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    table.add_column("order", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("correlation id", no_wrap=True, overflow="ellipsis", max_width=20)
    for order_id, status, correlation in reversed(state.get("recent", ())):
        table.add_row(order_id, status, (correlation or "")[-12:])
    grid = Table.grid()
    grid.add_row(summary)
    grid.add_row(levels)
    grid.add_row(table)
    return grid
