"""The on-demand (request-time) transformation, as a plain function.

Feast's `customer_ratios` view runs it in python mode (lists in, lists out) for training sets;
the online lookup runs the very same function on the looked-up values, skipping Feast's
per-request on-demand machinery, which cost more than the rest of a lookup together.
"""

from __future__ import annotations

from typing import Any

ON_DEMAND_INPUTS = ["revenue_12m", "seats", "sessions_per_week_4w", "active_users_4w"]


def ratios(inputs: dict[str, Any]) -> dict[str, Any]:
    """Per-seat revenue and per-user sessions (python mode: lists in, lists out)."""
    revenue = inputs["revenue_12m"]
    seats = inputs["seats"]
    sessions = inputs["sessions_per_week_4w"]
    users = inputs["active_users_4w"]
    return {
        "revenue_per_seat_12m": [
            float(r) / max(float(s), 1.0) if r is not None and s is not None else None
            for r, s in zip(revenue, seats, strict=True)
        ],
        "sessions_per_active_user_4w": [
            float(x) / float(u) if x is not None and u else None
            for x, u in zip(sessions, users, strict=True)
        ],
    }
