"""A resource that checks fencing tokens: it accepts a write only with a token at least
the highest it has seen, so a former leader cannot overwrite its successor.

POST /write {"token": N, "writer": NAME} -> 200, or 409 with the highest token seen.
GET /log -> every write accepted and refused, in order.
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Lock
from typing import Any

highest = 0
log: list[dict[str, Any]] = []
lock = Lock()


class Handler(BaseHTTPRequestHandler):
    def reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        with lock:
            self.reply(200, log)

    def do_POST(self) -> None:
        global highest
        write = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with lock:
            accepted = write["token"] >= highest
            highest = max(highest, write["token"])
            log.append({**write, "accepted": accepted})
            self.reply(200 if accepted else 409, {"highest": highest, "accepted": accepted})

    def log_message(self, format: str, *args: Any) -> None:
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
