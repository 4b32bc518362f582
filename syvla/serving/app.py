"""The robot HTTP API as a FastAPI app around a `PolicyHost` (docs/serving.md).

    GET  /healthz                      liveness + current policy_version (no API key)
    GET  /v1/metadata                  embodiments (cameras, state/action dims), chunk_len, policy_version
    POST /v1/episodes                  -> {"episode_id", "policy_version"}
    POST /v1/act                       observation -> action chunk, policy_version, timing
    POST /v1/episodes/{id}/reward      {"reward": 0 | 1}
    GET  /operator, /operator/api/*    the operator's reward page (syvla/serving/operator.py; needs a replay buffer)

A blind server (`ServeConfig.blind_checkpoints`, syvla/serving/blind.py) answers the same routes
without any policy version or timing.

Bodies are JSON or msgpack (Content-Type); replies follow Accept, else the
request's encoding. Every refusal is a 4xx whose body names the field:
`{"error": {"status", "field", "message"}}`.

`create_app(host)` serves in-process (tests, a laptop) with natural batching;
the Serve deployment passes its own `act` (`@serve.batch` in front of the same
batcher) so many robots share one `Policy.infer_batch` call.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from syvla.serving import operator, protocol
from syvla.serving.batching import NaturalBatcher
from syvla.serving.host import PolicyHost
from syvla.serving.metrics import ServingMetrics
from syvla.serving.protocol import ActRequest, ProtocolError

log = logging.getLogger(__name__)

ActFn = Callable[[ActRequest, float], Awaitable["dict | ProtocolError"]]


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return "transfer-encoding" in request.headers or (length is not None and length != "0")


def create_app(host: PolicyHost, act: ActFn | None = None, metrics: ServingMetrics | None = None) -> FastAPI:
    """The app; `act(request, arrival)` defaults to natural batching in-process (no Ray); `metrics` receives
    every answer (default: recorded nowhere)."""
    config = host.config
    metrics = metrics or ServingMetrics()
    if act is None:
        batcher = NaturalBatcher(host.act_batch_items, config.max_batch_size)

        async def act(req: ActRequest, arrived: float):
            return await batcher.submit((req, arrived))

    app = FastAPI(title="syvla policy server", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """Unknown routes (404) and wrong methods (405) answer in the documented error format too."""
        message = {404: f"no route {request.url.path!r}", 405: f"{request.method} not allowed on {request.url.path!r}"}
        err = ProtocolError(exc.status_code, "path" if exc.status_code == 404 else "method",
                            message.get(exc.status_code, str(exc.detail)), dict(exc.headers or {}))
        metrics.request("unknown" if exc.status_code == 404 else request.url.path, err.status, err.field)
        return reply_error(err, protocol.response_encoding(request.headers.get("accept"), protocol.JSON))

    def reply(obj: dict, encoding: str, status: int = 200) -> Response:
        return Response(protocol.encode(obj, encoding), status_code=status, media_type=protocol.CONTENT_TYPES[encoding])

    def reply_error(err: ProtocolError, encoding: str) -> Response:
        resp = reply(err.to_dict(), encoding, err.status)
        if err.status == 503 and "retry-after" not in err.headers:
            resp.headers["retry-after"] = "1"  # not loaded yet, replay down: the client backs off, then retries
        resp.headers.update(err.headers)
        return resp

    def check_key(request: Request) -> None:
        if not config.api_key:
            return
        given = request.headers.get(protocol.API_KEY_HEADER, "")
        auth = request.headers.get("authorization", "")
        if not given and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not hmac.compare_digest(given.encode(), config.api_key.encode()):
            raise ProtocolError(401, protocol.API_KEY_HEADER, "missing or wrong API key")

    slow_uploads = 0  # bodies past upload_grace_s being read now (one event loop: no lock needed)

    async def read_body(request: Request) -> bytes:
        """The whole body, within `body_timeout_s` (else 408); past `upload_grace_s` it needs one of
        `max_slow_uploads` slots (else 503 + Retry-After), so stalled clients cannot hold every request slot."""
        nonlocal slow_uploads
        limit = config.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise ProtocolError(400, "content-length", "not a non-negative integer")
            if int(length) > limit:
                raise ProtocolError(413, "body", f"{length} bytes exceeds the limit of {limit}")
        loop = asyncio.get_running_loop()
        start = loop.time()
        body, slot, pending = bytearray(), False, None
        try:
            while True:
                if pending is None:  # one receive at a time, never cancelled midway unless we give up
                    pending = asyncio.ensure_future(request.receive())
                until = start + (config.body_timeout_s if slot else config.upload_grace_s)
                done, _ = await asyncio.wait({pending}, timeout=max(0.0, until - loop.time()))
                if not done:
                    if slot:
                        raise ProtocolError(408, "body", f"body not received within {config.body_timeout_s} s",
                                            {"connection": "close"})
                    if slow_uploads >= config.max_slow_uploads:
                        raise ProtocolError(503, "body", f"{slow_uploads} slow uploads in progress; retry",
                                            {"retry-after": "1", "connection": "close"})
                    slow_uploads, slot = slow_uploads + 1, True
                    metrics.slow_uploads(slow_uploads)
                    continue
                message, pending = pending.result(), None
                if message["type"] == "http.disconnect":
                    raise ProtocolError(400, "body", "client disconnected before sending the whole body")
                body += message.get("body", b"")
                if len(body) > limit:  # chunked uploads carry no length: count as they come
                    raise ProtocolError(413, "body", f"more than the limit of {limit} bytes", {"connection": "close"})
                if not message.get("more_body", False):
                    return bytes(body)
        finally:
            if pending is not None:
                pending.cancel()
            if slot:
                slow_uploads -= 1
                metrics.slow_uploads(slow_uploads)

    def handler(route: str, fn: Callable[[Request, str, str], Awaitable[Response]], needs_body: bool = True):
        """Negotiation, API key, size limit, error mapping and metrics shared by every /v1 route."""

        async def wrapped(request: Request) -> Response:
            resp, field = await answer(request)
            metrics.request(route, resp.status_code, field)
            if host.replay is not None:
                metrics.replay(host.replay.bytes_written)
            return resp

        async def answer(request: Request) -> tuple[Response, str]:
            """The route's response and, for a refusal, the field it names."""
            enc = protocol.JSON
            try:
                req_enc = protocol.JSON
                if needs_body and (request.headers.get("content-type") or _has_body(request)):
                    req_enc = protocol.encoding_of(request.headers.get("content-type"))  # 415 when missing
                enc = protocol.response_encoding(request.headers.get("accept"), req_enc)
                check_key(request)
                return await fn(request, req_enc, enc), ""
            except ProtocolError as err:
                return reply_error(err, enc), err.field
            except Exception:  # a bug of ours: say so, keep serving
                log.exception("unhandled error on %s", request.url.path)
                return reply_error(ProtocolError(500, "", "internal server error"), enc), ""

        return wrapped

    @app.get("/healthz")
    async def healthz() -> Response:
        reason = host.health()
        body = {"status": "ok" if reason is None else reason}
        if not host.blind:
            body["policy_version"] = host.current_version
        metrics.request("/healthz", 200 if reason is None else 503)
        return reply(body, protocol.JSON, 200 if reason is None else 503)

    async def metadata(request: Request, req_enc: str, enc: str) -> Response:
        return reply(host.metadata(), enc)

    async def episodes(request: Request, req_enc: str, enc: str) -> Response:
        body = await read_body(request)
        obj = protocol.decode(body, req_enc) if body else {}
        return reply(await asyncio.to_thread(host.start_episode, obj), enc)

    async def act_route(request: Request, req_enc: str, enc: str) -> Response:
        arrived = time.monotonic()
        req = host.parse_act(protocol.decode(await read_body(request), req_enc))
        parsed = time.monotonic()
        out = await act(req, arrived)
        if isinstance(out, ProtocolError):
            raise out
        timing = dict(out["timing"], receive_ms=(parsed - arrived) * 1e3, server_ms=(time.monotonic() - arrived) * 1e3)
        metrics.act(timing, out["policy_version"])
        resp = protocol.act_response(req.episode_id, out["actions"], out["policy_version"], out["latest_version"],
                                     out.get("cot"), req.step, timing, enc)
        if "vlm_call" in out:
            resp["vlm_call"] = out["vlm_call"]
        if host.blind:  # neither the version nor its speed may tell the arms apart
            for key in ("policy_version", "latest_policy_version", "timing"):
                del resp[key]
            wait = config.blind_min_ms / 1e3 - (time.monotonic() - arrived)
            if wait > 0:
                await asyncio.sleep(wait)
        return reply(resp, enc)

    async def reward(request: Request, req_enc: str, enc: str) -> Response:
        obj = protocol.decode(await read_body(request), req_enc)
        episode_id = request.path_params["episode_id"]
        return reply(await asyncio.to_thread(host.post_reward, episode_id, obj), enc)

    routes = [("/v1/metadata", metadata, "GET", False), ("/v1/episodes", episodes, "POST", True),
              ("/v1/act", act_route, "POST", True), ("/v1/episodes/{episode_id}/reward", reward, "POST", True)]
    if host.replay is not None:
        routes += _operator_routes(host, reply, read_body)
        app.add_api_route("/operator", lambda: HTMLResponse(operator.page()), methods=["GET"])
    for route, fn, method, needs_body in routes:
        app.add_api_route(route, handler(route, fn, needs_body), methods=[method])
    return app


def _operator_routes(host: PolicyHost, reply, read_body) -> list:
    """The operator page's API (syvla/serving/operator.py) over this host's replay buffer."""
    index = operator.OperatorIndex(host.replay.root)
    window = host.config.undo_window_s

    async def listing(request: Request, req_enc: str, enc: str) -> Response:
        await asyncio.to_thread(index.refresh)
        return reply({"episodes": index.awaiting(), "labels_last_hour": index.labels_last_hour(),
                      "undo_window_s": window}, protocol.JSON)

    async def frame(request: Request, req_enc: str, enc: str) -> Response:
        q = request.query_params
        episode_id, camera, step = q.get("episode", ""), q.get("camera", ""), q.get("step", "")
        host.episode_version(episode_id)  # 404 for ids this server did not issue
        if not step.isdigit():
            raise ProtocolError(422, "step", "must be a step index")
        data, media = await asyncio.to_thread(index.frame, episode_id, int(step), camera)
        return Response(data, media_type=media, headers={"cache-control": "private, max-age=3600"})

    async def label(request: Request, req_enc: str, enc: str) -> Response:
        episode_id, reward = operator.parse_label(protocol.decode(await read_body(request), req_enc))
        out = await asyncio.to_thread(host.post_reward, episode_id, {"reward": reward}, operator.SOURCE, window)
        return reply(out, protocol.JSON)

    async def undo(request: Request, req_enc: str, enc: str) -> Response:
        episode_id, _ = operator.parse_label(protocol.decode(await read_body(request), req_enc), undo=True)
        host.episode_version(episode_id)
        await asyncio.to_thread(index.refresh)
        reward, source, until = index.last_label(episode_id)
        if reward is None or source != operator.SOURCE:
            raise ProtocolError(409, "episode_id", "the episode has no operator label to withdraw")
        if until is None or time.time() > until:
            raise ProtocolError(409, "episode_id", f"the label is older than the undo window ({window:g} s)")
        await asyncio.to_thread(host.withdraw_reward, episode_id, operator.SOURCE + "-undo")
        return reply({"episode_id": episode_id, "reward": None}, protocol.JSON)

    return [("/operator/api/episodes", listing, "GET", False), ("/operator/api/frame", frame, "GET", False),
            ("/operator/api/label", label, "POST", True), ("/operator/api/undo", undo, "POST", True)]
