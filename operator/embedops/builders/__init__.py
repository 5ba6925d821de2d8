"""Pure builders: a resource's spec and the operator's settings in, Kubernetes manifests out."""
