"""Saturation and traffic signals from Prometheus, per variant and per model pool.

Pure (no I/O, tested without a network):
    queries     the PromQL, one query per signal for all variants; metric-name switch; label mapping
    parse       Prometheus answers -> keyed floats and bucket rates; hostile input skipped, never raised
    histogram   quantiles from bucket rates, as PromQL's histogram_quantile computes them
    assemble    per-variant and per-model :class:`~autoscaler.core.types.VariantSignals`; freshness rules
    warmup      which pods are still warming up (kept out of calibration)
    history     range-query grid and per-variant arrival-rate and mix series (warm start)

I/O:
    transport   requests session: TLS, auth from files (re-read on rotation), headers, bounded retries
    prometheus  :class:`~autoscaler.signals.prometheus.PrometheusSignalSource`: collect, collect_all, history

Owns reading Prometheus into :class:`~autoscaler.core.types.VariantSignals`. May import: core, errors, logs.
"""
