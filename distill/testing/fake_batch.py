"""A local stand-in for OpenAI's `/v1/files` and `/v1/batches`, answering like `FakeOpenAI` does online.

    server = FakeBatchAPI(expire_after={0: 5}, fail_every={0: 4}); base_url = server.start()
    ... distill generate --batch true --base_urls base_url ...; server.submitted[i] = custom_ids of batch i

Batch i moves validating -> in_progress -> final on successive `retrieve` calls (so clients must poll). Each request is
answered with the same completion `FakeOpenAI` gives the same request online (its content key is the custom_id), so a
batch run and an online run produce the same trace rows. Faults per batch index: `expire_after[i] = n` answers only
the first n requests and expires the batch (the rest get `batch_expired` in the error file, as OpenAI does);
`fail_every[i] = k` answers every k-th request with HTTP 500 in the error file (a partially failed batch);
`reject[i] = reason` fails batch i at validation (no output file).
"""

from __future__ import annotations

import itertools

import orjson
from aiohttp import web

from distill.testing.fake_openai import FakeOpenAI


class FakeBatchAPI(FakeOpenAI):
    def __init__(self, expire_after: dict[int, int] | None = None, fail_every: dict[int, int] | None = None,
                 reject: dict[int, str] | None = None, **kw):  # fmt: skip
        super().__init__(**kw)
        self.expire_after, self.fail_every, self.reject = expire_after or {}, fail_every or {}, reject or {}
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self.submitted: list[list[str]] = []  # custom_ids per batch, in creation order
        self._ids = itertools.count()

    def _app(self) -> web.Application:
        app = super()._app()
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{id}", self._file)
        app.router.add_get("/v1/files/{id}/content", self._content)
        app.router.add_post("/v1/batches", self._create)
        app.router.add_get("/v1/batches/{id}", self._retrieve)
        return app

    def _new_file(self, name: str, data: bytes, purpose: str) -> dict:
        fid = f"file-{next(self._ids)}"
        obj = {"id": fid, "object": "file", "bytes": len(data), "created_at": 0, "filename": name,
               "purpose": purpose, "status": "processed"}  # fmt: skip
        self.files[fid] = {"meta": obj, "data": data}
        return obj

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form["file"]
        return web.json_response(self._new_file(upload.filename, upload.file.read(), str(form["purpose"])))

    async def _file(self, request: web.Request) -> web.Response:
        f = self.files.get(request.match_info["id"])
        return web.json_response(f["meta"]) if f else web.json_response({"error": {"message": "no file"}}, status=404)

    async def _content(self, request: web.Request) -> web.Response:
        f = self.files.get(request.match_info["id"])
        if f is None:
            return web.json_response({"error": {"message": "no such file"}}, status=404)
        return web.Response(body=f["data"], content_type="application/octet-stream")

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("input_file_id") not in self.files or body.get("endpoint") != "/v1/chat/completions":
            return web.json_response({"error": {"message": "bad input_file_id or endpoint"}}, status=400)
        bid = f"batch_{len(self.batches)}"
        self.batches[bid] = {"id": bid, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                             "input_file_id": body["input_file_id"], "completion_window": body["completion_window"],
                             "status": "validating", "output_file_id": None, "error_file_id": None, "created_at": 0,
                             "request_counts": {"total": 0, "completed": 0, "failed": 0}, "_polls": 0}  # fmt: skip
        return web.json_response(self._public(bid))

    def _public(self, bid: str) -> dict:
        return {k: v for k, v in self.batches[bid].items() if not k.startswith("_")}

    async def _retrieve(self, request: web.Request) -> web.Response:
        bid = request.match_info["id"]
        if bid not in self.batches:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        b = self.batches[bid]
        b["_polls"] += 1
        if b["status"] == "validating":
            b["status"] = "in_progress"
        elif b["status"] == "in_progress":
            self._run(bid, int(bid.split("_")[1]))
        return web.json_response(self._public(bid))

    def _run(self, bid: str, index: int) -> None:
        b = self.batches[bid]
        lines = [orjson.loads(x) for x in self.files[b["input_file_id"]]["data"].splitlines() if x.strip()]
        self.submitted.append([x["custom_id"] for x in lines])
        if index in self.reject:
            b.update(status="failed", errors={"object": "list", "data": [{"code": "invalid", "message": self.reject[index],
                                                                          "line": 1}]})  # fmt: skip
            return
        out, err = [], []
        limit, every = self.expire_after.get(index), self.fail_every.get(index)
        for i, x in enumerate(lines):
            key, body = x["custom_id"], x["body"]
            line = {"id": f"batch_req_{i}", "custom_id": key, "response": None, "error": None}
            if limit is not None and i >= limit:
                line["error"] = {"code": "batch_expired", "message": "This request could not be executed before the "
                                 "completion window expired."}  # fmt: skip
                err.append(line)
            elif every and i % every == every - 1:
                line["response"] = {"status_code": 500, "request_id": f"req_{i}",
                                    "body": {"error": {"message": "internal error", "type": "server_error"}}}  # fmt: skip
                err.append(line)
            else:  # the online answer: same key, same body bytes, so the same content and usage
                prompt_tokens = len(orjson.dumps(body)) // 4
                completion = orjson.loads(self._completion(body["model"], key, "stop", prompt_tokens))
                line["response"] = {"status_code": 200, "request_id": f"req_{i}", "body": completion}
                out.append(line)
                self.answered_keys.append(key)
        dump = b"".join(orjson.dumps(x) + b"\n" for x in out), b"".join(orjson.dumps(x) + b"\n" for x in err)
        b["output_file_id"] = self._new_file(f"{bid}_output.jsonl", dump[0], "batch_output")["id"] if out else None
        b["error_file_id"] = self._new_file(f"{bid}_error.jsonl", dump[1], "batch_output")["id"] if err else None
        b["status"] = "expired" if limit is not None and limit < len(lines) else "completed"
        b["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(err)}
