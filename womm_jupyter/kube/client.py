"""The one door to the Kubernetes API: configuration, clients, errors, retries, leases.

Every API call of womm goes through :class:`Clients` (built once per kubeconfig context and
namespace). Its APIs are the kubernetes SDK's, wrapped: each call that fails raises
:class:`ApiError` (a :class:`~womm_jupyter.errors.BackendError` carrying the HTTP status) with
one line saying what failed and what to do, whatever the SDK raised (``ApiException``,
urllib3's connection, TLS and protocol errors, a websocket handshake). Idempotent calls (get,
list, watch, delete, patch) are retried with backoff on 429 (after its Retry-After), 5xx and
dropped connections, for at most :data:`RETRY_SECONDS`.

No module outside ``womm_jupyter/kube/`` imports ``kubernetes``: what they need is here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import BackendError, MissingToolError

# The kubernetes SDK is imported where it is used, not here: it adds about 0.4 s to every
# `womm` start (measured: `womm --help` 0.25 s without it, 0.65 s with it), and local and
# Docker runs never need it.

__all__ = ["HEARTBEAT_SECONDS", "IMAGE_PULL_FAILURES", "RETRY_SECONDS",
           "STALE_LEASE_SECONDS", "WAITING_WILL_NOT_CURE", "ApiError", "Clients", "Watch",
           "clients", "delete_each", "delete_pod", "lease_alive", "load_config", "now",
           "renew_lease", "see_through", "translate"]

RETRY_SECONDS = 20.0  # the most time retries of one call may take
HEARTBEAT_SECONDS = 2.0  # how often a live client renews its task's Lease
STALE_LEASE_SECONDS = 10.0  # a Lease not renewed for this long: its client is gone (ORPHANED)

# Waiting reasons of a container that waiting will not cure within a start timeout.
IMAGE_PULL_FAILURES = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName",
                                 "ErrImageNeverPull"})
WAITING_WILL_NOT_CURE = IMAGE_PULL_FAILURES | {"CreateContainerConfigError",
                                               "CreateContainerError", "CrashLoopBackOff",
                                               "RunContainerError"}

_IDEMPOTENT = ("read_", "list_", "delete_", "patch_", "get_")
_RETRIED_STATUSES = {429, 500, 502, 503, 504}
# RBAC verbs of the SDK's method prefixes (an exec is a `create` of pods/exec).
_VERBS = (("connect_get_", "create"), ("connect_post_", "create"), ("read_", "get"),
          ("list_", "list"), ("create_", "create"), ("delete_", "delete"),
          ("patch_", "patch"), ("replace_", "update"), ("get_", "get"))
_SUBRESOURCES = {"pod_exec": "pods/exec", "pod_log": "pods/log",
                 "service_account_token": "serviceaccounts/token", "code": "version"}


class ApiError(BackendError):
    """A Kubernetes API call failed. ``status`` is the HTTP status (None when the API server
    could not be reached); the message says what failed and what to do."""

    def __init__(self, message: str, status: int | None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


# -- configuration --------------------------------------------------------------------------
def load_config(context: str = "") -> tuple[Any, str]:
    """An ApiClient and the namespace of the kubeconfig context (or in-cluster config)."""
    built = clients(context)
    return built.api_client, built.namespace


def _group(name: str) -> functools.cached_property[Any]:
    """A :class:`Clients` attribute: the SDK's API group ``name``, made on first use."""
    return functools.cached_property(lambda built: built._api(name))


@dataclasses.dataclass(frozen=True)
class Clients:
    """The API groups womm uses, for one context and namespace, every call translated."""

    api_client: Any
    namespace: str

    def _api(self, group: str) -> Any:
        from kubernetes import client as sdk

        return _Api(getattr(sdk, group)(self.api_client), self)

    core = _group("CoreV1Api")
    apps = _group("AppsV1Api")
    batch = _group("BatchV1Api")
    coordination = _group("CoordinationV1Api")
    rbac = _group("RbacAuthorizationV1Api")
    authorization = _group("AuthorizationV1Api")
    version = _group("VersionApi")

    @property
    def server(self) -> str:
        """The API server's address, as the kubeconfig names it."""
        return str(self.api_client.configuration.host)

    def in_namespace(self, namespace: str) -> Clients:
        """The same clients for another namespace (the default when ``namespace`` is "")."""
        if not namespace or namespace == self.namespace:
            return self
        return Clients(self.api_client, namespace)

    def fresh_core(self) -> Any:
        """A CoreV1Api on an ApiClient of its own: an exec stream patches the client it is
        given while it runs, so each stream needs one."""
        from kubernetes import client as sdk

        return sdk.CoreV1Api(sdk.ApiClient(self.api_client.configuration))


_built: dict[tuple[Any, ...], Clients] = {}
_built_lock = threading.Lock()


def clients(context: str = "", namespace: str = "") -> Clients:
    """The clients of kubeconfig ``context`` (or the in-cluster configuration), for
    ``namespace`` (default: the context's). Built once per context and kubeconfig."""
    files = os.environ.get("KUBECONFIG") or None  # as it is now, not as at import
    in_cluster = "KUBERNETES_SERVICE_HOST" in os.environ and not context
    stamps = tuple(_mtime(path) for path in (files or "").split(os.pathsep) if path)
    key = (context, files, in_cluster, stamps)
    with _built_lock:
        built = _built.get(key)
        if built is None:
            built = _built[key] = _load(context, files, in_cluster)
    return built.in_namespace(namespace)


def _mtime(path: str) -> float:
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return 0.0


def _load(context: str, files: str | None, in_cluster: bool) -> Clients:
    from kubernetes import client as sdk
    from kubernetes import config as loader
    from urllib3 import Retry

    configuration = sdk.Configuration()
    # urllib3 retries refused connections itself; statuses (429 and 503 with Retry-After)
    # are left to _with_retries, which knows which calls may be repeated.
    configuration.retries = Retry(total=3, respect_retry_after_header=False,
                                  raise_on_status=False)
    try:
        if in_cluster:
            loader.load_incluster_config(client_configuration=configuration)
            namespace = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            return Clients(sdk.ApiClient(configuration),
                           namespace.read_text().strip() or "default")
        loader.load_kube_config(config_file=files, context=context or None,
                                client_configuration=configuration)
        contexts, active = loader.list_kube_config_contexts(config_file=files)
        chosen = active
        if context:
            chosen = next(c for c in contexts if c["name"] == context)
        return Clients(sdk.ApiClient(configuration),
                       chosen.get("context", {}).get("namespace") or "default")
    except Exception as exc:  # the loader raises ConfigException, StopIteration, OSError...
        raise MissingToolError(f"no usable Kubernetes configuration ({exc}): set KUBECONFIG "
                               "or --context, or choose --backend docker or local.") from exc


# -- errors ---------------------------------------------------------------------------------
def _doing(method: str, args: tuple[Any, ...]) -> str:
    """``read_namespaced_config_map('x', ns)`` -> ``get configmaps x``."""
    verb = "call"
    for prefix, rbac_verb in _VERBS:
        if method.startswith(prefix):
            verb, method = rbac_verb, method[len(prefix):]
            break
    kind = method.replace("namespaced_", "").replace("_for_all_namespaces", "")
    resource = _SUBRESOURCES.get(kind) or (kind.replace("_", "") + "s" if kind else "")
    named = verb in ("get", "delete", "patch", "update") or "/" in resource
    name = f" {args[0]}" if named and args and isinstance(args[0], str) else ""
    return f"{verb} {resource}{name}".strip()


def _message_of(body: Any) -> str:
    try:
        return str(json.loads(body).get("message", "")).strip()
    except (TypeError, ValueError, AttributeError):
        return ""


def _short(reason: Any) -> str:
    text = str(reason).strip()
    # urllib3 nests the cause: "...: Failed to establish a new connection: [Errno 111] ..."
    return text.rsplit(": ", 1)[-1].strip(" )\"'") if ": " in text else text


def translate(exc: BaseException, doing: str, namespace: str, server: str = "") -> ApiError:
    """The one translation of a failed Kubernetes call into an :class:`ApiError`."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import MaxRetryError

    if isinstance(exc, ApiError):
        return exc
    where = f"in namespace {namespace}" if namespace else "in the cluster"
    status = getattr(exc, "status", None) if isinstance(exc, ApiException) else None
    reason = str(getattr(exc, "reason", "") or "") if isinstance(exc, ApiException) else ""
    if status == 0:  # an exec's websocket: its handshake status, or a connection failure
        handshake = re.search(r"Handshake status (\d+)", reason)
        status = int(handshake.group(1)) if handshake else None
    if status is None:
        cause = getattr(exc, "reason", None) if isinstance(exc, MaxRetryError) else exc
        said = _short(cause or exc) or type(exc).__name__
        return ApiError(f"cannot reach the Kubernetes API server {server or '(unknown)'} to "
                        f"{doing} ({said}): check the kubeconfig's server and context "
                        "(KUBECONFIG, --context) or run `womm doctor`.", None, said)
    said = _message_of(getattr(exc, "body", None)) or reason
    if status == 401:
        return ApiError(f"Kubernetes did not accept your credentials to {doing} (Unauthorized):"
                        " the kubeconfig's token or certificate is wrong or expired; ask your "
                        "admin for a new one (`womm admin kubeconfig NAMESPACE`).", status, said)
    if status == 403:
        denied = re.search(r'cannot (\S+) resource "([^"]+)"(?: in API group "([^"]*)")?', said)
        if denied:
            verb, resource, group = denied.groups()
            missing = f"{verb} {resource}" + (f".{group}" if group else "")
        else:
            missing = doing
        return ApiError(
            f"Kubernetes refused to let you {doing} {where} (Forbidden): no permission to "
            f"{missing}; ask an admin to apply `womm cluster-setup --namespace "
            f"{namespace or 'NAMESPACE'}` and bind you to its Role (`womm doctor` lists what "
            "is missing), or choose another namespace with --namespace.", status, said)
    if status == 404:
        return ApiError(f"Kubernetes could not {doing} {where}: not found ({said}).", status,
                        said)
    if status == 409:
        return ApiError(f"Kubernetes could not {doing} {where}: conflict ({said}); try again.",
                        status, said)
    if status == 429:
        return ApiError(f"Kubernetes could not {doing} {where}: the API server is overloaded "
                        "(429 Too Many Requests); try again later.", status, said)
    if status >= 500:
        return ApiError(f"Kubernetes could not {doing} {where}: the API server failed "
                        f"({status} {said}); try again, or run `womm doctor`.", status, said)
    return ApiError(f"Kubernetes could not {doing} {where}: {said} ({status}).", status, said)


def _retry_after(exc: BaseException) -> float | None:
    """Seconds to wait before retrying ``exc``, or None when it is not worth retrying."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import MaxRetryError, ProtocolError

    if isinstance(exc, ApiException):
        if exc.status not in _RETRIED_STATUSES:
            return None
        header = (exc.headers or {}).get("Retry-After", "") if exc.status == 429 else ""
        try:
            return max(0.0, float(header))
        except (TypeError, ValueError):
            return 0.0
    if isinstance(exc, ProtocolError | ConnectionResetError):
        return 0.0
    if isinstance(exc, MaxRetryError) and isinstance(exc.reason, ProtocolError):
        return 0.0
    return None


def _with_retries(function: Callable[..., Any], idempotent: bool,
                  translated: Callable[[BaseException], ApiError]) -> Any:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    deadline = time.monotonic() + RETRY_SECONDS
    delay = 0.5
    while True:
        try:
            return function()
        except (ApiException, HTTPError, OSError) as exc:
            wait = _retry_after(exc) if idempotent else None
            if wait is None or time.monotonic() + max(wait, delay) > deadline:
                raise translated(exc) from exc
            time.sleep(max(wait, delay))
            delay = min(delay * 2, 4.0)


class _Api:
    """A kubernetes SDK API object whose every call is translated (and retried when
    idempotent; ``.once`` is the same without retries, for calls that are repeated anyway)."""

    def __init__(self, api: Any, owner: Clients, retried: bool = True) -> None:
        self._api = api
        self._owner = owner
        self.api_client = api.api_client
        self.once = _Api(api, owner, retried=False) if retried else self
        self._retried = retried

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._api, name)
        if not callable(method):
            return method
        owner = self._owner
        idempotent = self._retried and name.startswith(_IDEMPOTENT)

        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            def translated(exc: BaseException) -> ApiError:
                namespace = owner.namespace if "namespaced" in name else ""
                return translate(exc, _doing(name, args), namespace, owner.server)

            return _with_retries(lambda: method(*args, **kwargs), idempotent, translated)

        call.clients = owner  # type: ignore[attr-defined]  # for Watch's messages
        return call


class Watch:
    """``kubernetes.watch.Watch`` whose stream raises :class:`ApiError` (410 Gone included,
    with its status) instead of the SDK's errors."""

    def __init__(self) -> None:
        from kubernetes import watch

        self._watch = watch.Watch()

    def stream(self, function: Any, *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        built = getattr(function, "clients", None)
        namespace = built.namespace if isinstance(built, Clients) else ""
        server = built.server if isinstance(built, Clients) else ""
        name = getattr(function, "__name__", "list")
        try:
            yield from self._watch.stream(function, *args, **kwargs)
        except ApiError:
            raise
        except (ApiException, HTTPError, OSError) as exc:
            doing = "watch " + _doing(name, args).partition(" ")[2]
            raise translate(exc, doing, namespace, server) from exc

    def stop(self) -> None:
        self._watch.stop()

    def shutdown(self) -> None:
        """Stop, and end a read blocked on the stream's connection (an SSL read a daemon
        thread sits in when the interpreter exits makes it abort)."""
        self._watch.stop()
        response = getattr(self._watch, "_resp", None)
        try:
            if response is not None:
                response.shutdown()
        except Exception:  # already closed, or an older urllib3: the join may time out
            pass


# -- shared helpers -------------------------------------------------------------------------
def delete_each(namespace: str,
                targets: Iterable[tuple[str, Callable[..., Any], str]]) -> list[str]:
    """Delete ``(kind, delete_namespaced_x, name)`` objects, owned ones in the background;
    returns ``kind/name`` of those that existed. An object already gone is no error."""
    deleted = []
    for kind, delete, name in targets:
        try:
            delete(name, namespace, propagation_policy="Background")
            deleted.append(f"{kind}/{name}")
        except ApiError as exc:
            if exc.status != 404:
                raise
    return deleted


def delete_pod(core: Any, namespace: str, name: str) -> bool:
    """Delete a pod now (no grace period); whether it was there. One already gone is no
    error."""
    try:
        core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    except ApiError as exc:
        if exc.status != 404:
            raise
        return False
    return True


def see_through(step: Callable[[], list[str]], wait: float) -> None:
    """Deleting an owner leaves its objects to the garbage collector, which works
    asynchronously: call ``step`` (it deletes what it may and returns what is still there)
    every half second until nothing is left or ``wait`` seconds have passed."""
    deadline = time.monotonic() + wait
    while step() and time.monotonic() <= deadline:
        time.sleep(0.5)


def now() -> str:
    """The current time as a Lease wants it (MicroTime)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def renew_lease(built: Clients, name: str) -> None:
    """Renew Lease ``name`` (raises ApiError; 404 when it was deleted). Not retried: the
    next beat is the retry, and a heartbeat must not hold up its caller's loop."""
    built.coordination.once.patch_namespaced_lease(name, built.namespace,
                                                   {"spec": {"renewTime": now()}})


def lease_alive(lease: Any, at: dt.datetime | None = None) -> bool:
    """Whether ``lease`` was renewed within :data:`STALE_LEASE_SECONDS`."""
    renewed = lease.spec.renew_time if lease is not None else None
    at = at or dt.datetime.now(dt.UTC)
    return renewed is not None and (at - renewed).total_seconds() < STALE_LEASE_SECONDS
