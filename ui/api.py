"""A plain JSON API beside the page, on the same server: /api/ask, /api/status, /api/articles.

Every route calls the same Python API as the page and the CLI. With --auth, the routes take HTTP Basic
with the same user and password (401 otherwise); bodies are validated by pydantic (422 naming the field),
and the assistant's own errors come back as 400 {"error": ...}.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, File, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from assistant import Assistant
from assistant.config import K_RANGE
from assistant.errors import AssistantError, InputError
from assistant.loaders import MAX_FILE_BYTES, SUPPORTED_EXTENSIONS

MAX_UPLOADS = 10


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str | None = None
    answer: str | None = None
    role: str | None = None
    content: str | None = None


class AskBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str = Field(min_length=1)
    history: list[str | Turn] = Field(default_factory=list)
    k: int | None = Field(default=None, ge=K_RANGE[0], le=K_RANGE[1])
    answerer: str | None = None
    stream: bool = False


def basic_auth(credentials: tuple[str, str] | None):
    """A dependency that accepts only HTTP Basic with `credentials` (no check when None)."""

    def check(request: Request) -> None:
        if credentials is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        try:
            user, _, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            user = password = ""
        # bytes: compare_digest refuses non-ASCII str
        if scheme.lower() != "basic" or not (secrets.compare_digest(user.encode(), credentials[0].encode())
                                             & secrets.compare_digest(password.encode(), credentials[1].encode())):
            raise HTTPException(401, "HTTP Basic credentials required (the same as --auth).",
                                headers={"WWW-Authenticate": 'Basic realm="assistant"'})
        request.state.auth_ok = True  # the login throttle clears the client only on a checked success

    return check


def router(assistant: Assistant, credentials: tuple[str, str] | None = None,
           uploads: Path | None = None) -> APIRouter:
    api = APIRouter(prefix="/api", dependencies=[Depends(basic_auth(credentials))])

    @api.post("/ask")
    def ask(body: AskBody):
        history = [t if isinstance(t, str) else t.model_dump(exclude_none=True) for t in body.history]
        try:
            if body.stream:
                return StreamingResponse(_events(assistant, body, history), media_type="text/event-stream")
            return assistant.ask(body.question, history, k=body.k, answerer=body.answerer).to_dict()
        except InputError as exc:
            return JSONResponse({"error": str(exc), "field": exc.field}, status_code=400)
        except AssistantError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    @api.get("/status")
    def status():
        return assistant.status()

    @api.post("/articles")
    def articles(files: Annotated[list[UploadFile], File(description="articles: .txt, .md or .html")]):
        if len(files) > MAX_UPLOADS:
            return JSONResponse({"error": f"At most {MAX_UPLOADS} files per request."}, status_code=400)
        if uploads is not None:
            uploads.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="api-", dir=uploads) as tmp:
            paths = []
            for upload in files:
                name = Path(upload.filename or "").name
                if Path(name).suffix.lower() not in SUPPORTED_EXTENSIONS:
                    return JSONResponse({"error": f"{name or 'a file'}: only .txt, .md and .html articles can be "
                                                  "added."}, status_code=400)
                target = Path(tmp) / name
                with open(target, "wb") as out:
                    shutil.copyfileobj(upload.file, out, length=1 << 20)
                if target.stat().st_size > MAX_FILE_BYTES:
                    return JSONResponse({"error": f"{name}: over the {MAX_FILE_BYTES // 1024 // 1024} MB limit "
                                                  "for one article."}, status_code=400)
                paths.append(target)
            try:
                report = assistant.add_files(paths)
            except AssistantError as exc:
                return JSONResponse({"error": f"{exc} The index is unchanged."}, status_code=400)
        return {"added": report.added, "changed": report.changed, "embedded": report.embedded,
                "chunks": report.chunks, "documents": report.documents}

    return api


def install_error_handlers(app) -> None:
    """422 bodies that name the field, and never echo the input (it may hold lone surrogates or be huge)."""
    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_request: Request, exc: RequestValidationError):
        detail = [{"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": e.get("type")}
                  for e in exc.errors()]
        fields = sorted({d["loc"][1] for d in detail if len(d["loc"]) > 1})
        body = {"error": f"Invalid request body: {', '.join(fields) or 'body'}.", "field": ", ".join(fields),
                "detail": detail}
        return Response(json.dumps(body, ensure_ascii=True), status_code=422, media_type="application/json")


def _events(assistant: Assistant, body: AskBody, history: list):
    """Server-sent events: `data: {"text": piece}` as the answer comes, then `event: answer` with the JSON."""
    try:
        for item in assistant.stream(body.question, history, k=body.k, answerer=body.answerer):
            if isinstance(item, str):
                yield f"data: {json.dumps({'text': item}, ensure_ascii=False)}\n\n"
            else:
                yield f"event: answer\ndata: {json.dumps(item.to_dict(), ensure_ascii=False)}\n\n"
    except AssistantError as exc:
        yield f"event: error\ndata: {json.dumps({'error': str(exc)}, ensure_ascii=False)}\n\n"
