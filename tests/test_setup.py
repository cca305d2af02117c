"""`womm setup` on the real Docker engine, pushing to a real local registry.

The registry is Debian's ``docker-registry`` (``apt-get install docker-registry``), served by
a session fixture on a free loopback port with its storage in a temporary directory; Docker
pushes to 127.0.0.0/8 over plain HTTP without configuration. The interactive dialogue runs
through a real pty (pexpect).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest
from support.registry import Registry, setup_containers, setup_images

pytestmark = pytest.mark.docker

NOPERL_IMAGE = "womm-test-noperl:bookworm"
# Bytes a job must print exactly: quotes, a newline, UTF-8 (ü €), no trailing newline.
GREETING = 'hello "world"\nsecond line \u00fc \u20ac'
GREETING_BASH = r"""$'hello "world"\nsecond line \303\274 \342\202\254'"""
TOOL = "printf '#!/bin/sh\\necho hello from the tool\\n' > /usr/local/bin/hello-womm " \
       "&& chmod +x /usr/local/bin/hello-womm"


@pytest.fixture(scope="session")
def noperl_image(docker_client: Any) -> str:
    """womm-base without perl: its binary moved to /opt/perl-stash (a test "installs" it
    back with cp)."""
    import docker.errors

    try:
        docker_client.images.get(NOPERL_IMAGE)
        return NOPERL_IMAGE
    except docker.errors.ImageNotFound:
        pass
    container = docker_client.containers.run(
        "womm-base:bookworm", ["/bin/sh", "-c", "mkdir -p /opt/perl-stash && "
                               "mv /usr/bin/perl /opt/perl-stash/perl && rm -f /usr/bin/perl5*"],
        detach=True, network_mode="none")
    try:
        assert container.wait()["StatusCode"] == 0, container.logs()
        repository, tag = NOPERL_IMAGE.split(":")
        container.commit(repository, tag)
    finally:
        container.remove(force=True)
    return NOPERL_IMAGE


# -- helpers --------------------------------------------------------------------------------

@pytest.fixture
def project(tmp_path: Path, docker_client: Any) -> Iterator[Path]:
    """A project directory; afterwards no setup container of it may remain, and the images
    its setups made are removed."""
    before = setup_images(docker_client)
    directory = tmp_path / "project"
    directory.mkdir()
    yield directory
    left = setup_containers(docker_client, tmp_path)
    for name in left:
        docker_client.containers.get(name).remove(force=True)
    for _ in range(4):  # children first: an image another was built on cannot go before it
        made = setup_images(docker_client) - before
        for image_id in made:
            try:
                docker_client.images.remove(image_id, force=True)
            except Exception:
                pass
        if not made:
            break
    assert not left, f"setup containers left behind: {left}"


@pytest.fixture
def env(tmp_path: Path, tools: Any) -> dict[str, str]:
    """This environment, with the user config in the test's own directory."""
    return dict(tools.clean_env(), XDG_CONFIG_HOME=str(tmp_path / "xdg"), TERM="xterm")


def womm_argv() -> list[str]:
    import sys

    beside = Path(sys.executable).parent / "womm"
    return [str(beside) if beside.is_file() else "womm"]


def womm_cmd(*args: str) -> list[str]:
    return [*womm_argv(), *args]


def spawn(args: list[str], cwd: Path, env: dict[str, str], log: Path) -> pexpect.spawn:
    argv = womm_argv()
    child = pexpect.spawn(argv[0], [*argv[1:], *args], cwd=str(cwd), env=env,
                          encoding="utf-8", timeout=120, dimensions=(40, 200))
    child.logfile_read = log.open("w")
    return child


def answer(child: pexpect.spawn, prompt: str, text: str) -> None:
    child.expect_exact(prompt)
    child.sendline(text)


def shell(child: pexpect.spawn, *commands: str) -> None:
    """Type commands at the testbed's prompt, then exit the shell."""
    for command in commands:
        child.expect_exact("(womm testbed)")
        child.sendline(command)
    child.expect_exact("(womm testbed)")
    child.sendline("exit")


def finish(child: pexpect.spawn) -> int:
    child.expect(pexpect.EOF)
    child.close()
    return int(child.exitstatus if child.exitstatus is not None else -(child.signalstatus or 0))


def project_config(directory: Path) -> dict[str, Any]:
    return dict(json.loads((directory / ".womm" / "config.json").read_text()))


# -- tests ----------------------------------------------------------------------------------

def test_interactive_setup_then_jobs_run_the_image(project: Path, env: dict[str, str],
                                                    registry: Registry, docker_client: Any,
                                                    tools: Any, tmp_path: Path) -> None:
    child = spawn(["setup"], project, env, tmp_path / "pty.log")
    child.expect_exact(f"How do you want to share {project} to your cloud?")
    child.expect_exact("3) eagerly (syncback on complete, not recommended)")
    child.expect_exact("*) never mind, quit")
    answer(child, "[*] > ", "4")
    child.expect_exact("What is the docker hub name for the base image for your operating "
                       "system?")
    answer(child, "[ubuntu:22.04] > ", "womm-base:bookworm")
    child.expect_exact("What is a prefix of a docker image name that you are authorized to "
                       "push to a secure location?")
    child.expect_exact("e.g. 'us-west4-docker.pkg.dev/angr-ci/defcon/'")
    answer(child, "> ", registry.prefix)
    for line in ("This is a *local* shell where any dependencies you install will be saved.",
                 "The goal is that if your application works here, it will work on the cloud "
                 "too.", "Make it work!", "Also make sure our dependencies are installed: perl"):
        child.expect_exact(line)
    shell(child, TOOL, f"export GREETING={GREETING_BASH}", "export API_TOKEN=hunter2",
          "echo made > made-in-testbed; cd /tmp")
    child.expect_exact("These exported variables will be in the run-time environment:")
    child.expect_exact(f"GREETING={GREETING!r}")
    answer(child, "API_TOKEN looks like a secret", "")  # default: n
    child.expect_exact("Left out (they look like secrets): API_TOKEN")
    child.expect_exact("Does it work? y/n")
    answer(child, "[y] > ", "y")
    child.expect_exact("Saved in ")
    output = child.before or ""
    assert finish(child) == 0, (tmp_path / "pty.log").read_text()
    assert (project / "made-in-testbed").read_text() == "made\n"

    saved = project_config(project)
    repository, digest = saved["image"].split("@")
    assert repository.startswith(f"{registry.prefix}womm-image-")
    assert saved["share"] == "none" and saved["base"] == "womm-base:bookworm"
    assert saved["environment"] == {"GREETING": GREETING}
    name = repository.removeprefix(registry.prefix)
    assert name in registry.catalog()
    assert registry.digest(name, saved["tag"].rsplit(":", 1)[1]) == digest
    assert "digest: " + digest in output
    assert json.loads((tmp_path / "xdg" / "womm" / "config.json").read_text()) == \
        {"prefix": registry.prefix}
    # Secrets and incidental variables are not in the image.
    image_env = docker_client.images.get(saved["image"]).attrs["Config"]["Env"]
    assert f"GREETING={GREETING}" in image_env
    assert not [e for e in image_env if e.split("=")[0] in ("API_TOKEN", "PWD", "SHLVL",
                                                            "OLDPWD", "HOSTNAME", "_")]

    # Jobs on the docker backend run the recorded image without --image.
    ran = tools.run(womm_cmd("parallel", "--kube-pods", "2", "--backend", "docker", "--",
                                   "-k", 'hello-womm {}; printf "%s[%s]" "$GREETING" '
                                   '"${API_TOKEN-unset}"', ":::", "1", "2"), project, env=env)
    assert ran.returncode == 0, ran.explain()
    job = b"hello from the tool\n" + GREETING.encode() + b"[unset]"
    assert ran.stdout == job * 2, ran.explain()


def test_missing_perl_is_named_and_no_leaves_nothing(project: Path, env: dict[str, str],
                                                     registry: Registry, noperl_image: str,
                                                     docker_client: Any,
                                                     tmp_path: Path) -> None:
    images_before = setup_images(docker_client)
    catalog_before = registry.catalog()
    child = spawn(["setup", "--share", "2", "--base", noperl_image, "--prefix",
                   registry.prefix], project, env, tmp_path / "pty.log")
    child.expect_exact("Also make sure our dependencies are installed: perl, rsync")
    shell(child)
    child.expect_exact("You didn't install perl, rsync!")
    answer(child, "Try again? y/n", "y")
    child.expect_exact("Make it work!")
    # Round two starts from round one's image; "install" what is missing.
    shell(child, "cp /opt/perl-stash/perl /usr/bin/perl",
          "printf '#!/bin/sh\\n' > /usr/local/bin/rsync && chmod +x /usr/local/bin/rsync")
    child.expect_exact("Does it work? y/n")
    assert "You didn't install" not in (child.before or "")
    answer(child, "[y] > ", "n")
    child.expect_exact("Nothing was pushed; the project config is unchanged.")
    assert finish(child) == 1, (tmp_path / "pty.log").read_text()
    assert registry.catalog() == catalog_before
    assert setup_images(docker_client) == images_before
    assert setup_containers(docker_client, tmp_path) == []
    assert not (project / ".womm").exists()


@pytest.mark.parametrize("where", ["menu", "does-it-work"])
def test_interrupt_leaves_no_container(project: Path, env: dict[str, str], registry: Registry,
                                       docker_client: Any, tmp_path: Path, where: str) -> None:
    images_before = setup_images(docker_client)
    child = spawn(["setup", "--base", "womm-base:bookworm", "--prefix", registry.prefix],
                  project, env, tmp_path / "pty.log")
    child.expect_exact("[*] > ")
    if where == "does-it-work":
        child.sendline("4")
        shell(child, "export A=1")
        child.expect_exact("Does it work? y/n")
        child.expect_exact("[y] > ")
        assert setup_containers(docker_client, tmp_path)  # the testbed waits for the answer
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130, (tmp_path / "pty.log").read_text()
    assert setup_containers(docker_client, tmp_path) == []
    assert setup_images(docker_client) == images_before
    assert not (project / ".womm").exists()


def test_script_setup_show_and_repeat(project: Path, env: dict[str, str], registry: Registry,
                                      docker_client: Any, tools: Any, tmp_path: Path) -> None:
    script = tmp_path / "setup.sh"
    script.write_text(f"{TOOL}\nexport GREETING={GREETING_BASH}\necho script ran\n")
    args = ["setup", "--script", str(script), "--yes", "--share", "4", "--base",
            "womm-base:bookworm", "--prefix", registry.prefix]
    ran = tools.run(womm_argv() + args, project, env=env)
    assert ran.returncode == 0, ran.explain()
    assert "script ran" in ran.out
    assert "Does it work?" not in ran.out
    first = project_config(project)
    assert first["environment"] == {"GREETING": GREETING}

    shown = tools.run(womm_cmd("setup", "--show"), project, env=env)
    assert shown.returncode == 0, shown.explain()
    assert f"image:       {first['image']}" in shown.out
    assert f"GREETING={GREETING!r}" in shown.out
    assert "share:       none" in shown.out

    # A second setup starts from the project's image: the tool is still there.
    again = tmp_path / "again.sh"
    again.write_text("hello-womm > tool-output\nexport SECOND='two words'\n")
    ran = tools.run(womm_cmd("setup", "--script", str(again), "--yes"), project, env=env)
    assert ran.returncode == 0, ran.explain()
    assert f"Starting from the project's image {first['image']}" in ran.out
    assert (project / "tool-output").read_text() == "hello from the tool\n"
    second = project_config(project)
    assert second["project_id"] == first["project_id"]
    assert second["image"] != first["image"]
    assert second["image"].split("@")[0] == first["image"].split("@")[0]
    assert second["environment"] == {"GREETING": GREETING, "SECOND": "two words"}
    ran = tools.run(womm_cmd("parallel", "--kube-pods", "1", "--backend", "docker", "--",
                             ': {}; printf "%s|%s" "$GREETING" "$SECOND"', ":::", "x"),
                    project, env=env)
    assert ran.returncode == 0 and ran.stdout == (GREETING + "|two words").encode(), \
        ran.explain()


def test_a_second_interactive_setup_offers_the_existing_image(
        project: Path, env: dict[str, str], registry: Registry, tools: Any,
        tmp_path: Path) -> None:
    script = tmp_path / "setup.sh"
    script.write_text(f"{TOOL}\nexport GREETING={GREETING_BASH}\n")
    ran = tools.run(womm_cmd("setup", "--script", str(script), "--yes", "--share", "2",
                             "--base", "womm-base:bookworm", "--prefix", registry.prefix),
                    project, env=env)
    # eager shares need rsync in the worker: womm-base lacks it, the check says so.
    assert ran.returncode == 1 and "You didn't install rsync!" in ran.out, ran.explain()
    assert "the image lacks rsync after the setup script" in ran.err
    ran = tools.run(womm_cmd("setup", "--script", str(script), "--yes", "--share", "4",
                             "--base", "womm-base:bookworm", "--prefix", registry.prefix),
                    project, env=env)
    assert ran.returncode == 0, ran.explain()
    first = project_config(project)

    child = spawn(["setup"], project, env, tmp_path / "pty.log")
    child.expect_exact(f"This project ({project}) runs {first['image']}, shared none.")
    answer(child, "Do you want to change the share type? y/n", "")
    answer(child, "Do you want to change your base image? y/n", "")
    child.expect_exact(f"Starting from the project's image {first['image']}")
    shell(child, "hello-womm > again && export MORE=$'x\\ty'")
    child.expect_exact("MORE='x\\ty'")
    answer(child, "Does it work? y/n", "y")
    assert finish(child) == 0, (tmp_path / "pty.log").read_text()
    assert (project / "again").read_text() == "hello from the tool\n"
    second = project_config(project)
    assert second["project_id"] == first["project_id"] and second["share"] == "none"
    assert second["environment"] == {"GREETING": GREETING, "MORE": "x\ty"}


def test_files_created_in_the_testbed_go_back_to_the_user(project: Path, docker_client: Any,
                                                          tmp_path: Path) -> None:
    from womm_jupyter.setup.testbed import SetupSession

    (project / "old").write_text("")
    os.chown(project / "old", 0, 0)
    script = tmp_path / "make.sh"
    script.write_text("mkdir -p sub/deeper && echo x > sub/deeper/file && touch top\n")
    session = SetupSession(docker_client, project, "womm-base:bookworm", project_id="chowntest",
                           owner=(12345, 12346))
    try:
        testbed = session.testbed(script)
        testbed.start()
        assert testbed.wait() == 0
        result = session.finish(testbed)
    finally:
        session.close()
    assert result.missing == ()
    for path in ("sub", "sub/deeper", "sub/deeper/file", "top"):
        st = (project / path).lstat()
        assert (st.st_uid, st.st_gid) == (12345, 12346), path
    assert (project / "old").stat().st_uid == 0  # it was there before: left alone


def test_setup_without_a_terminal_or_script_says_what_to_do(tmp_path: Path, tools: Any,
                                                            env: dict[str, str]) -> None:
    ran = tools.run(womm_cmd("setup", "--share", "4"), tmp_path, env=env)
    assert ran.returncode == 2
    assert "womm: error: womm setup: the testbed shell needs a terminal" in ran.err
    assert "--script FILE" in ran.err


def test_show_without_setup(tmp_path: Path, tools: Any, env: dict[str, str]) -> None:
    ran = tools.run(womm_cmd("setup", "--show"), tmp_path, env=env)
    assert ran.returncode == 1
    assert f"No womm setup in {tmp_path} or above" in ran.out


def test_bad_project_config_is_reported(tmp_path: Path, tools: Any,
                                        env: dict[str, str]) -> None:
    (tmp_path / ".womm").mkdir()
    (tmp_path / ".womm" / "config.json").write_text("{not json")
    ran = tools.run(womm_cmd("parallel", "--kube-pods", "1", "--backend", "local", "--",
                                   "echo", ":::", "1"), tmp_path, env=env)
    assert ran.returncode == 1, ran.explain()
    assert "is not valid JSON" in ran.err and "run `womm setup` again" in ran.err


def test_sigterm_during_setup_cleans_up(project: Path, env: dict[str, str],
                                        registry: Registry, docker_client: Any,
                                        tmp_path: Path) -> None:
    child = spawn(["setup", "--share", "4", "--base", "womm-base:bookworm", "--prefix",
                   registry.prefix], project, env, tmp_path / "pty.log")
    child.expect_exact("(womm testbed)")
    assert setup_containers(docker_client, tmp_path)
    os.kill(child.pid, signal.SIGTERM)
    child.expect(pexpect.EOF)
    child.close()
    assert setup_containers(docker_client, tmp_path) == []
