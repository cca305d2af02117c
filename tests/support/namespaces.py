"""Namespaces the cluster tests create and remove."""

from __future__ import annotations

from typing import Any

from kubernetes import client


def delete_namespace(core: Any, name: str) -> None:
    """Delete a test's namespace at once; one already gone is fine."""
    try:
        core.delete_namespace(name, body=client.V1DeleteOptions(grace_period_seconds=0))
    except client.ApiException as e:
        if e.status != 404:
            raise
