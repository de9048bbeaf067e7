"""A stand-in of OpenAI's Batch API (the real one cannot be reached from these machines), served by
tests/support/fault_server.py beside its chat endpoint and answering from the same table.

It serves what the judge uses: `POST /v1/files` (multipart, purpose "batch"), `GET
/v1/files/{id}/content`, `POST /v1/batches`, `GET /v1/batches/{id}` and `POST
/v1/batches/{id}/cancel`. A batch moves through validating → in_progress → finalizing by the
clock and then ends as `outcome` says: completed, failed (at validation, no output), expired
(the first half of the requests answered) or cancelled (likewise, once cancel is asked). The
first batch also sends every `error_every`-th request to the error file and writes every
`malformed_every`-th output line as garbage; later batches (retries) complete cleanly.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

VALIDATING_S = 0.2
FINALIZING_S = 0.2
OUTCOMES = ("completed", "failed", "expired", "cancelled")


@dataclass(frozen=True)
class BatchBehaviour:
    seconds: float = 0.5  # in progress, before finalizing
    outcome: str = "completed"  # of the first batch; later ones complete
    error_every: int = 0
    malformed_every: int = 0

    def arguments(self) -> list[str]:
        return ["--batch-seconds", str(self.seconds), "--batch-outcome", self.outcome,
                "--batch-error-every", str(self.error_every), "--batch-malformed-every", str(self.malformed_every)]

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--batch-seconds", type=float, default=0.5, help="how long a batch stays in progress")
        parser.add_argument("--batch-outcome", choices=OUTCOMES, default="completed", help="how the first batch ends")
        parser.add_argument("--batch-error-every", type=int, default=0, help="first batch: every Nth request errors")
        parser.add_argument("--batch-malformed-every", type=int, default=0, help="first batch: every Nth line is garbage")

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> BatchBehaviour:
        return cls(args.batch_seconds, args.batch_outcome, args.batch_error_every, args.batch_malformed_every)


def add_batch_routes(
    app: web.Application,
    behaviour: BatchBehaviour,
    answer: Callable[[dict], dict],
    stats: Counter[str],
    expected_key: str | None,
) -> None:
    files: dict[str, dict] = {}
    batches: dict[str, dict] = {}
    ids = itertools.count(1)

    def unauthorized(request: web.Request) -> web.Response | None:
        if expected_key is not None and request.headers.get("Authorization") != f"Bearer {expected_key}":
            return web.json_response({"error": {"message": "bad key", "type": "auth"}}, status=401)
        return None

    def new_file(name: str, content: bytes, purpose: str) -> dict:
        file = {"id": f"file-{next(ids)}", "object": "file", "bytes": len(content), "created_at": int(time.time()),
                "filename": name, "purpose": purpose, "status": "processed"}
        files[file["id"]] = {**file, "content": content}
        return file

    async def upload(request: web.Request) -> web.Response:
        if (refused := unauthorized(request)) is not None:
            return refused
        form = await request.post()
        stats["file_uploads"] += 1
        upload = form["file"]
        return web.json_response(new_file(upload.filename, upload.file.read(), str(form["purpose"])))

    async def content(request: web.Request) -> web.Response:
        if (refused := unauthorized(request)) is not None:
            return refused
        file = files.get(request.match_info["file_id"])
        if file is None:
            return web.json_response({"error": {"message": "no such file", "type": "invalid_request_error"}}, status=404)
        return web.Response(body=file["content"], content_type="application/jsonl")

    async def create(request: web.Request) -> web.Response:
        if (refused := unauthorized(request)) is not None:
            return refused
        body = await request.json()
        stats["batch_submissions"] += 1
        lines = [json.loads(line) for line in files[body["input_file_id"]]["content"].decode().splitlines() if line]
        batch = {"id": f"batch_{next(ids)}", "object": "batch", "endpoint": body["endpoint"], "errors": None,
                 "input_file_id": body["input_file_id"], "completion_window": body["completion_window"],
                 "status": "validating", "output_file_id": None, "error_file_id": None,
                 "created_at": int(time.time()), "request_counts": {"total": len(lines), "completed": 0, "failed": 0}}
        first = stats["batch_submissions"] == 1
        batches[batch["id"]] = {"batch": batch, "lines": lines, "started": time.monotonic(), "cancelled": False,
                                "behaviour": behaviour if first else BatchBehaviour(seconds=behaviour.seconds)}
        return web.json_response(batch)

    async def retrieve(request: web.Request) -> web.Response:
        if (refused := unauthorized(request)) is not None:
            return refused
        entry = batches.get(request.match_info["batch_id"])
        if entry is None:
            return web.json_response({"error": {"message": "no such batch", "type": "invalid_request_error"}}, status=404)
        stats["batch_polls"] += 1
        _advance(entry, answer, new_file)
        return web.json_response(entry["batch"])

    async def cancel(request: web.Request) -> web.Response:
        if (refused := unauthorized(request)) is not None:
            return refused
        entry = batches[request.match_info["batch_id"]]
        entry["cancelled"] = True
        if entry["batch"]["status"] not in OUTCOMES:
            entry["batch"]["status"] = "cancelling"
        return web.json_response(entry["batch"])

    app.add_routes([
        web.post("/v1/files", upload),
        web.get("/v1/files/{file_id}/content", content),
        web.post("/v1/batches", create),
        web.get("/v1/batches/{batch_id}", retrieve),
        web.post("/v1/batches/{batch_id}/cancel", cancel),
    ])


def _advance(entry: dict, answer: Callable[[dict], dict], new_file: Callable[[str, bytes, str], dict]) -> None:
    """Move a batch along the real status sequence by the time since it was created."""
    batch, lines, behaviour = entry["batch"], entry["lines"], entry["behaviour"]
    if batch["status"] in OUTCOMES:
        return
    age = time.monotonic() - entry["started"]
    outcome = "cancelled" if entry["cancelled"] or behaviour.outcome == "cancelled" else behaviour.outcome
    if outcome == "failed" and age >= VALIDATING_S:
        batch["status"] = "failed"
        batch["errors"] = {"object": "list", "data": [{"code": "invalid_request", "message": "the stand-in refused it"}]}
        return
    if age < VALIDATING_S:
        return
    progress = min(1.0, (age - VALIDATING_S) / behaviour.seconds)
    batch["request_counts"]["completed"] = int(progress * len(lines))
    if progress < 1.0 and outcome == "completed":
        batch["status"] = "in_progress"
        return
    if age < VALIDATING_S + behaviour.seconds + FINALIZING_S and outcome == "completed":
        batch["status"] = "finalizing"
        return
    answered = lines if outcome == "completed" else lines[: len(lines) // 2]
    output, errors = [], []
    for number, line in enumerate(answered, start=1):
        if behaviour.error_every and number % behaviour.error_every == 0:
            errors.append(json.dumps({"id": f"req-{number}", "custom_id": line["custom_id"], "response": None,
                                      "error": {"code": "server_error", "message": "the stand-in failed this one"}}))
        elif behaviour.malformed_every and number % behaviour.malformed_every == 0:
            output.append('{"custom_id": "' + line["custom_id"] + '", "response": {"status_code": 200, "bo')
        else:
            output.append(json.dumps({"id": f"req-{number}", "custom_id": line["custom_id"], "error": None,
                                      "response": {"status_code": 200, "request_id": f"r{number}",
                                                   "body": answer(line["body"])}}))
    batch["status"] = outcome
    batch["request_counts"] = {"total": len(lines), "completed": len(output), "failed": len(errors)}
    if output:
        batch["output_file_id"] = new_file("output.jsonl", ("\n".join(output) + "\n").encode(), "batch_output")["id"]
    if errors:
        batch["error_file_id"] = new_file("errors.jsonl", ("\n".join(errors) + "\n").encode(), "batch_output")["id"]
