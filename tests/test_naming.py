"""Names womm gives to things: valid everywhere, short enough, never colliding."""

from __future__ import annotations

import re

import pytest

from womm_jupyter.naming import kube_safe_name, new_task_id, owner, task_object_name

# A Kubernetes object name (DNS subdomain, limited here to a label's 63 characters) and a
# label value: lowercase alphanumerics, '-' and '.', starting and ending alphanumeric.
VALID = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")

NEAR_IDENTICAL = [
    "experiment", "Experiment", "EXPERIMENT", "experiment ", " experiment", "experiment.",
    "experiment-", "experiment_", "experiment__", "experiment 1", "experiment-1",
    "experiment_1", "experiment.1", "experiment--1", "experiment/1", "experiment:1",
    "expériment", "experiment\n", "experiment\t1", "python analyse.py sample-001.fastq",
    "python analyse.py sample-002.fastq", "python analyse.py sample_001.fastq",
    "x" * 63, "x" * 64, "x" * 65, "x" * 200, "x" * 200 + "y", "y" + "x" * 200,
    "a" * 62 + "-b", "a" * 62 + "_b", "", "-", ".", "_", "--", "日本語", "日本", "🙂", "🙃",
]


@pytest.mark.parametrize("text", NEAR_IDENTICAL)
def test_kube_safe_name_is_valid(text):
    name = kube_safe_name(text)
    assert VALID.match(name), (text, name)
    assert len(name) <= 63


def test_kube_safe_name_never_collides_on_near_identical_inputs():
    names = [kube_safe_name(text) for text in NEAR_IDENTICAL]
    assert len(set(names)) == len(NEAR_IDENTICAL)


def test_kube_safe_name_output_is_never_another_input_kept_as_is():
    # A valid name that looks like a changed one must not come out the same.
    for text in ("a_b", "A", "", "-", "x" * 100, "Hello World"):
        lookalike = kube_safe_name(text)
        assert kube_safe_name(lookalike) != lookalike
        assert kube_safe_name(lookalike) != kube_safe_name(text)


def test_kube_safe_name_keeps_valid_names_and_is_stable():
    for text in ("experiment", "run-1", "a.b.c", "x" * 63, "0abc"):
        assert kube_safe_name(text) == text
    assert kube_safe_name("Hello World") == kube_safe_name("Hello World")
    assert kube_safe_name("Hello World").startswith("hello-world-")


@pytest.mark.parametrize("limit", [8, 20, 40, 63])
def test_kube_safe_name_honours_limit(limit):
    for text in NEAR_IDENTICAL:
        name = kube_safe_name(text, limit=limit)
        assert len(name) <= limit and VALID.match(name), (text, limit, name)
    assert len({kube_safe_name(t, limit=limit) for t in NEAR_IDENTICAL}) == len(NEAR_IDENTICAL)


def test_task_ids_are_random_short_and_unambiguous():
    ids = {new_task_id() for _ in range(2000)}
    assert len(ids) == 2000
    for task_id in ids:
        assert re.fullmatch(r"[a-km-z2-9]{8}", task_id), task_id
        assert not set(task_id) & set("01lo")
        assert VALID.match(task_object_name(task_id))
    assert task_object_name("k3xq9m2a") == "womm-task-k3xq9m2a"


def test_owner_is_a_valid_label_value():
    assert VALID.match(owner()) and len(owner()) <= 63
