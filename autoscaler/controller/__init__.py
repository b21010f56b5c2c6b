"""The imperative shell: the periodic control loop over the ports in :mod:`autoscaler.controller.ports`."""
