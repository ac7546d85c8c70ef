#!/usr/bin/env python3
"""A webhook receiver for trying Orderly locally: answers every POST with 200 and prints the
delivery's id, its signature header and its body, one delivery per block.

    python3 scripts/webhook-receiver.py 9000     # then subscribe http://127.0.0.1:9000/hooks

Deliveries to loopback addresses need WEBHOOK_ALLOWLIST=127.0.0.0/8 in .env (scripts/run.sh
sets it when it creates .env); production delivers to public addresses only.
"""

import http.server
import sys


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        print(
            f"webhook-id: {self.headers.get('webhook-id')}\n"
            f"webhook-signature: {self.headers.get('webhook-signature')}\n"
            f"{body.decode(errors='replace')}\n",
            flush=True,
        )
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_):
        pass  # the deliveries are the output


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    print(f"receiving webhooks on http://127.0.0.1:{port}/hooks", flush=True)
    http.server.HTTPServer(("127.0.0.1", port), Receiver).serve_forever()
