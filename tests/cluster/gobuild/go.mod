module womm_jupyter/tests/cluster/gobuild

go 1.25.0

require k8s.io/kubernetes v1.34.10
