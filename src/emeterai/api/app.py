"""`create_app(settings)`: the FastAPI application, wired explicitly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from emeterai.admission.settings import AdmissionSettings
from emeterai.api import problems
from emeterai.api.admission import AdmissionMiddleware, admission_lifespan
from emeterai.api.admission import router as admission_router
from emeterai.api.channels import router as channels_router
from emeterai.api.jobs import JOBS_PREFIX
from emeterai.api.jobs import router as jobs_router
from emeterai.api.limits import BodyLimit
from emeterai.api.logs import logs_off_the_loop
from emeterai.api.metrics import Metrics
from emeterai.api.routes import router
from emeterai.config import Settings
from emeterai.db import transaction
from emeterai.errors import AdmissionNotReady
from emeterai.jobs.config import JobSettings
from emeterai.runtime import build_runtime
from emeterai.stamping.signing import Signer, SigningPool
from emeterai.web.routes import router as web_router

RELEASE_INTERVAL_S = 15.0


async def _release_expired_forever(app: FastAPI) -> None:
    """Give back the quota of reservations whose stamping died with its process."""
    from emeterai.stamping.service import release_expired

    runtime = app.state.runtime

    def sweep() -> None:
        with transaction(runtime.sessions) as session:
            release_expired(session, now=runtime.clock.now())

    while True:
        await asyncio.sleep(RELEASE_INTERVAL_S)
        with suppress(Exception):  # a busy database is retried on the next round
            await run_in_threadpool(sweep)


def create_app(
    settings: Settings,
    *,
    signer: Signer | None = None,
    admission: AdmissionSettings | None = None,
) -> FastAPI:
    admission = admission or AdmissionSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = build_runtime(settings)
        pool = None if signer is not None else SigningPool(settings)
        app.state.runtime = runtime
        app.state.signer = signer or pool
        sweeper = asyncio.create_task(_release_expired_forever(app))
        try:
            # The waiting room ends first on shutdown, after uvicorn let admitted work finish.
            with logs_off_the_loop():
                async with admission_lifespan(app, settings, admission):
                    yield
        finally:
            sweeper.cancel()
            with suppress(asyncio.CancelledError):
                await sweeper
            if pool is not None:
                pool.close()
            runtime.close()

    app = FastAPI(
        title="emeterai",
        version="1",
        description="e-Meterai: stamp PDFs with the electronic stamp duty, and verify them.",
        lifespan=lifespan,
    )
    app.state.metrics = Metrics()
    problems.install(app)
    # The web pages first: they serve /status and /antrean in the site's layout.
    app.include_router(web_router)
    app.include_router(admission_router)
    app.include_router(router)
    app.include_router(channels_router)
    app.include_router(jobs_router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> dict[str, Any]:
        from sqlalchemy import text

        def ping() -> None:
            with app.state.runtime.engine.connect() as connection:
                connection.execute(text("SELECT 1"))

        await run_in_threadpool(ping)
        if not app.state.waiting_room.ticking():
            raise AdmissionNotReady("the admission store has not ticked within the last 5 s")
        return {"status": "ready"}

    # The waiting room decides before any body is read; the body limit, outermost, also
    # bounds what the waiting room drains from a refused upload.
    app.add_middleware(AdmissionMiddleware, admission=admission)
    app.add_middleware(
        BodyLimit,
        bytes_max=settings.upload_bytes_max,
        bytes_max_by_prefix={JOBS_PREFIX: JobSettings().bytes_max},
    )
    return app


def create_app_from_environment() -> FastAPI:
    """For `uvicorn --factory`: every worker process builds its own app from EMETERAI_*."""
    return create_app(Settings())
