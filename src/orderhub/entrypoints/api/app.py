"""The FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from orderhub import __version__
from orderhub.bootstrap import Runtime
from orderhub.entrypoints.api import auth_routes, errors
from orderhub.entrypoints.api.auth import AUTHORIZE
from orderhub.entrypoints.api.audit_routes import build_audit_router
from orderhub.entrypoints.api.console import mount_console
from orderhub.entrypoints.api.dashboard_routes import build_dashboard_router
from orderhub.entrypoints.api.fulfillment_routes import build_fulfillment_router
from orderhub.entrypoints.api.job_routes import build_job_router
from orderhub.entrypoints.api.notification_routes import build_notification_router
from orderhub.entrypoints.api.operations_routes import build_operations_router
from orderhub.entrypoints.api.outbox_routes import build_outbox_router
from orderhub.entrypoints.api.routes import build_router
from orderhub.entrypoints.api.tracking_routes import build_tracking_router


def create_app(runtime: Runtime, *, workers: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.start(workers=workers)
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title="OrderHub 订单中枢",
        version=__version__,
        description="One canonical, deduplicated order store for every sales channel. Money is integer fen; times are ISO 8601 in Asia/Shanghai.",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
        lifespan=lifespan,
        dependencies=[AUTHORIZE],  # every route's access_policy line is checked (entrypoints/api/auth.py)
    )
    errors.install(app)
    # before build_router: its one-segment /webhooks/{channel} must not take /webhooks/wms/{name}
    app.include_router(build_fulfillment_router(runtime))
    app.include_router(build_router(runtime))
    app.include_router(build_audit_router(runtime))
    app.include_router(build_outbox_router(runtime))
    app.include_router(build_notification_router(runtime))
    app.include_router(build_tracking_router(runtime))
    app.include_router(build_dashboard_router(runtime))
    app.include_router(build_operations_router(runtime))
    app.include_router(build_job_router(runtime))
    auth_routes.install(app, runtime)  # last: logins and authentication; refuses a route without a policy line
    mount_console(app)  # the web console at / (its catch-all never matches /api/)
    app.state.runtime = runtime
    return app
