"""A local stand-in for the Hugging Face Hub, for the download tests.

Serves repositories from folders with the hub's URL scheme and headers:
  HEAD/GET /{org}/{name}/resolve/{revision}/{file}
    small files: 200, ETag (git-style id), X-Repo-Commit
    *.safetensors: 302 to <absolute URL>/cdn/<sha256> (file storage is
                   another host on the real hub, so the HEAD must not follow
                   it), X-Linked-Etag = sha256, X-Linked-Size, X-Repo-Commit
                   (as for LFS files)
  a renamed repository (rename(old, new)): 307 with a relative Location,
    /{new}/resolve/{revision}/{file}, as the hub answers for every old name
  GET /cdn/<sha256>   the content; honours Range: bytes=N- (416 when N is
                      the size or more, as file storage answers)
Injected failures, chosen per repository:
  'private': 401 without "Authorization: Bearer <token>"
  'cut':     the first CDN transfer stops after half the bytes
  'badsum':  X-Linked-Etag is a wrong SHA-256
  'commit':  X-Repo-Commit is this string instead of a real commit
  'extra':   the CDN sends this many bytes more than X-Linked-Size says
  'slow':    every GET body takes about this many seconds (sent in 20 pieces),
             so that concurrent downloaders overlap
  'slow_cdn': the same for the CDN's bodies only (the LFS files)
  'nosize':  the HEAD answers carry neither X-Linked-Size nor Content-Length
  'moves_to': a second folder: `main` moves to its commit once config.json
             has been sent (the first commit stays reachable by its hash)
  'branches': more revision names for the commit (such as "refs/pr/1": as on
             the hub, a revision is one path segment, its '/' sent as %2F)
Unknown repo -> 404 RepoNotFound; unknown revision -> 404 RevisionNotFound;
unknown file -> 404 EntryNotFound.  `requests` records every path asked,
`sent` the body bytes sent per path.
"""
import hashlib
import os
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that stops a transfer on purpose (the 'extra' repo) resets
        # the connection: expected, not worth a traceback.
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


def _read_folder(folder):
    files = {}
    for name in os.listdir(folder):
        p = os.path.join(folder, name)
        if os.path.isfile(p) and not name.startswith("."):
            files[name] = open(p, "rb").read()
    return files


class Repo:
    def __init__(self, folder, private_token=None, cut=False, badsum=False, commit=None,
                 extra=0, slow=0.0, slow_cdn=0.0, nosize=False, moves_to=None, branches=()):
        self.files = _read_folder(folder)
        self.commit = commit or hashlib.sha1(folder.encode()).hexdigest()
        self.commits = {self.commit: self.files}   # commit -> files
        self.main = self.commit                    # what `main` points to now
        self.branches = set(branches)
        self.moves_to = None
        if moves_to:
            self.moves_to = hashlib.sha1(moves_to.encode()).hexdigest()
            self.commits[self.moves_to] = _read_folder(moves_to)
        self.private_token = private_token
        self.cut = cut
        self.badsum = badsum
        self.extra = extra
        self.slow = slow
        self.slow_cdn = slow_cdn
        self.nosize = nosize


class FakeHub:
    def __init__(self):
        self.repos = {}
        self.blobs = {}
        self.requests = []
        self.renames = {}
        self.away = {}
        self.cut_done = set()
        self.sent = Counter()
        self._sent_lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def send(self, code, headers=None, body=b"", slow=0.0, sized=True):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                if sized:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.write_body(body, slow)

            def write_body(self, body, slow):
                """Writes body (in 20 pieces over `slow` seconds when slow)."""
                step = max(1, -(-len(body) // 20)) if slow else max(1, len(body))
                for i in range(0, len(body), step):
                    if slow:
                        time.sleep(slow / 20)
                    self.wfile.write(body[i:i + step])
                    self.wfile.flush()
                    with hub._sent_lock:
                        hub.sent[self.path] += len(body[i:i + step])

            def do_HEAD(self):
                self.handle_any()

            def do_GET(self):
                self.handle_any()

            def handle_any(self):
                hub.requests.append((self.command, self.path))
                parts = self.path.split("/")
                if len(parts) == 3 and parts[1] == "cdn":
                    return self.cdn(parts[2])
                if len(parts) < 6 or parts[3] != "resolve":
                    return self.send(404, {"X-Error-Code": "RepoNotFound"})
                repo_id, rev, fname = parts[1] + "/" + parts[2], unquote(parts[4]), "/".join(parts[5:])
                if repo_id in hub.away:
                    loc = hub.away[repo_id]
                    return self.send(307, {"Location": loc}, b"Moved")
                if repo_id in hub.renames:
                    loc = "/" + hub.renames[repo_id] + "/" + "/".join(parts[3:])
                    return self.send(307, {"Location": loc}, b"Temporary Redirect. Redirecting to " + loc.encode())
                repo = hub.repos.get(repo_id)
                if repo is None:
                    return self.send(404, {"X-Error-Code": "RepoNotFound"}, b'{"error":"Repository not found"}')
                if repo.private_token and self.headers.get("Authorization") != "Bearer " + repo.private_token:
                    return self.send(401, {"X-Error-Code": "GatedRepo"}, b'{"error":"Access to this model is restricted"}')
                commit = repo.main if rev == "main" else repo.commit if rev in repo.branches else rev
                if commit not in repo.commits:
                    return self.send(404, {"X-Error-Code": "RevisionNotFound"})
                data = repo.commits[commit].get(fname)
                if data is None:
                    return self.send(404, {"X-Error-Code": "EntryNotFound"})
                h = {"X-Repo-Commit": commit}
                # 'nosize': no size in the HEAD's answer (the GET's has one)
                sized = not (repo.nosize and self.command == "HEAD")
                if fname.endswith(".safetensors"):
                    sha = hashlib.sha256(data).hexdigest()
                    hub.blobs[sha] = (repo, fname, data)
                    etag = ("0" * 64) if repo.badsum else sha
                    h.update({"X-Linked-Etag": f'"{etag}"', "Location": f"{hub.url}/cdn/{sha}",
                              "ETag": '"lfs-pointer"'})
                    if sized:
                        h["X-Linked-Size"] = str(len(data))
                    return self.send(302, h, sized=sized)
                h["ETag"] = '"' + hashlib.sha1(data).hexdigest() + '"'
                self.send(200, h, data, slow=repo.slow, sized=sized)
                if fname == "config.json" and self.command == "GET" and repo.moves_to:
                    repo.main = repo.moves_to       # `main` moves after the first file

            def cdn(self, sha):
                blob = hub.blobs.get(sha)
                if blob is None:
                    return self.send(404)
                repo, fname, data = blob
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes=") and rng.endswith("-"):
                    start = int(rng[6:-1])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = data[start:] + b"\0" * repo.extra
                code = 206 if start else 200
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if self.command == "HEAD":
                    return
                if repo.cut and sha not in hub.cut_done:
                    hub.cut_done.add(sha)
                    self.write_body(body[: len(body) // 2], 0)
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.write_body(body, repo.slow_cdn or repo.slow)

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, repo_id, folder, **kw):
        self.repos[repo_id] = Repo(folder, **kw)
        return self.repos[repo_id]

    def redirect_away(self, repo_id, location):
        """Every URL of repo_id answers 307 to `location` (verbatim, no ETag)."""
        self.away[repo_id] = location

    def rename(self, old, new):
        """Requests for `old` are redirected (307, relative) to `new`."""
        self.renames[old] = new

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
