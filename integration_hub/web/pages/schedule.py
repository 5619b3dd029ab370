"""Placeholder router, filled in by the schedule screen."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)
