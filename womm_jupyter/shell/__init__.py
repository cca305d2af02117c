"""`womm shell`: an interactive shell in a worker (Docker or Kubernetes) and its terminal bridge."""
