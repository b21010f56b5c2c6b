"""Performance model of one vLLM replica: pure math over a profile (no I/O).

The live emulator and the trace-driven simulator both run on this model, so there is one copy of it.

Owns the replica's performance model, its profiles, its capacity under an SLO and its calibration. May import: core,
errors.
"""
