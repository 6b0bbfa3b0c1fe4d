"""HTTP server of the dashboard and the REST API (aiohttp), in its own thread with its own event loop.

    web = WebServer(plane, host="127.0.0.1", port=8080).start()
    ...
    web.stop()

The control plane is reached only through its gRPC servicer (REST routes, `api.py`) and, for the
dashboard's extra views, `dashboard.py` under the service lock; both run on a small thread pool, so
a slow lock never stalls the event loop. `attach` swaps in a restarted control plane (SIGHUP in
`ejlb serve`): browsers stay logged in.

Every response carries a Content-Security-Policy that allows only this server's own scripts,
styles and connections (the pages use no inline script or style and no CDN), and denies framing.
Request bodies are bounded (MAX_BODY); an API response is never cached.
"""
from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

import grpc
from aiohttp import web

from ejlb.control import loadbalancer_pb2 as pb
from ejlb.control.errors import LBError
from ejlb.control.tokens import bearer_token
from ejlb.web import api, auth, dashboard, history

log = logging.getLogger("ejlb.web")

MAX_BODY = 64 * 1024  # bytes: the largest real request (256 senders, 64 grants) is a few kB
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY", "Cross-Origin-Opener-Policy": "same-origin",
}
STATIC = resources.files("ejlb.web") / "static"
VIEWS = (  # the dashboard's own endpoints (docs/rest.md), next to the gRPC mirror of api.ROUTES
    ("POST", "/api/v1/login", "_login"),
    ("POST", "/api/v1/logout", "_logout"),
    ("GET", "/api/v1/session", "_session"),
    ("GET", "/api/v1/system", "_system"),
    ("GET", "/api/v1/lbs/{lbId}/dashboard", "_lb_dashboard"),
)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)


class WebServer:
    def __init__(self, plane, host: str = "127.0.0.1", port: int = 0, tls_cert: str | None = None,
                 tls_key: str | None = None, sample_period: float | None = None):
        self.host, self.port = host, port
        self.tls = (tls_cert, tls_key) if tls_cert else None
        self.sessions = auth.Sessions()
        self.history = history.History()
        self.started = time.time()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ejlb-web")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._sessions_lock = threading.Lock()
        self.attach(plane)  # a started plane: its servicer exists
        self.sample_period = sample_period or plane.config.controller_period

    def attach(self, plane) -> None:
        """Serve this control plane from now on (a restarted one). Its gRPC servicer object answers
        the REST calls too: one refusal rate limit and one set of RPC metrics for both."""
        self.plane = plane
        self.servicer = plane.servicer

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    # -- life cycle -----------------------------------------------------------------------------
    def start(self) -> "WebServer":
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(ready, failure), name="ejlb-web", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._pool.shutdown(wait=False)
            raise OSError(f"http={self.host}:{self.port}: cannot serve ({failure[0]})") from failure[0]
        log.info("web dashboard on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            if thread.is_alive() and self._stopping is not None:
                self._loop.call_soon_threadsafe(self._stopping.set)
            thread.join(10)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, ready: threading.Event, failure: list) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve(ready, failure))
        finally:
            loop.close()

    async def _serve(self, ready: threading.Event, failure: list) -> None:
        self._stopping = asyncio.Event()
        try:
            ctx = None
            if self.tls:
                ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                ctx.load_cert_chain(*self.tls)
            self._runner = web.AppRunner(self.app(), access_log=log if log.isEnabledFor(logging.DEBUG) else None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.host, self.port, ssl_context=ctx, reuse_address=True)
            await site.start()
            self.port = self._runner.addresses[0][1]  # the real one when asked for 0
        except BaseException as e:  # bind failure, bad TLS files: reported by start()
            failure.append(e)
            if self._runner is not None:
                await self._runner.cleanup()
            ready.set()
            return
        ready.set()
        sampler = asyncio.ensure_future(self._sample())
        await self._stopping.wait()
        sampler.cancel()
        await self._runner.cleanup()

    async def _sample(self) -> None:
        """Counter history for the charts, once a period."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                plane = self.plane
                points = await loop.run_in_executor(self._pool, lambda: history.sample(
                    plane.service, plane.backend.counters(), time.time(), dashboard.node_counters(plane.backend)))
                self.history.add(points)
            except Exception:  # a missed sample is a gap in a chart, never a stopped server
                log.debug("counter sample failed", exc_info=True)
            await asyncio.sleep(self.sample_period)

    # -- application ----------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._headers, self._csrf])
        r = app.router
        r.add_get("/", self._index)
        r.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)
        for method, path, handler in VIEWS:
            r.add_route(method, path, getattr(self, handler))
        for route in api.ROUTES:
            r.add_route(route.method, route.path, self._rpc_handler(route))
        return app

    @web.middleware
    async def _headers(self, request: web.Request, handler):
        try:
            resp = await handler(request)
        except api.RPCAborted as e:
            resp = web.json_response(e.body(), status=e.http_status)
        except LBError as e:  # e.g. a token revoked between the check and the read
            resp = _error(api.HTTP_STATUS.get(e.code, 500), e.code.name, e.detail)
        except web.HTTPException as e:  # 404/405/413 from aiohttp: JSON on the API, with our headers
            resp = (_error(e.status, e.reason.upper().replace(" ", "_"), f"{request.method} {request.path}: {e.reason}")
                    if request.path.startswith("/api/") else web.Response(status=e.status, text=f"{e.status} {e.reason}"))
        except Exception:  # a bug: logged with its traceback, the client sees INTERNAL (as over gRPC)
            log.exception("%s %s failed", request.method, request.path)
            resp = _error(500, "INTERNAL", f"{request.method} {request.path}: internal error")
        resp.headers.update(SECURITY_HEADERS)
        if request.path.startswith("/api/"):
            resp.headers["Cache-Control"] = "no-store"
        return resp

    @web.middleware
    async def _csrf(self, request: web.Request, handler):
        session = None if "Authorization" in request.headers else self._cookie_session(request)
        scheme = "https" if self.tls else "http"
        why = auth.csrf_refusal(request.method, request.headers, session, {f"{scheme}://{request.host}"})
        if why is not None:
            return _error(403, "PERMISSION_DENIED", f"refused as a possible cross-site request: {why}")
        return await handler(request)

    def _cookie_session(self, request: web.Request) -> auth.WebSession | None:
        with self._sessions_lock:
            return self.sessions.get(request.cookies.get(auth.COOKIE), time.time())

    def _authorization(self, request: web.Request) -> list[str]:
        """The Authorization values for the servicer's metadata: the headers as sent (scripts;
        the servicer refuses two as it does over gRPC), else the cookie session's token
        (browsers), else none (UNAUTHENTICATED)."""
        if "Authorization" in request.headers:
            return request.headers.getall("Authorization")
        s = self._cookie_session(request)
        return [] if s is None else [f"Bearer {s.token}"]

    @staticmethod
    def _peer(request: web.Request) -> str:
        return f"http:{request.remote}"

    async def _body(self, request: web.Request) -> dict | None:
        if request.method in ("GET", "HEAD", "DELETE") or not request.can_read_body:
            return None
        try:
            body = json.loads(await request.read() or b"{}")
        except (ValueError, UnicodeDecodeError) as e:
            raise api.RPCAborted(grpc.StatusCode.INVALID_ARGUMENT, f"body: not JSON ({e})") from None
        if not isinstance(body, dict):
            raise api.RPCAborted(grpc.StatusCode.INVALID_ARGUMENT,
                                 f"body: a JSON object is expected, not {type(body).__name__}")
        return body

    async def _call(self, fn):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def _rpc_handler(self, route: api.Route):
        async def handler(request: web.Request) -> web.Response:
            body = await self._body(request)
            authz, peer = self._authorization(request), self._peer(request)
            query = list(request.query.items())
            return web.json_response(await self._call(
                lambda: api.call(self.servicer, route, authz, peer, dict(request.match_info), query, body)))
        return handler

    # -- pages and dashboard views --------------------------------------------------------------
    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(body=(STATIC / "index.html").read_bytes(), content_type="text/html")

    async def _login(self, request: web.Request) -> web.Response:
        body = await self._body(request) or {}
        token = body.get("token")
        if not isinstance(token, str) or not token:
            raise api.RPCAborted(grpc.StatusCode.INVALID_ARGUMENT, "token: a non-empty string is required")
        # the gRPC API's own authentication (and its audit of refused tokens)
        await self._call(lambda: api.call_rpc(self.servicer, "Version", pb.VersionRequest(),
                                              [f"Bearer {token}"], self._peer(request)))
        info = await self._call(lambda: dashboard.session_info(self.plane.service, token))
        with self._sessions_lock:
            self.sessions.drop(request.cookies.get(auth.COOKIE))
            sid, session = self.sessions.create(token, time.time())
        resp = web.json_response({**info, "csrf": session.csrf})
        resp.set_cookie(auth.COOKIE, sid, httponly=True, samesite="Strict", secure=bool(self.tls), path="/")
        return resp

    async def _logout(self, request: web.Request) -> web.Response:
        with self._sessions_lock:
            self.sessions.drop(request.cookies.get(auth.COOKIE))
        resp = web.json_response({})
        resp.del_cookie(auth.COOKIE, path="/")
        return resp

    async def _authorise(self, request: web.Request, rpc: str = "Version", msg=None) -> str:
        """The caller's token, checked by one gRPC API call (its status and audit as over gRPC)."""
        authz = self._authorization(request)
        await self._call(lambda: api.call_rpc(self.servicer, rpc, msg or pb.VersionRequest(), authz,
                                              self._peer(request)))
        return bearer_token([("authorization", v) for v in authz])  # well-formed: the call above parsed it

    async def _session(self, request: web.Request) -> web.Response:
        token = await self._authorise(request)
        info = await self._call(lambda: dashboard.session_info(self.plane.service, token))
        s = None if "Authorization" in request.headers else self._cookie_session(request)
        return web.json_response({**info, "csrf": s.csrf if s else None})

    async def _system(self, request: web.Request) -> web.Response:
        token = await self._authorise(request)
        return web.json_response(await self._call(lambda: dashboard.system_info(self.plane, self.started, token)))

    async def _lb_dashboard(self, request: web.Request) -> web.Response:
        lb_id = request.match_info["lbId"]
        # GetLoadBalancer: the same id validation, READ_ONLY check and 404 rule as gRPC
        token = await self._authorise(request, "GetLoadBalancer", pb.GetLoadBalancerRequest(lbId=lb_id))
        rid = int(lb_id)
        out = await self._call(lambda: dashboard.lb_details(self.plane.service, token, rid, self.history.get(rid)))
        if out is None:  # freed since the check
            raise api.RPCAborted(grpc.StatusCode.NOT_FOUND, f"lbId={lb_id!r}: no such reservation")
        return web.json_response(out)
