"""Small builders for test data shared by several test modules."""

from __future__ import annotations

from typing import Any

import pandas as pd

from integration_hub.tasks.extract import CATEGORY_LABELS, CLAIM_COLUMNS


def claims_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A claims DataFrame shaped like extract's output; unspecified fields get defaults."""
    defaults: dict[str, Any] = {
        "version": 1,
        "volunteer_id": 1,
        "category": "travel",
        "amount_ore": 10000,
        "distance_km": None,
        "description": "Tog til samling",
        "expense_date": "2026-01-10",
        "approved_date": "2026-01-12",
        "volunteer_name": "Kari Nordmann",
        "employee_number": "1001",
        "supplier_number": None,
        "chapter_code": "OSL",
        "chapter_name": "Oslo lokallag",
    }
    frame = pd.DataFrame([{**defaults, **row} for row in rows]).astype(CLAIM_COLUMNS)
    frame["category_label"] = frame["category"].map(CATEGORY_LABELS).astype("string")
    return frame
