#!/usr/bin/env python3
"""The demo's backend: answers every GET with "<name> from=<client address it saw>".

Usage: http-server.py NAME [PORT]   (run inside a pod's network namespace)
The source address tells the demo which path a request took (the client itself, the
service gateway's SNAT address, the VIP for a hairpin).
"""
import http.server
import sys

NAME = sys.argv[1]
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 8080


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("%s from=%s\n" % (NAME, self.client_address[0])).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
