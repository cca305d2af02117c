"""Helpers shared by test modules (importable: pyproject puts tests/ on sys.path)."""
