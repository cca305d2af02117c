"""The --async leader's entry point: ``python3 -m womm_jupyter.run.leader`` (see detached.py)."""

from __future__ import annotations

import sys

from .detached import leader_main

if __name__ == "__main__":
    sys.exit(leader_main())
