"""The scoring service: an inspection bundle behind a small HTTP API (FastAPI + uvicorn).

    POST /score   multipart field `file` (an image) -> {"verdict": "OK"|"NG"|"uncertain",
                  "aggregate": {"score", "threshold", "margin", "weights", "rule"},
                  "components": {name: {"score"}}, "size": [h, w], "sha256": ...};
                  `?heatmap=1` adds "heatmap_png": the aggregate map over the image, base64 PNG
    GET  /health  {"status": "ok", "pending", "max_pending"}
    GET  /bundle  what it scores with (the bundle's manifest summary)
    GET  /docs    OpenAPI docs (FastAPI)

One engine per process, loaded from the bundle once; scoring runs on one worker thread (the engine
is not parallel inside a process: scale out with more processes or `inspect --ray`). At most
`max_pending` requests wait or run at a time; the next one gets 503 at once rather than a timeout.
Bad input is a 4xx with a one-line `detail`, never a 500 with a traceback: no Content-Length (411),
a body over the size limit (413), not multipart or not an image type (415), an unreadable, corrupt or
odd-sized image (422, the message of `fsad_core.images`).
"""

import asyncio
import base64
import io
import time
from concurrent.futures import ThreadPoolExecutor

DEFAULT_MAX_UPLOAD_MB = 20.0
DEFAULT_MAX_PENDING = 8
IMAGE_PART_TYPES = ("image/", "application/octet-stream")


def score_payload(engine, data: bytes, heatmap: bool = False) -> dict:
    """Score image bytes with a bundle-loaded engine -> the service's JSON (module docstring).
    Raises fsad_core.images.ImageError for bytes that are not a usable image."""
    from .aggregate import effective_weights
    from .images import to_rgb_array

    rgb = to_rgb_array(data)
    result = engine.score(rgb)
    agg = result.aggregate()  # the bundle's weights
    b = engine.bundle
    out = {
        "verdict": b.verdict(agg.score),
        "aggregate": {"score": float(agg.score), "threshold": b.threshold, "margin": b.margin,
                      "weights": b.weights.name, "rule": b.weights.rule,
                      "effective_weights": effective_weights(b.weights, result.components)},
        "components": {k: {"score": float(v.score)} for k, v in result.components.items()},
        "size": list(result.size_hw), "sha256": result.query_sha256,
    }
    if heatmap:
        from PIL import Image

        from .overlay import overlay

        buf = io.BytesIO()
        Image.fromarray(overlay(rgb, agg.map)).save(buf, format="PNG")
        out["heatmap_png"] = base64.b64encode(buf.getvalue()).decode()
    return out


def _upload_refusal(headers, max_upload_bytes: int) -> tuple[int, str] | None:
    """(status, detail) refusing a POST /score from its headers alone, or None to let it through.

    >>> _upload_refusal({}, 1000)
    (411, 'send a Content-Length header (chunked uploads are not accepted)')
    >>> _upload_refusal({"content-length": "2000000"}, 1000000)[0]
    413
    >>> _upload_refusal({"content-length": "10", "content-type": "multipart/form-data; boundary=x"}, 1000) is None
    True
    """
    length = headers.get("content-length")
    if length is None:
        return 411, "send a Content-Length header (chunked uploads are not accepted)"
    try:
        n = int(length)
    except ValueError:
        return 400, f"bad Content-Length {length!r}"
    if n > max_upload_bytes:
        return 413, f"the upload is {n / 1e6:.1f} MB, over the {max_upload_bytes / 1e6:.1f} MB limit"
    ctype = headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        return 415, ("POST /score takes multipart/form-data with the image in the field "
                     f"'file' (got Content-Type {ctype or 'none'!r})")
    return None


def create_app(engine, *, max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 1e6),
               max_pending: int = DEFAULT_MAX_PENDING):
    """A FastAPI app serving `engine` (built by `Engine.from_bundle`: it carries `engine.bundle`)."""
    from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
    from fastapi.responses import JSONResponse

    from .images import ImageError

    if getattr(engine, "bundle", None) is None:
        raise ValueError("the service scores with an engine loaded from a bundle (Engine.from_bundle)")
    if max_pending < 1:
        raise ValueError("max_pending must be >= 1")
    app = FastAPI(title="fsad-studio scoring service", version="1",
                  description="Few-shot anomaly scoring with one inspection bundle (see docs/bundle.md).")
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fsad-score")
    state = {"pending": 0, "served": 0, "started": time.time()}

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        if request.method == "POST" and request.url.path == "/score":
            refusal = _upload_refusal(request.headers, max_upload_bytes)
            if refusal is not None:
                return JSONResponse({"detail": refusal[1]}, status_code=refusal[0])
        return await call_next(request)

    @app.exception_handler(Exception)
    async def internal(_request: Request, exc: Exception):  # never a traceback in a response
        return JSONResponse({"detail": f"internal error ({exc.__class__.__name__})"}, status_code=500)

    @app.get("/health")
    async def health():
        return {"status": "ok", "pending": state["pending"], "max_pending": max_pending, "served": state["served"],
                "uptime_s": round(time.time() - state["started"], 1)}

    @app.get("/bundle")
    async def bundle():
        return engine.bundle.summary()

    @app.post("/score")
    async def score(file: UploadFile = File(..., description="the image to score (PNG, JPEG, BMP, TIFF, WebP)"),
                    heatmap: bool = Query(False, description="add the aggregate heatmap as a base64 PNG")):
        ctype = (file.content_type or "application/octet-stream").lower()
        if not ctype.startswith(IMAGE_PART_TYPES):
            raise HTTPException(415, f"the 'file' part is {ctype}, not an image")
        if state["pending"] >= max_pending:
            raise HTTPException(503, f"busy: {state['pending']} requests already queued (limit {max_pending}); "
                                     "retry later", headers={"Retry-After": "1"})
        state["pending"] += 1
        try:
            data = await file.read()
            if len(data) > max_upload_bytes:
                raise HTTPException(413, f"the image is over the {max_upload_bytes / 1e6:.1f} MB limit")
            try:
                out = await asyncio.get_running_loop().run_in_executor(executor, score_payload, engine, data, heatmap)
            except ImageError as exc:
                raise HTTPException(422, str(exc)) from None
            state["served"] += 1
            return out
        finally:
            state["pending"] -= 1

    app.state.executor = executor
    return app
