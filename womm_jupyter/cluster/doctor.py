"""`womm doctor`: can womm run here? Kubeconfig, API, permissions, Pod Security, the image in
its registry.

Each check says what it found; a failed one also says what to do. Permissions are asked of
the API server itself (SelfSubjectAccessReview) for every verb of the Role that
`womm cluster-setup` prints, so the list cannot drift from what womm needs. The Pod Security
level is only a warning when weak: womm runs either way.
"""

from __future__ import annotations

import re
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass

from ..errors import WommError
from ..kube import manifests
from ..kube.client import ApiError, Clients, clients

__all__ = ["Check", "check"]

_MANIFEST_TYPES = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json"))


@dataclass(frozen=True)
class Check:
    """One finding: ``ok`` is True, False, or None when it could not be decided; ``warning``:
    womm can run, but the finding deserves attention (``ok`` is then None)."""

    name: str
    ok: bool | None
    detail: str
    advice: str = ""
    warning: bool = False


def check(*, context: str = "", namespace: str = "", image: str = "") -> list[Check]:
    """Every check, in order; later ones are skipped (not run) when the API is unreachable."""
    try:
        built = clients(context, namespace)
    except WommError as exc:
        return [Check("kubeconfig", False, str(exc),
                      "point KUBECONFIG at your cluster's kubeconfig (ask your admin for one: "
                      "`womm admin kubeconfig NAMESPACE`)")]
    namespace = built.namespace
    host = built.server
    found = [Check("kubeconfig", True, f"API server {host}, namespace {namespace}")]
    try:
        version = built.version.get_code()
    except ApiError as exc:  # refused, TLS, DNS, timeouts: all mean "not reachable"
        found.append(Check("API server", False, f"{host} did not answer: {exc.reason or exc}",
                           "check the cluster is running and this machine can reach it "
                           "(VPN, proxy, the kubeconfig's server address)"))
        return found
    found.append(Check("API server", True, f"{host} answers (Kubernetes {version.git_version})"))
    try:
        found.append(_permissions(built))
    except ApiError as exc:
        found.append(Check("permissions", None, f"could not be asked: {exc}",
                           "ask an admin to check your access to the namespace"))
    found.append(_pod_security(built))
    found.append(_image(image))
    return found


def _permissions(built: Clients) -> Check:
    auth, namespace = built.authorization, built.namespace
    missing = []
    asked = 0
    for rule in manifests.ROLE_RULES:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                kind, _, sub = resource.partition("/")
                for verb in rule["verbs"]:
                    asked += 1
                    review = auth.create_self_subject_access_review({
                        "apiVersion": "authorization.k8s.io/v1",
                        "kind": "SelfSubjectAccessReview",
                        "spec": {"resourceAttributes": {
                            "namespace": namespace, "verb": verb, "group": group,
                            "resource": kind, "subresource": sub or None}}})
                    if not review.status.allowed:
                        missing.append(f"{verb} {resource}" + (f".{group}" if group else ""))
    if missing:
        return Check("permissions", False,
                     f"{len(missing)} of the {asked} permissions womm uses are missing in "
                     f"namespace {namespace}: {', '.join(missing)}",
                     f"ask an admin to apply `womm cluster-setup --namespace {namespace}` and "
                     "bind you to its Role womm-leader")
    return Check("permissions", True, f"all {asked} permissions womm uses are granted in "
                 f"namespace {namespace}")


def _pod_security(built: Clients) -> Check:
    """The Pod Security level the namespace enforces, from its labels. Members may not read
    Namespaces (the Role grants nothing on them, and need not: womm never reads one); then,
    and when no label is set (the cluster's default level applies), a server-side dry run of
    a privileged pod asks admission itself: nothing is created."""
    core, namespace = built.core, built.namespace
    advice = (f"ask an admin to apply `womm cluster-setup --namespace {namespace}` (Pod "
              "Security baseline), unless lazy shares with --privileged-fuse must run here")
    try:
        labels = core.read_namespace(namespace).metadata.labels or {}
        level = labels.get(manifests.POD_SECURITY_ENFORCE, "")
        source = f"label {manifests.POD_SECURITY_ENFORCE}" if level else "no label"
    except ApiError as exc:
        if exc.status not in (401, 403):
            return Check("pod security", None, f"could not read Namespace {namespace}: "
                         f"{exc.status} {exc.reason}")
        level, source = "", "Namespace not readable with these credentials"
    if level in ("baseline", "restricted"):
        return Check("pod security", True, f"namespace {namespace} enforces Pod Security "
                     f"{level} ({source}): privileged and hostPath pods are refused")
    if level == "privileged":
        return Check("pod security", None, f"namespace {namespace} enforces Pod Security "
                     f"privileged ({source}): any member can start privileged pods (root on "
                     "the node)", advice, warning=True)
    probe = {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"generateName": "womm-doctor-probe-"},
             "spec": {"containers": [{"name": "probe", "image": "womm-doctor-probe",
                                      "securityContext": {"privileged": True}}]}}
    try:
        core.create_namespaced_pod(namespace, probe, dry_run="All")
    except ApiError as exc:
        refused = re.search(r'violates PodSecurity \\?"(\w+)', exc.reason)
        if exc.status == 403 and refused:
            return Check("pod security", True, f"namespace {namespace} enforces Pod Security "
                         f"{refused.group(1)} ({source}; a privileged pod, dry run, was "
                         "refused)")
        return Check("pod security", None, f"{source} in namespace {namespace}, and a dry-run "
                     f"privileged pod was neither admitted nor refused by Pod Security: "
                     f"{exc.status} {exc.reason}", advice)
    return Check("pod security", None, f"namespace {namespace} enforces no Pod Security level "
                 f"({source}; a privileged pod, dry run, was admitted): any member can start "
                 "privileged pods (root on the node)", advice, warning=True)


def _image(image: str) -> Check:
    if not image:
        return Check("image", None, "no image given and no `womm setup` in this directory",
                     "run `womm setup`, or pass --image")
    host, repository, reference = _split_reference(image)
    path = f"/v2/{repository}/manifests/{reference}"
    last = ""
    for scheme in ("https", "http"):
        request = urllib.request.Request(f"{scheme}://{host}{path}", method="HEAD",
                                         headers={"Accept": _MANIFEST_TYPES})
        try:
            with urllib.request.urlopen(request, timeout=10):
                return Check("image", True, f"{image} is in its registry ({host})")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return Check("image", False, f"{image} is not in registry {host}",
                             "push it (`womm setup` does), or fix --image")
            if exc.code in (401, 403):
                return Check("image", None, f"registry {host} wants credentials to show "
                             f"{image}; the cluster may have them, this check has not",
                             "make sure the namespace's imagePullSecrets can pull it")
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, ssl.SSLError, OSError) as exc:
            last = _reason(exc)  # a plain-HTTP registry fails the TLS attempt: try http
    return Check("image", None, f"registry {host} did not answer ({last}); {image} may still "
                 "be pullable from the cluster", "check the registry address in the image name")


def _split_reference(image: str) -> tuple[str, str, str]:
    """``host``, ``repository`` and tag or digest of an image reference, Docker's way."""
    name, digest = image.split("@", 1) if "@" in image else (image, "")
    last = name.rsplit("/", 1)[-1]
    tag = ""
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, repository = first, rest
    else:
        host, repository = "registry-1.docker.io", name if "/" in name else f"library/{name}"
    return host, repository, digest or tag or "latest"


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "reason", "") or exc).strip() or type(exc).__name__
