"""What Python's http.server serves for each request target: reads a JSON
list of targets on stdin and prints a JSON list of the paths
SimpleHTTPRequestHandler.translate_path resolves them to, relative to the
served directory (null where it raises)."""
import http.server
import json
import sys

ROOT = "/srv/www"
handler = http.server.SimpleHTTPRequestHandler.__new__(
    http.server.SimpleHTTPRequestHandler)
handler.directory = ROOT
out = []
for target in json.load(sys.stdin):
    try:
        path = handler.translate_path(target)
        out.append(path[len(ROOT):] or "/")
    except Exception:
        out.append(None)
json.dump(out, sys.stdout)
