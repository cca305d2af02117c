"""`womm setup`: the decisions, the testbed, capture, commit and push of the project image."""
