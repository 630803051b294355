"""Handlers for the UI's browser tests: an order fans out to items, each item to a
shipment, and one shipment always fails (so a grandchild is dead-lettered)."""

from __future__ import annotations

from typing import Any

from bridge import Context, Event


async def split(event: Event[Any], ctx: Context) -> dict[str, int]:
    """One ``order/item`` per sku of the order."""
    for sku in event.data["skus"]:
        ctx.emit("order/item", {"order": event.data["order"], "sku": sku})
    return {"items": len(event.data["skus"])}


async def pack(event: Event[Any], ctx: Context) -> None:
    """One ``order/ship`` per item."""
    ctx.emit("order/ship", {"order": event.data["order"], "sku": event.data["sku"]})


async def ship(event: Event[Any], ctx: Context) -> str:
    """Ships an item; the carrier refuses the sku ``bad`` every time."""
    if event.data["sku"] == "bad":
        raise RuntimeError(f"the carrier refused sku {event.data['sku']!r}")
    return "shipped"


async def noop(event: Event[Any], ctx: Context) -> None:
    """Does nothing: for runs that a flow control holds before they start."""


async def nap(event: Event[Any], ctx: Context) -> str:
    """Sleeps ten minutes durably, then says so."""
    await ctx.sleep("cool-off", "10m")
    return "rested"


async def take_batch(events: list[Event[Any]], ctx: Context) -> int:
    """Takes a batch of events."""
    return len(events)
