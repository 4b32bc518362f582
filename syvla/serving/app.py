"""The robot HTTP API as a FastAPI app around a `PolicyHost` (docs/serving.md).

    GET  /healthz                      liveness + current policy_version (no API key)
    GET  /v1/metadata                  embodiments (cameras, state/action dims), chunk_len, policy_version
    POST /v1/episodes                  -> {"episode_id", "policy_version"}
    POST /v1/act                       observation -> action chunk, policy_version, timing
    POST /v1/episodes/{id}/reward      {"reward": 0 | 1}

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
from fastapi.responses import Response

from syvla.serving import protocol
from syvla.serving.batching import NaturalBatcher
from syvla.serving.host import PolicyHost
from syvla.serving.protocol import ActRequest, ProtocolError

log = logging.getLogger(__name__)

ActFn = Callable[[ActRequest, float], Awaitable["dict | ProtocolError"]]


def create_app(host: PolicyHost, act: ActFn | None = None) -> FastAPI:
    """The app; `act(request, arrival)` defaults to natural batching in-process (no Ray)."""
    config = host.config
    if act is None:
        batcher = NaturalBatcher(host.act_batch_items, config.max_batch_size)

        async def act(req: ActRequest, arrived: float):
            return await batcher.submit((req, arrived))

    app = FastAPI(title="syvla policy server", docs_url=None, redoc_url=None, openapi_url=None)

    def reply(obj: dict, encoding: str, status: int = 200) -> Response:
        return Response(protocol.encode(obj, encoding), status_code=status, media_type=protocol.CONTENT_TYPES[encoding])

    def reply_error(err: ProtocolError, encoding: str) -> Response:
        return reply(err.to_dict(), encoding, err.status)

    def check_key(request: Request) -> None:
        if not config.api_key:
            return
        given = request.headers.get(protocol.API_KEY_HEADER, "")
        auth = request.headers.get("authorization", "")
        if not given and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not hmac.compare_digest(given.encode(), config.api_key.encode()):
            raise ProtocolError(401, protocol.API_KEY_HEADER, "missing or wrong API key")

    async def read_body(request: Request) -> bytes:
        limit = config.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise ProtocolError(400, "content-length", "not a non-negative integer")
            if int(length) > limit:
                raise ProtocolError(413, "body", f"{length} bytes exceeds the limit of {limit}")
        body = bytearray()
        async for chunk in request.stream():  # chunked uploads carry no length: count as they come
            body += chunk
            if len(body) > limit:
                raise ProtocolError(413, "body", f"more than the limit of {limit} bytes")
        return bytes(body)

    def handler(fn: Callable[[Request, str, str], Awaitable[Response]], needs_body: bool = True):
        """Negotiation, API key, size limit and error mapping shared by every /v1 route."""

        async def wrapped(request: Request) -> Response:
            enc = protocol.JSON
            try:
                req_enc = protocol.encoding_of(request.headers.get("content-type")) if needs_body else protocol.JSON
                enc = protocol.response_encoding(request.headers.get("accept"), req_enc)
                check_key(request)
                return await fn(request, req_enc, enc)
            except ProtocolError as err:
                return reply_error(err, enc)
            except Exception:  # a bug of ours: say so, keep serving
                log.exception("unhandled error on %s", request.url.path)
                return reply_error(ProtocolError(500, "", "internal server error"), enc)

        return wrapped

    @app.get("/healthz")
    async def healthz() -> Response:
        reason = host.health()
        body = {"status": "ok" if reason is None else reason, "policy_version": host.current_version}
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
        return reply(protocol.act_response(req.episode_id, out["actions"], out["policy_version"], out["latest_version"],
                                           out.get("cot"), req.step, timing, enc), enc)

    async def reward(request: Request, req_enc: str, enc: str) -> Response:
        obj = protocol.decode(await read_body(request), req_enc)
        episode_id = request.path_params["episode_id"]
        return reply(await asyncio.to_thread(host.post_reward, episode_id, obj), enc)

    app.add_api_route("/v1/metadata", handler(metadata, needs_body=False), methods=["GET"])
    app.add_api_route("/v1/episodes", handler(episodes), methods=["POST"])
    app.add_api_route("/v1/act", handler(act_route), methods=["POST"])
    app.add_api_route("/v1/episodes/{episode_id}/reward", handler(reward), methods=["POST"])
    return app
