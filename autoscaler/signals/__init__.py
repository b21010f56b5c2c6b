"""Saturation signals: PromQL building and result parsing (pure) and the Prometheus adapter (I/O)."""
