"""Build localstripe's aiohttp app with the compatibility layer, and serve it on 127.0.0.1 only.

localstripe's own `start()` binds `::` (every interface) and reloads pickled state from /tmp;
neither is used here.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from aiohttp import web
from localstripe import server

from local.stripe_compat import controls, debits, patches
from local.stripe_compat.middleware import (
    auth_middleware,
    compat_middleware,
    patched_routes_middleware,
    rules_middleware,
)
from local.stripe_compat.process import HOST, READY_MESSAGE

DEFAULT_PORT = 8420  # localstripe's usual port


def build_app() -> web.Application:
    """localstripe's app (a module-level singleton) with the layer installed, once."""
    app = server.app
    if controls.STATE in app:
        return app
    patches.install()
    app[controls.STATE] = controls.CompatState()
    # Replaces localstripe's list: its auth is wrapped, and its save_store_middleware (a
    # pickle dump after every write) is dropped.
    app.middlewares.clear()
    app.middlewares.extend(
        [
            compat_middleware,
            server.error_middleware,
            auth_middleware,
            rules_middleware,
            patched_routes_middleware,
        ]
    )
    controls.add_routes(app)
    debits.add_routes(app, server.api_retrieve, server.api_extra)
    return app


async def serve(port: int) -> None:
    """Serve until SIGINT or SIGTERM; print the ready line once connections are accepted."""
    runner = web.AppRunner(build_app(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, HOST, port)
        await site.start()
        bound_port = runner.addresses[0][1]
        print(f"{READY_MESSAGE} http://{HOST}:{bound_port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m local.stripe_compat",
        description="localstripe with Stripe's semantics where the project needs them",
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="0 picks a free port (printed)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    # localstripe reports webhook deliveries on this logger, at INFO.
    logging.getLogger("aiohttp.access").setLevel(logging.INFO)
    asyncio.run(serve(args.port))
