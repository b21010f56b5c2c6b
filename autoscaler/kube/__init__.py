"""Kubernetes adapter: the VariantAutoscaling API, listing variants, patching scale subresources."""
