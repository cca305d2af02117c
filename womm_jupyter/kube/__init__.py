"""The one Kubernetes layer: client set-up, error translation, exec streams, manifests."""
