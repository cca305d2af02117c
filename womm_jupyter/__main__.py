"""`python -m womm_jupyter ...`: the womm CLI."""
from .cli import main

raise SystemExit(main())
