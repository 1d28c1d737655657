"""An ASGI app that builds the real one on first use.

``bentoml serve`` imports ``service.py`` in every process of the tree: the supervisor, each model
service and the API service. Only the API service answers HTTP with the FastAPI app, and building
it means importing FastAPI, the routes, the pipelines and their libraries (~0.5 s of CPU a
process). On a 2-core machine the processes start side by side, so each import the model
services skip brings the first answer closer. BentoML needs the app object when the service
class is declared; this stands in for it and builds the FastAPI app when the API service's
instance is created, before the app's lifespan starts.

Only this module's own imports (Starlette, which BentoML imports anyway) are paid everywhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send


class DeferredApp(Starlette):
    """Stands in for the app ``build`` returns (built once, on first use). A ``Starlette`` so
    that BentoML runs its lifespan, which is the built app's lifespan."""

    def __init__(self, build: Callable[[], Starlette]) -> None:
        super().__init__()
        self._build = build
        self._app: Starlette | None = None
        self.router.lifespan_context = self._lifespan

    @property
    def built(self) -> Starlette:
        if self._app is None:
            self._app = self._build()
        return self._app

    @property
    def routes(self) -> list[BaseRoute]:
        # What BentoML lists in a service's schema (``bentoml build``, /schema.json).
        return self.built.routes

    @contextlib.asynccontextmanager
    async def _lifespan(self, _: Starlette) -> AsyncIterator[None]:
        app = self.built
        async with app.router.lifespan_context(app):
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.built(scope, receive, send)
