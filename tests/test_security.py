"""Other local users against womm: the reproductions of the security review (issue 12).

Each test creates unprivileged users with ``useradd`` (the tests run as root, as in CI) and
acts as them with ``setpriv``; the users and what they made are removed afterwards. The
attacker never gets a capability. The victim, when it runs womm itself, gets only
CAP_DAC_READ_SEARCH: the test's Python may live under /root, which it could not read
otherwise; that capability lets it read, never write or connect.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import womm_jupyter
from womm_jupyter import _paths
from womm_jupyter.errors import OptionError, WommError
from womm_jupyter.naming import check_task_id, is_task_id, new_task_id
from womm_jupyter.setup.capture import looks_secret, sort_out

REPOSITORY = Path(womm_jupyter.__file__).resolve().parent.parent
IMAGE = os.environ.get("WOMM_TEST_IMAGE", "womm-base:bookworm")
# Speaks the agent protocol: one job, `id -u`; prints what comes back, or why it could not.
AGENT_CLIENT = r"""
use Socket;
socket(my $s, PF_UNIX, SOCK_STREAM, 0) or die "socket: $!\n";
connect($s, pack_sockaddr_un($ARGV[0])) or do { print "refused: $!\n"; exit 3 };
my $cmd = "id -u";
syswrite($s, pack('N', length $cmd) . $cmd);
local $/;
my $all = <$s>;
print "answered: $all\n";
"""


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int

    def argv(self, *command: str, read_anywhere: bool = False) -> list[str]:
        caps = ["--inh-caps", "+dac_read_search", "--ambient-caps", "+dac_read_search"] \
            if read_anywhere else []
        return ["setpriv", "--reuid", str(self.uid), "--regid", str(self.gid), "--clear-groups",
                *caps, "--", *command]

    def run(self, *command: str, cwd: Path | str = "/", env: dict[str, str] | None = None,
            read_anywhere: bool = False, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*command, read_anywhere=read_anywhere), cwd=cwd,
                              env=env if env is not None else _user_env(self),
                              capture_output=True, text=True, timeout=timeout)

    def womm_env(self, home: Path, **extra: str) -> dict[str, str]:
        return {**_user_env(self), "HOME": str(home), "PYTHONPATH": str(REPOSITORY), **extra}


def _user_env(user: User) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "USER": user.name,
            "LOGNAME": user.name, "SHELL": "/bin/sh", "LANG": "C.UTF-8"}


@pytest.fixture
def local_user() -> Iterator[Callable[[str], User]]:
    """Makes unprivileged local users; removes them, their /tmp/womm-<uid> and their files."""
    made: list[User] = []
    scratch: list[Path] = []

    def make(role: str) -> User:
        name = f"wommsec-{role[:6]}-{uuid.uuid4().hex[:6]}"
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", name], check=True)
        entry = subprocess.run(["id", "-u", name], check=True, capture_output=True, text=True)
        uid = int(entry.stdout)
        user = User(name, uid, int(subprocess.run(["id", "-g", name], check=True,
                                                  capture_output=True, text=True).stdout))
        made.append(user)
        state = Path(f"/tmp/womm-{uid}")  # a recycled uid's leftovers must not decide a test
        shutil.rmtree(state, ignore_errors=True)
        scratch.append(state)
        return user

    yield make
    for user in made:
        subprocess.run(["userdel", user.name], check=False, capture_output=True)
    for path in scratch:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def home_of() -> Iterator[Callable[[User], Path]]:
    """A directory of the user's own under /tmp (pytest's tmp_path is root's, 0700)."""
    made: list[Path] = []

    def make(user: User) -> Path:
        path = Path(f"/tmp/wommsec-home-{uuid.uuid4().hex[:8]}")
        path.mkdir(mode=0o700)
        os.chown(path, user.uid, user.gid)
        made.append(path)
        return path

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


def womm(user: User, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return user.run(sys.executable, "-m", "womm_jupyter", *args, cwd=home,
                    env=user.womm_env(home, **env), read_anywhere=True)


# -- H2: the state root and the agent socket -----------------------------------------------

def test_a_state_root_another_user_created_is_refused(local_user: Callable[[str], User],
                                                      home_of: Callable[[User], Path]) -> None:
    victim, attacker = local_user("victim"), local_user("other")
    root = Path(f"/tmp/womm-{victim.uid}")
    made = attacker.run("sh", "-c", f"mkdir {root} && chmod 0777 {root}")
    assert made.returncode == 0, made.stderr
    home = home_of(victim)
    ran = womm(victim, home, "parallel", "--backend", "local", "--kube-pods", "1", "--",
               "echo", ":::", "a")
    assert ran.returncode == 1, ran
    assert ran.stderr.splitlines()[-1] == (
        f"womm: error: womm's state directory {root} belongs to uid {attacker.uid}, not to you "
        f"(uid {victim.uid}): another user may have created it to read your jobs or run "
        "commands as you. Have it removed (by its owner or root), or set XDG_RUNTIME_DIR to a "
        "private directory of yours."), ran.stderr
    assert list(root.iterdir()) == []  # no task directory, no agent socket in there


def test_an_open_state_root_of_ones_own_is_refused(local_user: Callable[[str], User],
                                                   home_of: Callable[[User], Path]) -> None:
    victim = local_user("victim")
    root = Path(f"/tmp/womm-{victim.uid}")
    assert victim.run("sh", "-c", f"mkdir {root} && chmod 0777 {root}").returncode == 0
    home = home_of(victim)
    ran = womm(victim, home, "parallel", "--backend", "local", "--kube-pods", "1", "--",
               "echo", ":::", "a")
    assert ran.returncode == 1, ran
    assert f"womm's state directory {root} is open to other users (mode 0777)" in ran.stderr
    assert f"rm -rf {root}" in ran.stderr
    assert list(root.iterdir()) == []


def test_a_shared_xdg_runtime_dir_is_not_used(local_user: Callable[[str], User],
                                              home_of: Callable[[User], Path]) -> None:
    victim, attacker = local_user("victim"), local_user("other")
    shared = home_of(attacker)
    shared.chmod(0o777)
    home = home_of(victim)
    ran = womm(victim, home, "parallel", "--backend", "local", "--kube-pods", "1", "--",
               "echo", ":::", "a", XDG_RUNTIME_DIR=str(shared))
    assert ran.returncode == 0 and ran.stdout == "a\n", ran
    assert list(shared.iterdir()) == []
    root = Path(f"/tmp/womm-{victim.uid}")
    st = root.lstat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (victim.uid, 0o700)


def test_the_agent_socket_is_the_users_alone(local_user: Callable[[str], User],
                                             tmp_path: Path) -> None:
    """The review's reproduction: another user reaching the socket ran `id` as the victim."""
    attacker = local_user("other")
    where = Path(f"/tmp/wommsec-agent-{uuid.uuid4().hex[:8]}")
    where.mkdir()
    where.chmod(0o755)  # reachable: only the socket's own mode stands in the way
    listen = where / "agent.sock"
    log = (tmp_path / "agent.log").open("wb")
    agent = subprocess.Popen([_paths.perl(), str(_paths.transport_file("agent.pl")),
                              "--listen", str(listen), "--name", "w"], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while not listen.exists():
            assert agent.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "agent.log").read_text()
            time.sleep(0.05)
        assert stat.S_IMODE(listen.stat().st_mode) == 0o600
        tried = attacker.run("perl", "-e", AGENT_CLIENT, str(listen))
        assert tried.returncode == 3, tried
        assert tried.stdout == "refused: Permission denied\n"
        # The owner still runs jobs through it.
        ours = subprocess.run(["perl", "-e", AGENT_CLIENT, str(listen)], capture_output=True)
        assert ours.returncode == 0 and b"answered: " in ours.stdout, ours
        assert f"{os.getuid()}\n".encode() in ours.stdout
    finally:
        agent.terminate()
        agent.wait(timeout=10)
        shutil.rmtree(where, ignore_errors=True)


def test_local_workers_sockets_are_private(local_user: Callable[[str], User], tools: Any,
                                           tmp_path: Path) -> None:
    """A real run: every socket and directory under the state root stays the user's."""
    attacker = local_user("other")
    proc = subprocess.Popen([tools.womm_script, "parallel", "--backend", "local", "--kube-pods",
                             "2", "--", "sleep 3; echo {}", ":::", "a", "b"], cwd=tmp_path,
                            env=tools.clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    root = _paths.state_root()
    sockets: list[Path] = tools.wait_for(
        lambda: [p for p in root.glob("*/w/*/agent.sock") if _is_ours(p, tmp_path)],
        30, "the run's agent sockets")
    try:
        for sock in sockets:
            assert stat.S_IMODE(sock.stat().st_mode) == 0o600, sock
            tried = attacker.run("perl", "-e", AGENT_CLIENT, str(sock))
            assert tried.returncode == 3, tried
        assert stat.S_IMODE(root.stat().st_mode) == 0o700
    finally:
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and sorted(out.split()) == [b"a", b"b"], err


def _is_ours(sock: Path, cwd: Path) -> bool:
    meta = sock.parent.parent.parent / "task.json"
    try:
        return str(cwd) in meta.read_text()
    except OSError:
        return False


@pytest.mark.parametrize("runtime", ["/proc/self", "long"])
def test_an_unusable_xdg_runtime_dir_falls_back_to_tmp(runtime: str,
                                                      local_user: Callable[[str], User],
                                                      home_of: Callable[[User], Path]) -> None:
    """Review rows 88-89: /proc/self gave a traceback; a directory too long for a socket path
    made every worker fail with a message blaming the image."""
    victim = local_user("victim")
    home = home_of(victim)
    if runtime == "long":
        deep = home / ("d" * 90)
        victim.run("mkdir", "-m", "0700", str(deep))
        runtime = str(deep)
    ran = womm(victim, home, "parallel", "--backend", "local", "--kube-pods", "1",
               "--start-timeout", "20", "--", "echo", ":::", "a", XDG_RUNTIME_DIR=runtime)
    assert ran.returncode == 0 and ran.stdout == "a\n", ran
    assert Path(f"/tmp/womm-{victim.uid}").is_dir()


def test_a_uid_without_a_passwd_entry_runs(local_user: Callable[[str], User],
                                           home_of: Callable[[User], Path]) -> None:
    """Review row 87: getpass.getuser() raised KeyError (docker run -u 4242, OpenShift)."""
    victim = local_user("victim")
    home = home_of(victim)
    nameless = User("", victim.uid + 7919, victim.gid)  # no passwd entry for this uid
    os.chown(home, nameless.uid, nameless.gid)
    try:
        env = {k: v for k, v in nameless.womm_env(home).items() if k not in ("USER", "LOGNAME")}
        ran = nameless.run(sys.executable, "-m", "womm_jupyter", "parallel", "--backend",
                           "local", "--kube-pods", "1", "--", "echo", ":::", "a", cwd=home,
                           env=env, read_anywhere=True)
        assert ran.returncode == 0 and ran.stdout == "a\n", ran
    finally:
        shutil.rmtree(f"/tmp/womm-{nameless.uid}", ignore_errors=True)


# -- Low 7: task ids ---------------------------------------------------------------------------

BAD_TASK_IDS = ["", "/", "/etc", "/tmp/womm-0/k3xq9m2a", "..", "../..", "../../..", ".",
                "k3xq9m2a/..", "k3xq9m2a/../x", "./k3xq9m2a", "K3XQ9M2A", "k3xq9m2", "k3xq9m2ab",
                "k3xq9m2a ", " k3xq9m2a", "k3xq9m2a\n", "k3xq-m2a", "k3xq9m1a", "k3xq9m0a",
                "k\u0430xq9m2a",  # a Cyrillic a
                "k3xq9m2\u00e9", "\x00k3xq9m2", "k3xq9m2a" * 64, "womm-task-k3xq9m2a"]


@pytest.mark.parametrize("bad", BAD_TASK_IDS)
def test_bad_task_ids_are_refused(bad: str) -> None:
    assert not is_task_id(bad)
    with pytest.raises(OptionError) as raised:
        check_task_id(bad)
    message = str(raised.value)
    assert "is not a womm task id (8 lower-case letters and digits, e.g. k3xq9m2a)" in message
    assert len(message) < 200  # an over-long id is cut, not echoed whole


def test_task_ids_womm_makes_are_accepted() -> None:
    for _ in range(200):
        made = new_task_id()
        assert is_task_id(made) and check_task_id(made) == made


@pytest.mark.parametrize("bad", ["/etc", "..", "", ".", "a/../../x", "/tmp/elsewhere"])
def test_task_dir_never_leaves_the_state_root(bad: str) -> None:
    with pytest.raises(WommError, match="is not a task id: 'womm status' lists your tasks"):
        _paths.task_dir(bad)


# -- Medium 3: what the testbed's environment capture sets apart ------------------------------

@pytest.mark.parametrize(("name", "value"), [
    ("API_TOKEN", "x"), ("MYSQL_PWD", "x"), ("GH_PAT", "x"), ("CI_JOB_JWT", "x"),
    ("SENTRY_DSN", "x"), ("SLACK_WEBHOOK_URL", "x"), ("AIRFLOW_CONN_DB", "x"),
    ("SESSION_COOKIE", "x"), ("NETRC", "x"), ("AWS_SECRET_ACCESS_KEY", "x"),
    ("DATABASE_URL", "postgres://u:p@h/db"), ("PIP_INDEX_URL", "https://user:hunter2@pypi.x/s"),
    ("HTTPS_PROXY", "http://me:pw@proxy:3128"), ("REDIS_URL", "redis://:pass@h:6379"),
    ("REPO", "https://ghp_abcdefghijklmnopqrstuvwxyz0123@github.com/x"),
    ("CLONE", "https://oauth2token@gitlab.example/x.git"),
    ("DEPLOY", "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----"),
    ("GHTOK", "ghp_abcdefghijklmnopqrstuvwxyz0123"), ("AMZ", "AKIAABCDEFGHIJKLMNOP"),
    ("BEARER", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig"),
])
def test_credentials_are_set_apart_by_name_or_value(name: str, value: str) -> None:
    captured = sort_out(f"{name}={value}\0".encode(), {})
    assert captured.secrets == {name: value} and captured.environment == {}


@pytest.mark.parametrize(("name", "value"), [
    ("GREETING", "hello"), ("PATH", "/opt/bin:/usr/bin:/bin"), ("DATA", "https://example.org/x"),
    ("PROXY", "http://proxy:3128"), ("MIRROR", "ftp://ftp.debian.org/debian"),
    ("EMAIL", "me@example.org"), ("OLDPATH", "x"), ("PATHS", "a:b"),
])
def test_ordinary_variables_are_kept(name: str, value: str) -> None:
    assert not looks_secret(name, value)
    assert sort_out(f"{name}={value}\0".encode(), {}).environment == {name: value}


# -- High 1, Medium 3, Medium 4: the `womm setup` testbed -------------------------------------

@pytest.fixture
def session(docker_client: Any, tmp_path: Path) -> Iterator[Any]:
    from womm_jupyter.setup.testbed import SetupSession

    project = tmp_path / "project"
    project.mkdir()
    made = SetupSession(docker_client, project, IMAGE, project_id=f"sec{uuid.uuid4().hex[:6]}")
    yield made
    made.close()


def _modes(path: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.lstat().st_mode) for p in [path, *path.iterdir()]}


@pytest.mark.docker
def test_another_user_cannot_replace_the_testbed_launcher(
        session: Any, local_user: Callable[[str], User], tmp_path: Path) -> None:
    """The review's reproduction: another user swapped `launcher` (run as root with the host at
    /mnt) and planted LD_PRELOAD in the captured environment."""
    attacker = local_user("other")
    script = tmp_path / "setup.sh"
    script.write_text("export GREETING=hello\nexport API_TOKEN=hunter2\necho setup ran\n")
    testbed = session.testbed(script)
    setup_dir = testbed.setup_dir
    assert stat.S_IMODE(setup_dir.parent.stat().st_mode) == 0o700
    assert _modes(setup_dir) == {setup_dir.name: 0o700, "launcher": 0o600, "save.sh": 0o600,
                                 "bashrc": 0o600, "shrc": 0o600, "term": 0o600, "env": 0o600,
                                 "script": 0o600}
    tried = attacker.run("sh", "-c", f"rm -f {setup_dir}/launcher; "
                         f"printf 'echo attacker code runs as root\\n' > {setup_dir}/launcher; "
                         f"printf 'LD_PRELOAD=/tmp/evil.so\\0' > {setup_dir}/env")
    assert tried.returncode != 0 and "Permission denied" in tried.stderr, tried
    testbed.start()
    output = b"".join(testbed.output()).decode()
    assert "setup ran" in output and "attacker" not in output, output
    round_ = session.finish(testbed)
    assert round_.capture.environment == {"GREETING": "hello"}
    assert round_.capture.secrets == {"API_TOKEN": "hunter2"}
    env_file = setup_dir / "env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert b"API_TOKEN=hunter2" in env_file.read_bytes()
    read = attacker.run("cat", str(env_file))
    assert read.returncode != 0 and "hunter2" not in read.stdout


@pytest.mark.docker
def test_testbed_cannot_reach_the_hosts_sockets(session: Any, tmp_path: Path) -> None:
    """The host is at /mnt, read-only, without its sockets: /mnt/run/docker.sock drove the
    host's Docker (root) through the read-only mount."""
    engine = Path(os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
                  .removeprefix("unix://")).resolve()
    assert engine.is_socket(), engine
    hostname = Path("/etc/hostname").read_text().strip()
    # Another user's socket in /tmp (ssh-agent and tmux put theirs there).
    listening = socket.socket(socket.AF_UNIX)
    planted = Path(f"/tmp/wommsec-{uuid.uuid4().hex[:8]}.sock")
    listening.bind(str(planted))
    listening.listen(1)
    script = tmp_path / "probe.sh"
    script.write_text(f"""
cat /mnt/etc/hostname
touch /mnt/womm-probe 2>/dev/null && echo HOST-WRITABLE
for path in /mnt{engine} /mnt/var/run/docker.sock /mnt/run/docker.sock /mnt{planted}; do
  perl -MSocket -e 'socket(S, PF_UNIX, SOCK_STREAM, 0) or die;
    connect(S, pack_sockaddr_un($ARGV[0])) and print "CONNECTED $ARGV[0]\\n"' "$path"
done
find /mnt/run /mnt/proc /mnt/sys /mnt/dev /mnt/tmp -mindepth 1 | sed 's/^/LISTED /'
echo probe done
""")
    testbed = session.testbed(script)
    try:
        testbed.start()
        output = b"".join(testbed.output()).decode()
    finally:
        listening.close()
        planted.unlink()
    assert testbed.wait() == 0, output
    assert hostname in output and "probe done" in output, output
    assert "HOST-WRITABLE" not in output and not Path("/womm-probe").exists()
    assert "CONNECTED" not in output, output
    assert "LISTED" not in output, output  # empty: no sockets, no /proc/sys to write


@pytest.mark.docker
def test_shell_history_stays_out_of_the_image(session: Any) -> None:
    """What was typed in the testbed (`export TOKEN=...`) was committed in ~/.bash_history."""
    testbed = session.testbed(term="dumb")
    sock = testbed.attach_socket()
    testbed.start()
    typed = ("export API_TOKEN=supersecret-value\n"
             "echo 'print(1)' > /root/.python_history\n"
             "bash -ic 'history -s nested-secret; history -a'\n"
             "exit\n")
    received = b""
    deadline = time.monotonic() + 60
    sock.settimeout(1)
    testbed.resize(40, 200)
    while not received.rstrip().endswith((b"#", b"$")) and time.monotonic() < deadline:
        try:
            received += sock.recv(65536)
        except TimeoutError:
            pass
    # The prompt (readline may shorten it to "<...project# " before the resize arrives).
    assert received.rstrip().endswith(b"#"), received
    sock.sendall(typed.encode())
    assert testbed.wait() == 0
    sock.close()
    round_ = session.finish(testbed)
    assert round_.capture.secrets == {"API_TOKEN": "supersecret-value"}
    # The container's filesystem is what publish() commits.
    import docker.errors

    for path in ("/root/.bash_history", "/root/.python_history"):
        with pytest.raises(docker.errors.NotFound):
            testbed.container.get_archive(path)
    changed: Sequence[dict[str, Any]] = testbed.container.diff() or []
    assert not [c["Path"] for c in changed if Path(c["Path"]).name.startswith(".")
                and "hist" in Path(c["Path"]).name], changed


@pytest.mark.docker
def test_credential_files_written_in_the_testbed_are_named(session: Any, tmp_path: Path) -> None:
    script = tmp_path / "login.sh"
    script.write_text("printf 'machine h login u password p\\n' > /root/.netrc\n"
                      "mkdir -p /root/.docker /root/.ssh && echo '{}' > /root/.docker/config.json\n"
                      "echo key > /root/.ssh/id_ed25519 && echo pub > /root/.ssh/id_ed25519.pub\n"
                      "echo fine > /root/notes.txt\n")
    testbed = session.testbed(script)
    testbed.start()
    assert testbed.wait() == 0
    round_ = session.finish(testbed)
    assert round_.credential_files == ("/root/.docker/config.json", "/root/.netrc",
                                       "/root/.ssh/id_ed25519")


@pytest.mark.docker
def test_history_in_a_project_that_is_a_home_is_left_alone(docker_client: Any,
                                                           tmp_path: Path) -> None:
    """`womm setup` run in a home directory: that home is this machine's, mounted, never
    committed; its shell history is the user's own and stays."""
    from womm_jupyter.setup.testbed import SetupSession

    home = tmp_path / "home"
    home.mkdir()
    (home / ".bash_history").write_text("the user's own history\n")
    script = tmp_path / "setup.sh"
    script.write_text(f"echo 'x' > /root/.bash_history\nexport HOME={home}\n")
    made = SetupSession(docker_client, home, IMAGE, project_id=f"sec{uuid.uuid4().hex[:6]}")
    try:
        testbed = made.testbed(script)
        testbed.start()
        assert testbed.wait() == 0
        made.finish(testbed)
        import docker.errors

        with pytest.raises(docker.errors.NotFound):
            testbed.container.get_archive("/root/.bash_history")
    finally:
        made.close()
    assert (home / ".bash_history").read_text() == "the user's own history\n"
