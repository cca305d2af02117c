"""Prove that the test cluster is a real Kubernetes cluster.

Everything goes through the official Python client (no kubectl): images
built here and pushed to the local registry, Deployments, exec over
websocket, logs, Services through kube-proxy, ReplicaSet self-healing, RBAC
with a ServiceAccount token from the TokenRequest API.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import time
import urllib.request
import uuid

import pytest
from kubernetes import client, config
from kubernetes.stream import stream

pytestmark = pytest.mark.cluster

HTTP_PORT = 8080


# ---------------------------------------------------------------- helpers


def push_test_image(cluster, files: dict[str, bytes]) -> tuple[str, str]:
    """Build an image = base image + FILES (path -> content) and push it to the
    local registry with crane. Returns (reference, manifest digest)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    ref = f"{cluster.registry}/womm/test:{uuid.uuid4().hex[:12]}"
    crane = f"{cluster.bin_dir}/crane"
    subprocess.run(
        [crane, "--insecure", "append", "-b", cluster.base_image, "-f", "-", "-t", ref],
        input=buf.getvalue(),
        check=True,
        capture_output=True,
    )
    digest = subprocess.run(
        [crane, "--insecure", "digest", ref], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert digest.startswith("sha256:")
    return ref, digest


def container(image: str, command: list[str] | None = None, probe: bool = False):
    c = client.V1Container(
        name="main",
        image=image,
        image_pull_policy="Always",  # the base image may have been re-pushed
        command=command or ["httpserver", f":{HTTP_PORT}"],
        ports=[client.V1ContainerPort(container_port=HTTP_PORT)],
    )
    if probe:
        c.readiness_probe = client.V1Probe(
            http_get=client.V1HTTPGetAction(path="/", port=HTTP_PORT),
            period_seconds=1,
        )
    return c


def deployment(
    name: str, image: str, replicas: int, service_account: str | None = None, **kw
) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    service_account_name=service_account,
                    containers=[container(image, probe=True, **kw)],
                    termination_grace_period_seconds=1,
                ),
            ),
        ),
    )


def wait_for(what: str, fn, timeout: float = 120, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except client.ApiException as e:  # transient, e.g. pod not yet running
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def wait_deployment_ready(apps, ns: str, name: str, replicas: int, timeout: float = 180):
    def ready():
        d = apps.read_namespaced_deployment(name, ns)
        return (d.status.ready_replicas or 0) == replicas and (
            d.status.updated_replicas or 0
        ) == replicas

    wait_for(f"deployment {name} to have {replicas} ready replicas", ready, timeout)


def ready_pods(core, ns: str, app: str) -> list[client.V1Pod]:
    pods = core.list_namespaced_pod(ns, label_selector=f"app={app}").items
    return [
        p
        for p in pods
        if p.metadata.deletion_timestamp is None
        and p.status.phase == "Running"
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]


def run_pod(core, ns: str, name: str, image: str) -> client.V1Pod:
    core.create_namespaced_pod(
        ns,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name=name, labels={"app": name}),
            spec=client.V1PodSpec(
                containers=[container(image, probe=True)], termination_grace_period_seconds=1
            ),
        ),
    )
    return wait_for(f"pod {name} ready", lambda: (ready_pods(core, ns, name) or [None])[0])


def exec_pod(core, ns: str, pod: str, command: list[str], timeout: float = 120):
    """Run COMMAND in POD over the websocket exec API.
    Returns (stdout bytes, stderr bytes, exit code)."""
    ws = stream(
        core.connect_get_namespaced_pod_exec,
        pod,
        ns,
        command=command,
        stdin=False,
        stdout=True,
        stderr=True,
        tty=False,
        binary=True,
        _preload_content=False,
    )
    out, err = [], []
    deadline = time.monotonic() + timeout
    try:
        while ws.is_open():
            assert time.monotonic() < deadline, f"exec {command} timed out"
            ws.update(timeout=1)
            out.append(ws.read_stdout(timeout=0))
            err.append(ws.read_stderr(timeout=0))
        out.append(ws.read_stdout(timeout=0))
        err.append(ws.read_stderr(timeout=0))
        rc = ws.returncode
    finally:
        ws.close()
    return b"".join(out), b"".join(err), rc


# ---------------------------------------------------------------- tests


def test_local_image_runs_as_3_replica_deployment(cluster, namespace):
    api = cluster.api_client()
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    marker = uuid.uuid4().hex
    image, digest = push_test_image(cluster, {"/etc/womm-test-id": marker.encode()})

    t = time.monotonic()
    apps.create_namespaced_deployment(namespace, deployment("web", image, 3))
    wait_deployment_ready(apps, namespace, "web", 3)
    print(f"3 pods from a freshly pushed local image Ready in {time.monotonic() - t:.1f}s")

    pods = ready_pods(core, namespace, "web")
    assert len(pods) == 3
    assert {p.spec.node_name for p in pods} == {cluster.node_name}
    assert len({p.status.pod_ip for p in pods}) == 3
    for p in pods:
        (status,) = p.status.container_statuses
        assert status.ready and status.state.running is not None
        # the image that runs is the one pushed above, pulled from the local registry
        assert status.image_id.endswith(digest), (status.image_id, digest)
    out, err, rc = exec_pod(core, namespace, pods[0].metadata.name, ["cat", "/etc/womm-test-id"])
    assert (out.decode(), err, rc) == (marker, b"", 0)


def test_exec_separates_streams_and_carries_10mb(cluster, namespace):
    api = cluster.api_client()
    core = client.CoreV1Api(api)
    pod = run_pod(core, namespace, "exec", cluster.base_image).metadata.name

    out, err, rc = exec_pod(
        core, namespace, pod, ["bash", "-c", "echo to-stdout; echo to-stderr >&2; exit 7"]
    )
    assert out == b"to-stdout\n"
    assert err == b"to-stderr\n"
    assert rc == 7

    out, err, rc = exec_pod(core, namespace, pod, ["true"])
    assert (out, err, rc) == (b"", b"", 0)

    size = 10 * 1024 * 1024
    out, err, rc = exec_pod(
        core,
        namespace,
        pod,
        ["bash", "-c", f"head -c {size} /dev/urandom >/tmp/blob && sha256sum /tmp/blob"],
    )
    assert rc == 0, err
    remote_sha = out.split()[0].decode()
    t = time.monotonic()
    out, err, rc = exec_pod(core, namespace, pod, ["cat", "/tmp/blob"])
    print(f"10 MiB over exec in {time.monotonic() - t:.1f}s")
    assert (err, rc) == (b"", 0)
    assert len(out) == size
    assert hashlib.sha256(out).hexdigest() == remote_sha


def test_logs_service_and_replicaset(cluster, namespace):
    api = cluster.api_client()
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment(namespace, deployment("svc", cluster.base_image, 2))
    wait_deployment_ready(apps, namespace, "svc", 2)
    pods = ready_pods(core, namespace, "svc")
    names = {p.metadata.name for p in pods}

    # logs
    for p in pods:
        log = core.read_namespaced_pod_log(p.metadata.name, namespace)
        assert f"listening on :{HTTP_PORT}" in log

    # ClusterIP Service through kube-proxy, from the host and from a pod
    svc = core.create_namespaced_service(
        namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1ServiceSpec(
                selector={"app": "svc"},
                ports=[client.V1ServicePort(port=80, target_port=HTTP_PORT)],
            ),
        ),
    )
    ip = svc.spec.cluster_ip
    assert ip and ip != "None"

    def from_host():
        try:
            with urllib.request.urlopen(f"http://{ip}/", timeout=2) as r:
                return r.read().decode()
        except OSError:
            return None

    seen = set()
    deadline = time.monotonic() + 60
    while seen != names and time.monotonic() < deadline:
        body = from_host()
        if body:
            assert body.startswith("hello from ")
            seen.add(body.split()[-1])
        else:
            time.sleep(0.25)
    assert seen == names, f"host -> {ip}:80 reached {seen}, expected both of {names}"

    client_pod = run_pod(core, namespace, "client", cluster.base_image).metadata.name

    def from_pod():
        out, _err, rc = exec_pod(
            core, namespace, client_pod, ["httpserver", "get", f"http://{ip}/"]
        )
        return out.decode() if rc == 0 else None

    body = wait_for("pod -> ClusterIP", from_pod, timeout=60)
    assert body.startswith("hello from ") and body.split()[-1] in names

    # delete a pod: the ReplicaSet replaces it
    victim = sorted(names)[0]
    core.delete_namespaced_pod(victim, namespace, grace_period_seconds=0)

    def replaced():
        now = {p.metadata.name for p in ready_pods(core, namespace, "svc")}
        return now if len(now) == 2 and victim not in now else None

    now = wait_for("a replacement pod", replaced, timeout=120)
    (new,) = now - names
    rs = apps.list_namespaced_replica_set(namespace, label_selector="app=svc").items
    assert len(rs) == 1
    owner = core.read_namespaced_pod(new, namespace).metadata.owner_references[0]
    assert (owner.kind, owner.name) == ("ReplicaSet", rs[0].metadata.name)


def test_serviceaccount_role_allows_deploy_and_exec_but_not_secrets(cluster, namespace):
    admin = cluster.api_client()
    core, rbac = client.CoreV1Api(admin), client.RbacAuthorizationV1Api(admin)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="worker"))
    )
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="worker"),
            rules=[
                client.V1PolicyRule(
                    api_groups=["apps"],
                    resources=["deployments"],
                    verbs=["create", "get", "list", "watch", "delete"],
                ),
                client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["get", "list"]),
                client.V1PolicyRule(
                    api_groups=[""], resources=["pods/exec"], verbs=["create", "get"]
                ),
            ],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="worker"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="worker"
            ),
            subjects=[
                client.RbacV1Subject(kind="ServiceAccount", name="worker", namespace=namespace)
            ],
        ),
    )
    tr = core.create_namespaced_service_account_token(
        "worker",
        namespace,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
        ),
    )
    token = tr.status.token
    assert token.count(".") == 2  # a JWT

    # a client that only has the token (and the cluster CA)
    admin_cfg = client.Configuration()
    config.load_kube_config(config_file=cluster.kubeconfig, client_configuration=admin_cfg)
    cfg = client.Configuration()
    cfg.host = admin_cfg.host
    cfg.ssl_ca_cert = admin_cfg.ssl_ca_cert
    cfg.api_key = {"authorization": f"Bearer {token}"}
    sa = client.ApiClient(cfg)

    who = client.AuthenticationV1Api(sa).create_self_subject_review(
        client.V1SelfSubjectReview(metadata=client.V1ObjectMeta())
    )
    assert who.status.user_info.username == f"system:serviceaccount:{namespace}:worker"

    sa_apps, sa_core = client.AppsV1Api(sa), client.CoreV1Api(sa)
    sa_apps.create_namespaced_deployment(
        namespace, deployment("sa", cluster.base_image, 1, service_account="worker")
    )
    wait_deployment_ready(sa_apps, namespace, "sa", 1)
    (pod,) = ready_pods(sa_core, namespace, "sa")
    out, err, rc = exec_pod(
        sa_core, namespace, pod.metadata.name, ["bash", "-c", "echo $((6 * 7))"]
    )
    assert (out, err, rc) == (b"42\n", b"", 0)

    with pytest.raises(client.ApiException) as e:
        sa_core.list_namespaced_secret(namespace)
    assert e.value.status == 403
    with pytest.raises(client.ApiException) as e:
        sa_core.list_namespaced_pod("kube-system")
    assert e.value.status == 403
    # ... while the admin may list them: the refusal is RBAC, not a broken API
    core.list_namespaced_secret(namespace)

    # Inside the pod, with its own projected token, through the "kubernetes"
    # Service (kube-proxy -> apiserver on the node address): the same rights.
    api_ip = core.read_namespaced_service("kubernetes", "default").spec.cluster_ip
    sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount"

    def in_pod(path):
        get = ["httpserver", "get", "-ca", f"{sa_dir}/ca.crt", "-token", f"{sa_dir}/token"]
        return exec_pod(sa_core, namespace, pod.metadata.name, [*get, f"https://{api_ip}{path}"])

    out, err, rc = in_pod(f"/api/v1/namespaces/{namespace}/pods")
    assert rc == 0, err
    assert pod.metadata.name in {p["metadata"]["name"] for p in json.loads(out)["items"]}
    out, err, rc = in_pod(f"/api/v1/namespaces/{namespace}/secrets")
    assert rc == 1 and b"403" in err, (out, err)
