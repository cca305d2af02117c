"""How workers see the project directory: eager copies (rsync), syncback, lazy mounts."""
