"""kuboid's workflow: experiments (one pod per task) and the pod verbs."""
