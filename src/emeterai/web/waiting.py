"""The waiting room's pages in the site's layout and languages: `/antrean` and `/status`.

The data comes from the admission package (issue 4): the queue view of the ticket in the
cookie, answered from memory, and the public status built from the shared store's
per-minute samples. Neither page touches the main database. URLs and template context
names (`view`, `refresh_s`, `next_path`, `status`) are those of `api/admission.py`.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from emeterai.web.pages import page_for, safe_next

router = APIRouter(include_in_schema=False)
TICKET_COOKIE = "emeterai_ticket"  # the admission middleware's cookie
REFRESH_MIN_S, REFRESH_MAX_S = 5, 60


def _ticket(request: Request, room: Any) -> Any:
    from emeterai.errors import EmeteraiError

    text = request.headers.get("x-queue-ticket") or request.cookies.get(TICKET_COOKIE)
    if not text:
        return None
    try:
        return room.keys.decode(text[:200], now_ms=int(time.time() * 1000))
    except EmeteraiError:
        return None


def _minutes(seconds: object) -> int:
    value = float(seconds) if isinstance(seconds, int | float) else 0.0
    return max(1, round(value / 60 + 0.49))


@router.get("/antrean")
async def queue_page(request: Request) -> Response:
    """Position and ETA; refreshes at the ticket's own pace, then carries the user on."""
    page = await page_for(request)
    room = request.app.state.waiting_room
    view = room.queue_view(_ticket(request, room))
    retry = view.get("retry_after_s")
    refresh = (
        min(REFRESH_MAX_S, max(REFRESH_MIN_S, retry))
        if isinstance(retry, int) and retry > 0
        else 30
    )
    next_path = safe_next(request.query_params.get("next"), default="/")[:200]
    if next_path.startswith("/antrean"):
        next_path = "/"
    return page.render(
        "admission_queue.html",
        {
            "view": view,
            "refresh_s": refresh,
            "next_path": next_path,
            "eta_minutes": _minutes(view.get("eta_s", view.get("new_arrival_eta_s", 0))),
            "new_eta_minutes": _minutes(view.get("new_arrival_eta_s", 0)),
        },
    )


async def service_status(request: Request) -> dict[str, Any]:
    """The same figures as `GET /api/v1/status`."""
    from emeterai.api.admission import cached_status

    return await cached_status(request)


@router.get("/status")
async def status_page(request: Request) -> Response:
    from datetime import datetime

    page = await page_for(request)
    status = await service_status(request)
    incidents = [
        {
            **incident,
            "started": datetime.fromisoformat(incident["started_at"]),
            "ended": datetime.fromisoformat(incident["ended_at"])
            if incident.get("ended_at")
            else None,
        }
        for incident in status["incidents"]
    ]
    return page.render(
        "admission_status.html",
        {
            "status": status,
            "incidents": incidents,
            "eta_minutes": _minutes(status["eta_s"]),
            "generated": datetime.fromisoformat(str(status["generated_at"])),
        },
    )
