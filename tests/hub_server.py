"""A small in-memory Hugging Face Hub on 127.0.0.1, speaking enough of the HTTP API for huggingface_hub 2.x.

Covers what `HfApi.create_repo`, `create_branch`, `upload_folder` / `create_commit` (preupload, LFS batch + basic
PUT transfer, NDJSON commit), `list_repo_tree`, `get_paths_info`, `model_info` and `hf_hub_download` (HEAD + GET on
`resolve`) send. Files above the LFS rules go through the LFS path; the client must run with Xet disabled
(`HF_HUB_DISABLE_XET=1`), as a Hub without Xet storage would require. Errors carry the Hub's `X-Error-Code` headers so
that huggingface_hub raises its usual exceptions. `fail_with(status, path_pattern)` makes requests answer an error;
`stop()` closes the sockets (connection refused) and `start()` brings the same Hub back on the same port.
"""

import base64
import fnmatch
import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt")
LFS_MIN_SIZE = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS).encode()


def git_blob_sha1(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass(frozen=True)
class Blob:
    content: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def oid(self) -> str:
        """What the Hub reports as the file's oid / ETag: sha256 for LFS files, the git blob sha1 otherwise."""
        return self.sha256 if self.lfs else git_blob_sha1(self.content)


@dataclass
class Commit:
    oid: str
    message: str
    files: dict[str, Blob]
    parent: str | None = None


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        oid = self.branches.get(revision, revision)
        return self.commits.get(oid)

    def add_commit(self, branch: str, message: str, files: dict[str, Blob]) -> Commit:
        parent = self.branches.get(branch)
        digest = hashlib.sha1(f"{self.repo_id}\n{parent}\n{message}\n{len(self.commits)}".encode())
        for path in sorted(files):
            digest.update(f"{path}:{files[path].oid}\n".encode())
        commit = Commit(digest.hexdigest(), message, files, parent)
        self.commits[commit.oid] = commit
        self.branches[branch] = commit.oid
        return commit

    def history(self, branch: str = "main") -> list[Commit]:
        """Commits of `branch`, oldest first."""
        chain, oid = [], self.branches.get(branch)
        while oid is not None:
            chain.append(self.commits[oid])
            oid = self.commits[oid].parent
        return chain[::-1]


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class FakeHub:
    """The Hub's state plus an HTTP server in a daemon thread. Use as a context manager or call start()/stop()."""

    def __init__(self, user: str = "test-user"):
        self.user = user
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[dict] = []  # method, path, authorization of every request
        self.failure: tuple[int, str] | None = None
        self.commit_gate: threading.Event | None = None  # commits wait until it is set (a slow Hub)
        self._port = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._connections: set[socket.socket] = set()

    # ---- lifecycle ----
    def start(self) -> "FakeHub":
        """Serve on 127.0.0.1; after a stop(), on the same port again (the Hub "comes back", state intact)."""
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), _make_handler(self))
        self._port = self._server.server_address[1]
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the listening socket and every kept-alive connection: clients then get connection errors."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for connection in list(self._connections):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def fail_with(self, status: int | None, path_pattern: str = "") -> None:
        """Answer requests whose path contains a match of `path_pattern` (all by default) with `status` (e.g. 500);
        `fail_with(None)` heals."""
        self.failure = None if status is None else (status, path_pattern)

    # ---- inspection helpers for tests ----
    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        commit = self.repos[repo_id].resolve(revision)
        return {path: blob.content for path, blob in commit.files.items()}

    def commit_messages(self, repo_id: str, branch: str = "main") -> list[str]:
        return [c.message for c in self.repos[repo_id].history(branch)]

    # ---- API ----
    def handle(self, method: str, path: str, query: dict, body: bytes):
        """Returns (status, headers, body bytes or JSON-able object)."""
        if path == "/api/whoami-v2":
            return 200, {}, {"type": "user", "name": self.user, "orgs": [], "auth": {"type": "access_token"}}
        if path == "/api/validate-yaml":
            return self._validate_yaml(json.loads(body)["content"])
        if path == "/api/repos/create" and method == "POST":
            return self._create_repo(json.loads(body))
        if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path):
            return 200, {}, self._model_info(self._repo(match[1]), unquote(match[2] or "main"))
        actions = "preupload|commit|branch|tree|paths-info"
        if match := re.fullmatch(rf"/api/models/([^/]+/[^/]+)/({actions})/([^/]+)(/.*)?", path):
            repo, action, revision = self._repo(match[1]), match[2], unquote(match[3])
            if action == "branch" and method == "POST":
                return self._create_branch(repo, revision, json.loads(body or b"{}"))
            if action == "commit":
                return self._commit(repo, revision, body)
            commit = repo.resolve(revision)
            if commit is None:
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            if action == "preupload":
                return 200, {}, self._preupload(commit, json.loads(body))
            if action == "tree":
                folder = unquote(match[4] or "").strip("/")
                recursive = query.get("recursive", ["false"])[0].lower() in ("true", "1")
                return 200, {}, self._tree(commit, folder, recursive)
            paths = parse_qs(body.decode()).get("paths", []) if body else []
            return 200, {}, [e for e in self._tree(commit, "", True) if e["path"] in paths]
        if match := re.fullmatch(r"/([^/]+/[^/]+)\.git/info/lfs/objects/batch", path):
            self._repo(match[1])
            return 200, {"Content-Type": "application/vnd.git-lfs+json"}, self._lfs_batch(json.loads(body))
        if (match := re.fullmatch(r"/_lfs/([0-9a-f]{64})", path)) and method == "PUT":
            return self._lfs_store(match[1], body)
        if match := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            return self._resolve(self._repo(match[1]), unquote(match[2]), unquote(match[3]), method)
        raise HubError(404, f"FakeHub does not serve {method} {path}")

    @staticmethod
    def _validate_yaml(readme: str):
        """The Hub parses a README's metadata block before a commit that changes it."""
        if not readme.startswith("---"):
            return 200, {}, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]}
        try:
            yaml.safe_load(readme.split("---")[1])
        except yaml.YAMLError as error:
            return 400, {}, {"errors": [{"message": str(error)}], "warnings": []}
        return 200, {}, {"errors": [], "warnings": []}

    def _repo(self, repo_id: str) -> Repo:
        if repo_id not in self.repos:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return self.repos[repo_id]

    def _create_repo(self, payload: dict):
        repo_id = f"{payload.get('organization') or self.user}/{payload['name']}"
        url = f"{self.url}/{repo_id}"
        if repo_id in self.repos:
            return 409, {}, {"error": "You already created this model repo", "url": url}
        repo = Repo(repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private")))
        repo.add_commit("main", "initial commit", {".gitattributes": Blob(GITATTRIBUTES, lfs=False)})
        self.repos[repo_id] = repo
        return 200, {}, {"url": url, "name": repo_id}

    def _create_branch(self, repo: Repo, branch: str, payload: dict):
        if branch in repo.branches:
            return 409, {}, {"error": f"Reference already exists: refs/heads/{branch}"}
        start = repo.resolve(payload.get("startingPoint") or "main")
        repo.branches[branch] = start.oid
        return 200, {}, {}

    def _model_info(self, repo: Repo, revision: str) -> dict:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return {
            "_id": repo.repo_id, "id": repo.repo_id, "modelId": repo.repo_id, "sha": commit.oid,
            "private": repo.private, "disabled": False, "gated": False, "tags": [], "downloads": 0, "likes": 0,
            "siblings": [{"rfilename": path} for path in sorted(commit.files)],
        }

    @staticmethod
    def _is_lfs(path: str, size: int) -> bool:
        return size >= LFS_MIN_SIZE or any(fnmatch.fnmatch(path.rsplit("/", 1)[-1], p) for p in LFS_PATTERNS)

    def _preupload(self, commit: Commit, payload: dict) -> dict:
        files = []
        for item in payload["files"]:
            existing = commit.files.get(item["path"])
            files.append({
                "path": item["path"],
                "uploadMode": "lfs" if self._is_lfs(item["path"], item["size"]) else "regular",
                "shouldIgnore": False,
                "oid": existing.oid if existing else None,
            })
        return {"files": files, "commitOid": commit.oid}

    def _lfs_batch(self, payload: dict) -> dict:
        objects = []
        for obj in payload["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.lfs_objects:
                entry["actions"] = {"upload": {"href": f"{self.url}/_lfs/{obj['oid']}", "header": {}}}
            objects.append(entry)
        return {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}

    def _lfs_store(self, oid: str, body: bytes):
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, "LFS object does not match its oid")
        self.lfs_objects[oid] = body
        return 200, {}, b""

    def _commit(self, repo: Repo, branch: str, body: bytes):
        if branch not in repo.branches:
            raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        files = dict(repo.resolve(branch).files)
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "file":
                files[value["path"]] = Blob(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                if value["oid"] not in self.lfs_objects:
                    raise HubError(422, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                files[value["path"]] = Blob(self.lfs_objects[value["oid"]], lfs=True)
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: b for p, b in files.items() if not p.startswith(prefix)}
        commit = repo.add_commit(branch, header["summary"], files)
        return 200, {}, {
            "success": True, "commitOid": commit.oid, "commitUrl": f"{self.url}/{repo.repo_id}/commit/{commit.oid}",
            "pullRequestUrl": None,
        }

    @staticmethod
    def _tree(commit: Commit, folder: str, recursive: bool) -> list[dict]:
        prefix = f"{folder}/" if folder else ""
        entries, folders = [], set()
        for path, blob in sorted(commit.files.items()):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):]
            parts = rest.split("/")
            for depth in range(1, len(parts)):
                if recursive or depth == 1:
                    folders.add(prefix + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                entry = {"type": "file", "path": path, "size": len(blob.content), "oid": git_blob_sha1(blob.content)}
                if blob.lfs:
                    entry["lfs"] = {"oid": blob.sha256, "size": len(blob.content), "pointerSize": 134}
                entries.append(entry)
        if folder and not entries and not folders:
            raise HubError(404, f"{folder} does not exist", "EntryNotFound")
        directories = [
            {"type": "directory", "path": f, "oid": hashlib.sha1(f.encode()).hexdigest()} for f in sorted(folders)
        ]
        return directories + entries

    @staticmethod
    def _resolve(repo: Repo, revision: str, path: str, method: str):
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        blob = commit.files.get(path)
        if blob is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        headers = {
            "X-Repo-Commit": commit.oid, "ETag": f'"{blob.oid}"', "Content-Type": "application/octet-stream",
            "Content-Length": str(len(blob.content)),
        }
        return 200, headers, b"" if method == "HEAD" else blob.content


def _make_handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            hub._connections.add(self.connection)

        def finish(self):
            hub._connections.discard(self.connection)
            super().finish()

        def log_message(self, *args):  # keep test output quiet
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline().strip():  # trailers, then the blank line
                    pass
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _serve(self, method: str) -> None:
            body = self._body() if method in ("POST", "PUT") else b""
            parts = urlsplit(self.path)
            authorization = self.headers.get("Authorization")
            hub.requests.append({"method": method, "path": parts.path, "authorization": authorization})
            if hub.commit_gate is not None and "/commit/" in parts.path:
                hub.commit_gate.wait(timeout=60)
            try:
                if hub.failure is not None and re.search(hub.failure[1], parts.path):
                    raise HubError(hub.failure[0], f"FakeHub was told to fail {hub.failure[1] or 'every request'}")
                with hub._lock:
                    status, headers, payload = hub.handle(method, parts.path, parse_qs(parts.query), body)
            except HubError as err:
                status, payload = err.status, {"error": err.message}
                headers = {"X-Error-Code": err.code} if err.code else {}
                headers["X-Error-Message"] = err.message
            if not isinstance(payload, bytes):
                payload = json.dumps(payload).encode()
                headers.setdefault("Content-Type", "application/json")
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(payload)

        def do_GET(self):
            self._serve("GET")

        def do_HEAD(self):
            self._serve("HEAD")

        def do_POST(self):
            self._serve("POST")

        def do_PUT(self):
            self._serve("PUT")

    return Handler
