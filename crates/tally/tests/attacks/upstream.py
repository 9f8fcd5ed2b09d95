"""Real Python upstreams for the attack table.

* a file server: Python's own http.server (SimpleHTTPRequestHandler) over a
  directory holding public/index.html and private/secret;
* a WSGI application under wsgiref, which, like every CGI/WSGI server, turns
  request headers into HTTP_* variables (X_Tally_Subject and X-Tally-Subject
  both become HTTP_X_TALLY_SUBJECT): it answers with the identity variables
  it was given and the path it resolved.

Prints "files <port>" and "wsgi <port>", then serves until stdin closes.
"""
import functools
import http.server
import json
import sys
import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

root = sys.argv[1]


class Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def app(environ, start_response):
    seen = {k: v for k, v in environ.items() if k.startswith("HTTP_X_TALLY")}
    body = json.dumps({"path": environ.get("PATH_INFO"), "tally": seen}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


files = http.server.ThreadingHTTPServer(
    ("127.0.0.1", 0), functools.partial(Files, directory=root))
wsgi = make_server("127.0.0.1", 0, app, handler_class=Quiet)
for server in (files, wsgi):
    threading.Thread(target=server.serve_forever, daemon=True).start()
print("files", files.server_address[1], flush=True)
print("wsgi", wsgi.server_address[1], flush=True)
sys.stdin.read()
