"""Orders: a saga with compensations, and CQRS read models kept by projections.

::

    storefront ──order.placed──▶ [orders] ──▶ saga "order" (the $saga.order consumer)
      1 reserve   stock.reserve   → inventory  → .reply | .failed (out of stock)
                  stock.release   (its compensation)
      2 charge    payment.charge  → payments   → .reply | .failed (card declined)
                  payment.refund  (its compensation)
      3 ship      shipment.create → shipping   → .reply (or, now and then, no answer:
                                                 the step times out after SHIP_TIMEOUT_S)
      order-view  projection of the saga's commands and replies → each order's status
      stock       projection of reserve and release replies     → stock per sku

The saga sends each command with the order's data and waits for its reply; a
failed or timed-out step makes it compensate the steps done before it, in
reverse order (a timed-out shipment is refunded, then its stock released). The
payment gateway times out now and then on a first attempt: ``payments`` crashes,
restarts, and the redelivered charge goes through.

No state lives in a handler: the sagas are stored by their channel, the read
models are projections. Run with ``--backend sqlite:///orders.db``, stop it (or
kill it) while sagas are open and start it again: the read model is back, and
the open sagas resume where they were; one whose shipment was waiting is
compensated when its timeout (a delayed event kept in the file) falls due. The header
shows the sagas by state, and the read model the orders being undone.
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
    "ReadModelView",
    "Resumed",
    "Storefront",
    "build",
    "order_view",
    "panels",
    "render_view",
    "ship",
    "stock_levels",
]

DESCRIPTION = "order saga (stock, payment, shipping), compensations, CQRS read models"

PLACE_INTERVAL_S = 0.15
CARD_LIMIT = 250
START_STOCK = 12
RESTOCK = 10
KEEP_RECENT = 6
_SKUS = {"kettle": 40, "lamp": 65, "chair": 120, "desk": 210}
SHIP_TIMEOUT_S = 3.0
SILENT_COURIER = 9
_ORDER_FIELDS = ("order_id", "customer", "sku", "qty", "amount")
# The saga's commands and replies, as the read model names an order's status.
_STATUS = {
    "order.placed": "placed",
    "stock.reserve.reply": "reserved",
    "stock.reserve.failed": "rejected",
    "payment.charge.reply": "paid",
    "payment.charge.failed": "declined",
    "shipment.create.reply": "shipped",
    "payment.refund.reply": "refunded",
    "stock.release.reply": "cancelled",
}
# The last status an order gets: shipped, out of stock, or undone (its stock released).
_FINAL = ("shipped", "cancelled", "rejected")
_SHOWN = ("placed", "reserved", "paid", "refunded", "shipped", "cancelled", "rejected")
_STYLES = {
    "shipped": "green",
    "completed": "green",
    "cancelled": "yellow",
    "refunded": "yellow",
    "compensated": "yellow",
    "rejected": "red",
    "stuck": "red",
}


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
    """Fold one saga event into the read model: counts per status and the latest orders.

    Open orders are kept by id; a finished one leaves them (the counts keep it), so
    the state stays small however long the demo runs. Every event of one order
    must carry its saga's id (the ``order.placed`` event's) as correlation id:
    ``mismatched`` counts those that do not.
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
    saga = event.id if event.topic == "order.placed" else event.correlation_id
    if previous is not None:
        counts[previous[0]] -= 1
        if saga != previous[1]:
            mismatched += 1
    counts[status] = counts.get(status, 0) + 1
    if status in _FINAL:
        open_orders.pop(order_id, None)
    else:
        open_orders[order_id] = (status, saga if previous is None else previous[1])
    recent.append((order_id, status, saga))
    return {
        "open": open_orders,
        "counts": counts,
        "recent": tuple(recent[-KEEP_RECENT:]),
        "mismatched": mismatched,
    }


def stock_levels(state: Mapping[str, int], event: Event) -> dict[str, int]:
    """Fold a stock movement into the stock per sku (it starts at ``START_STOCK`` each)."""
    sku, qty = event.data["sku"], event.data["qty"]
    change = {"stock.reserve.reply": -qty, "stock.release.reply": qty, "stock.restocked": qty}
    return {**state, sku: state.get(sku, START_STOCK) + change.get(event.topic, 0)}


# -- the participants: each answers the saga's commands ------------------------------------


class Inventory:
    """Reserves stock for an order, or releases it (the compensation).

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

    def handle(self, event: Event) -> list[Event]:
        self._attached.wait(5.0)  # the first order may come before the demo attached it
        order = _order(event.data)
        sku, qty = order["sku"], order["qty"]
        if event.topic == "stock.release":
            return [event.reply(order)]
        if self.stock(sku) < qty:
            # The warehouse restocks, too late for this order.
            restock = event.derive("stock.restocked", {**order, "qty": RESTOCK})
            failed = event.reply(
                {**order, "reason": f"out of stock: {sku}"}, topic="stock.reserve.failed"
            )
            return [restock, failed]
        return [event.reply(order)]


class Payments:
    """Charges orders and refunds them; cards decline above a limit; the gateway times out.

    Thread-safety: one consumer uses it; the instance survives restarts.
    """

    def __init__(self) -> None:
        self.attempts = 0
        self._timed_out: set[str] = set()

    def handle(self, event: Event) -> Event:
        order = _order(event.data)
        if event.topic == "payment.refund":
            return event.reply(order)
        self.attempts += 1
        if self.attempts % 11 == 3 and event.id not in self._timed_out:
            self._timed_out.add(event.id)
            raise GatewayTimeout(f"payment gateway timed out charging {order['order_id']}")
        if order["amount"] > CARD_LIMIT:
            reason = f"card declined: {order['amount']} > {CARD_LIMIT}"
            return event.reply({**order, "reason": reason}, topic="payment.charge.failed")
        return event.reply({**order, "payment_id": f"pay-{order['order_id']}"})


def ship(event: Event) -> Event | None:
    """Books a courier for a paid order; one order in ``SILENT_COURIER`` gets no answer."""
    order = _order(event.data)
    number = int(order["order_id"].rsplit("-", 1)[1])
    if number % SILENT_COURIER == 0:
        return None  # the courier never answers: the saga's timeout compensates the order
    return event.reply({**order, "tracking": "TRK" + order["order_id"][2:].replace("-", "")})


def _order(data: Mapping[str, Any]) -> dict[str, Any]:
    """The order's own fields of a command's data (the saga's data holds more)."""
    return {key: data[key] for key in _ORDER_FIELDS}


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
    saga = topo.saga("order", channel="orders", start_on="order.placed")
    saga.step("reserve", action="stock.reserve", compensation="stock.release", timeout=5)
    saga.step("charge", action="payment.charge", compensation="payment.refund", timeout=5)
    saga.step("ship", action="shipment.create", timeout=SHIP_TIMEOUT_S)
    strategy = quick_restarts(max_restarts=50)
    with topo.supervisor("participants", strategy) as participants:
        participants.consumer(
            "inventory", Inventory(), channel="orders", pattern=("stock.reserve", "stock.release")
        )
        participants.consumer(
            "payments",
            Payments(),
            channel="orders",
            pattern=("payment.charge", "payment.refund"),
            failure_threshold=1,  # a gateway timeout restarts it: the demo shows supervision
        )
        participants.consumer("shipping", ship, channel="orders", pattern="shipment.create")
    topo.projection("order-view", order_view, channel="orders", pattern="#")
    topo.projection(
        "stock",
        stock_levels,
        channel="orders",
        pattern=("stock.reserve.reply", "stock.release.reply", "stock.restocked"),
    )
    return topo


def panels(system: System) -> list[tuple[str, Callable[[], RenderableType]]]:
    """Attach the inventory to the running ``system``; the read model's live view."""
    for decl in system.topology.consumers():
        if isinstance(decl.handler, Inventory):
            decl.handler.attach(system)
    return [("read model: orders (projection)", ReadModelView(system))]


class ReadModelView:
    """The read model's panel: called for the full view, ``summary()`` for one line.

    Thread-safety: the dashboard's thread draws it.
    """

    def __init__(self, system: System) -> None:
        self._system = system
        self._resumed = Resumed(system)

    def __call__(self) -> RenderableType:
        return render_view(self._system, self._resumed)

    def summary(self) -> Text:
        """``orders: shipped 31 cancelled 12 ...`` and the resumed sagas, on one line."""
        counts = self._system.projection("order-view").state.get("counts", {})
        line = self._resumed.line() or Text(no_wrap=True, overflow="ellipsis")
        line.append("  orders:" if line else "orders:", style="bold")
        for status in _SHOWN[3:]:
            line.append(f" {status} {counts.get(status, 0)}", style=_STYLES.get(status, ""))
        return line


class Resumed:
    """The sagas a start found open (a process stopped or killed mid-saga), and how they end.

    Thread-safety: the dashboard's thread calls :meth:`line`.
    """

    def __init__(self, system: System) -> None:
        self._system = system
        # (instance id, order id, the step it was at): what the store held at the start.
        self._open = [
            (record.id, str(record.data.get("order_id", "?")), record.step or "")
            for state in ("running", "compensating")
            for record in system.sagas("order", state=state)
        ]
        self._ends: dict[str, str] = {}

    def line(self) -> Text | None:
        """``resumed 2: o-a5f-0016 ship→compensated ...``; None if none was open at the start."""
        if not self._open:
            return None
        if len(self._ends) < len(self._open):  # read the store until each has ended
            now = {record.id: record.state for record in self._system.sagas("order")}
            for instance, _, _ in self._open:
                state = now.get(instance, "?")
                if state in ("completed", "compensated", "stuck"):
                    self._ends[instance] = state
        text = Text(f"resumed {len(self._open)}:", style="bold", no_wrap=True, overflow="ellipsis")
        for instance, order_id, step in self._open[:3]:
            end = self._ends.get(instance, "…")
            text.append(f" {order_id} {step}→")
            text.append(end, style=_STYLES.get(end, ""))
        return text


def render_view(system: System, resumed: Resumed | None = None) -> RenderableType:
    """The live view: orders per status, stock, resumed sagas, the latest orders and their saga."""
    state = system.projection("order-view").state
    counts = state.get("counts", {})
    summary = Text()
    for status in _SHOWN:
        style = _STYLES.get(status, "")
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
    table.add_column("saga", no_wrap=True, overflow="ellipsis", max_width=20)
    for order_id, status, saga in reversed(state.get("recent", ())):
        table.add_row(order_id, Text(status, style=_STYLES.get(status, "")), (saga or "")[-12:])
    grid = Table.grid()
    grid.add_row(summary)
    grid.add_row(levels)
    line = resumed.line() if resumed is not None else None
    if line is not None:
        grid.add_row(line)
    grid.add_row(table)
    return grid
