"""Real Python upstreams for the attack table.

* a file server: Python's own http.server (SimpleHTTPRequestHandler) over a
  directory holding public/index.html and private/secret;
* a WSGI application under wsgiref, which, like every CGI/WSGI server, turns
  request headers into HTTP_* variables (X_Tally_Subject and X-Tally-Subject
  both become HTTP_X_TALLY_SUBJECT): it answers with the identity variables
  it was given and the path it resolved.

Further arguments name more WSGI upstreams of the same application, each
telling its name ("server") so that a test sees which upstream a request
was routed to.

Prints "files <port>", "wsgi <port>" and "<name> <port>" for each named
upstream, then serves until stdin closes.
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


def app(name):
    def serve(environ, start_response):
        seen = {k: v for k, v in environ.items() if k.startswith("HTTP_X_TALLY")}
        body = json.dumps({"server": name, "path": environ.get("PATH_INFO"),
                           "tally": seen}).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    return serve


servers = [("files", http.server.ThreadingHTTPServer(
    ("127.0.0.1", 0), functools.partial(Files, directory=root)))]
for name in ["wsgi"] + sys.argv[2:]:
    servers.append((name, make_server("127.0.0.1", 0, app(name), handler_class=Quiet)))
for name, server in servers:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(name, server.server_address[1], flush=True)
sys.stdin.read()
