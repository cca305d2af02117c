"""The admin side: cluster set-up, member kubeconfigs, the doctor, leader image, file server."""
