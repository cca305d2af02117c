"""kube/client.py and kube/exec.py without a cluster: the error translation (as a table), the
exec status parser (as a table), and retries against a real local HTTP server that answers
like an overloaded API server."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest
import yaml
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import MaxRetryError, NewConnectionError

from womm_jupyter.errors import BackendError
from womm_jupyter.kube import client as kube
from womm_jupyter.kube.exec import exit_status, status_message

SERVER = "https://10.0.0.1:6443"


def _api_exception(status: int, message: str = "", headers: dict[str, str] | None = None,
                   reason: str = "") -> ApiException:
    exc = ApiException(status=status, reason=reason or "Reason")
    exc.body = json.dumps({"kind": "Status", "message": message}) if message else None
    exc.headers = headers or {}
    return exc


FORBIDDEN = ('deployments.apps is forbidden: User "system:serviceaccount:lab:nobody" cannot '
             'list resource "deployments" in API group "apps" in the namespace "lab"')


@pytest.mark.parametrize(("exc", "status", "says"), [
    (_api_exception(401, "Unauthorized"), 401,
     ["did not accept your credentials to list pods (Unauthorized)",
      "`womm admin kubeconfig NAMESPACE`"]),
    (_api_exception(403, FORBIDDEN), 403,
     ["refused to let you list pods in namespace lab (Forbidden): no permission to list "
      "deployments.apps;", "`womm cluster-setup --namespace lab`", "`womm doctor`"]),
    (_api_exception(403), 403,
     ["(Forbidden): no permission to list pods;", "`womm cluster-setup --namespace lab`"]),
    (_api_exception(404, 'pods "p" not found'), 404,
     ['could not list pods in namespace lab: not found (pods "p" not found).']),
    (_api_exception(409, "already exists"), 409, ["conflict (already exists); try again."]),
    (_api_exception(429, "slow down"), 429, ["overloaded (429 Too Many Requests)"]),
    (_api_exception(503, "etcd is sad"), 503,
     ["the API server failed (503 etcd is sad)", "`womm doctor`"]),
    (_api_exception(422, "spec.containers: Required value"), 422,
     ["could not list pods in namespace lab: spec.containers: Required value (422)."]),
    (ApiException(status=0, reason="Handshake status 403 Forbidden -+-+- {}"), 403,
     ["(Forbidden)", "womm cluster-setup"]),
    (ApiException(status=0, reason="[Errno 111] Connection refused"), None,
     [f"cannot reach the Kubernetes API server {SERVER} to list pods ([Errno 111] Connection "
      "refused)", "`womm doctor`"]),
    (MaxRetryError(None, "/api/v1/pods",  # type: ignore[arg-type]
                   NewConnectionError(None, "Failed to establish a new connection: "  # type: ignore[arg-type]
                                      "[Errno 111] Connection refused")), None,
     [f"cannot reach the Kubernetes API server {SERVER} to list pods ([Errno 111] Connection "
      "refused): check the kubeconfig's server and context"]),
    (ConnectionResetError(104, "Connection reset by peer"), None,
     [f"cannot reach the Kubernetes API server {SERVER}"]),
])
def test_every_failure_becomes_one_line_with_advice(exc, status, says):
    error = kube.translate(exc, "list pods", "lab", SERVER)
    assert isinstance(error, kube.ApiError) and isinstance(error, BackendError)
    assert error.status == status
    text = str(error)
    assert "\n" not in text, text
    for part in says:
        assert part in text, text


@pytest.mark.parametrize(("method", "args", "doing"), [
    ("list_namespaced_pod", ("lab",), "list pods"),
    ("read_namespaced_config_map", ("womm-settings", "lab"), "get configmaps womm-settings"),
    ("create_namespaced_deployment", ("lab", {}), "create deployments"),
    ("patch_namespaced_lease", ("womm-task-x", "lab", {}), "patch leases womm-task-x"),
    ("replace_namespaced_role", ("womm-leader", "lab", {}), "update roles womm-leader"),
    ("connect_get_namespaced_pod_exec", ("p", "lab"), "create pods/exec p"),
    ("create_namespaced_service_account_token", ("u", "lab", {}),
     "create serviceaccounts/token u"),
    ("list_pod_for_all_namespaces", (), "list pods"),
    ("get_code", (), "get version"),
])
def test_a_calls_name_says_the_rbac_verb_and_resource(method, args, doing):
    assert kube._doing(method, args) == doing


@pytest.mark.parametrize(("raw", "code", "message"), [
    (b'{"metadata":{},"status":"Success"}', 0, ""),
    (b'{"status":"Failure","message":"command terminated with non-zero exit code: 3",'
     b'"reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}',
     3, "command terminated with non-zero exit code: 3"),
    (b'{"status":"Failure","message":"exec: \\"nope\\": executable file not found"}', None,
     'exec: "nope": executable file not found'),
    (b"", None, ""),
    (b"not json", None, ""),
])
def test_the_status_channel_gives_the_exit_status(raw, code, message):
    assert status_message(raw) == (code, message)
    assert exit_status(raw) == code


class _Overloaded(http.server.BaseHTTPRequestHandler):
    """Answers the first ``failures`` requests with ``status`` (429 with Retry-After: 0), then
    an empty PodList."""

    failures = 1
    status = 429
    seen: ClassVar[list[str]] = []

    def _answer(self) -> None:
        type(self).seen.append(self.command)
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if len(type(self).seen) <= type(self).failures:
            body = json.dumps({"kind": "Status", "message": "slow down"}).encode()
            self.send_response(type(self).status)
            if type(self).status == 429:
                self.send_header("Retry-After", "0")
        else:
            body = json.dumps({"kind": "PodList", "apiVersion": "v1",
                               "metadata": {"resourceVersion": "1"}, "items": []}).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def overloaded(tmp_path, monkeypatch) -> Iterator[tuple[kube.Clients, type[_Overloaded]]]:
    handler = type("Handler", (_Overloaded,), {"seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {
            "server": f"http://127.0.0.1:{server.server_address[1]}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u",
                                              "namespace": "lab"}}],
        "current-context": "c"}))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    try:
        yield kube.clients(), handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("status", [429, 503])
def test_an_idempotent_call_is_retried_after_429_and_5xx(overloaded, status):
    clients, handler = overloaded
    handler.status = status
    handler.failures = 2
    assert clients.core.list_namespaced_pod("lab").items == []
    assert handler.seen == ["GET"] * 3


def test_a_create_is_not_retried(overloaded):
    clients, handler = overloaded
    handler.status = 503
    with pytest.raises(kube.ApiError) as raised:
        clients.core.create_namespaced_pod("lab", {"metadata": {"name": "p"}})
    assert raised.value.status == 503
    assert "could not create pods in namespace lab: the API server failed" in str(raised.value)
    assert handler.seen == ["POST"]


def test_retries_end_with_the_error_once_their_time_is_up(overloaded, monkeypatch):
    clients, handler = overloaded
    handler.status = 503
    handler.failures = 10**6
    monkeypatch.setattr(kube, "RETRY_SECONDS", 0.0)  # no time for a retry: one attempt
    with pytest.raises(kube.ApiError) as raised:
        clients.core.list_namespaced_pod("lab")
    assert raised.value.status == 503
    assert handler.seen == ["GET"]


def test_once_is_the_same_call_without_retries(overloaded):
    clients, handler = overloaded
    handler.status = 503
    with pytest.raises(kube.ApiError) as raised:
        clients.core.once.list_namespaced_pod("lab")
    assert raised.value.status == 503
    assert handler.seen == ["GET"]


def test_no_module_outside_kube_imports_the_sdk():
    import ast
    from pathlib import Path

    import womm_jupyter

    package = Path(womm_jupyter.__file__).resolve().parent
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.relative_to(package).parts[0] in ("kube", "_vendor", "_fsserver"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom)
                     and not node.level else [])
            found += [f"{path.relative_to(package)}:{node.lineno}" for name in names
                      if name.split(".")[0] == "kubernetes"]
    assert found == []
