"""Share method resolution and the upload's file selection (no cluster needed)."""

from __future__ import annotations

import pytest

from womm_jupyter import share as share_methods
from womm_jupyter.config import ProjectConfig, save_project
from womm_jupyter.errors import OptionError
from womm_jupyter.options import ParallelOptions, SetupOptions, resolve
from womm_jupyter.share import eager as share


def test_method_numbers_names_and_project_config(tmp_path):
    assert share_methods.method("", tmp_path) == "none"  # no project: the image's files only
    save_project(tmp_path, ProjectConfig(project_id="p", image="", share="eager-syncback"))
    sub = tmp_path / "sub"
    sub.mkdir()
    assert share_methods.method("", sub) == "eager-syncback"  # found above, as git finds .git
    assert share_methods.method("2", sub) == "eager"
    assert share_methods.method("4", sub) == "none"
    with pytest.raises(OptionError, match="--share must be one of"):
        share_methods.method("rsync", sub)


def test_share_option_has_the_setup_menu_choices():
    parallel = ParallelOptions.__dataclass_fields__["share"].metadata["choices"]
    assert parallel == SetupOptions.__dataclass_fields__["share"].metadata["choices"]
    with pytest.raises(OptionError, match="--share must be one of"):
        resolve(ParallelOptions, {"kube_pods": 1, "share": "nfs"}, environ={}, config={})
    assert resolve(ParallelOptions, {"kube_pods": 1}, environ={"WOMM_SHARE": "3"},
                   config={}).share == "3"


def test_hash_tree_lists_what_the_upload_sends(tmp_path):
    (tmp_path / ".gitignore").write_text("*.log\n")
    (tmp_path / "a.txt").write_text("a\n")
    (tmp_path / "run.log").write_text("x\n")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / ".wommignore").write_text("big/\n")
    (tmp_path / "d" / "big").mkdir()
    (tmp_path / "d" / "big" / "blob").write_text("b\n")
    (tmp_path / "d" / "name with spaces").write_text("s\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref\n")
    hashes = share.hash_tree(tmp_path)
    assert sorted(hashes) == [".gitignore", "a.txt", "d/.wommignore", "d/name with spaces"]
    assert hashes["a.txt"] == "87428fc522803d31065e7bce3cf03fe475096631e5e07bbd7a0fde60c4cf25c7"


def _plan(**kw):
    from pathlib import Path

    from womm_jupyter.backends.base import LaunchPlan, WorkerPlan

    return LaunchPlan(task_id="abc", owner="me", cwd=Path("/p"), command="true",
                      workers=(WorkerPlan("w0", 1, Path("/s")),), shell="",
                      client_path="/c", created=0.0, coordinator_pid=1, host="h", cpu=1.0,
                      memory="512Mi", image="i", **kw)


def test_privileged_fuse_is_an_opt_in_that_makes_lazy_workers_privileged_and_says_why():
    from womm_jupyter.kube.manifests import worker_deployment

    assert resolve(ParallelOptions, {"kube_pods": 1}, environ={"WOMM_PRIVILEGED_FUSE": "1"},
                   config={}).privileged_fuse is True
    default = worker_deployment(_plan(), "agent")
    pod = default["spec"]["template"]
    assert pod["spec"]["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False, "privileged": False}
    assert "womm/privileged" not in default["metadata"]["annotations"]
    assert "annotations" not in pod["metadata"]
    lazy = worker_deployment(_plan(fuse=True), "agent")
    pod = lazy["spec"]["template"]
    assert pod["spec"]["containers"][0]["securityContext"] == {"privileged": True}
    assert "--privileged-fuse" in lazy["metadata"]["annotations"]["womm/privileged"]
    assert pod["metadata"]["annotations"] == {"womm/privileged": lazy["metadata"]["annotations"]
                                              ["womm/privileged"]}
    # Labels are unchanged: `womm status` and `womm finish` find the task as before.
    assert pod["metadata"]["labels"] == default["spec"]["template"]["metadata"]["labels"]


def test_lazy_mount_script_mounts_the_directory_over_itself_in_passive_mode():
    from womm_jupyter.share.lazy import mount_script

    script = mount_script()
    assert 'sshfs -f -o passive,dcache_timeout=1 ":$dir" "$dir" <&3' in script
    assert "echo womm-mounted >&2" in script
