"""The consoles: the issuer's and a sales channel's. Filled in as their domains land."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)
