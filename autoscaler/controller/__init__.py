"""The imperative shell: the periodic control loop over the ports in :mod:`autoscaler.controller.ports`.

Owns the cycle (observe, plan, act, report), its ports and their wiring to the adapters. May import: config, core,
errors, forecast, kube, logs, metrics, perf, policy, signals.
"""
