"""Pure decision core: values in, decision out. Nothing here performs I/O or reads a clock.

Owns every scaling decision: planning, allocation, admission, stabilisation, node plans. May import: forecast, perf.
"""
