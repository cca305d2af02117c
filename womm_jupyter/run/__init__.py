"""`womm parallel`, the main job: the coordinator, its plan, GNU parallel, records, the run handle,
and the --async client and in-cluster leader."""
