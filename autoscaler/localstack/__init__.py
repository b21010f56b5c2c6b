"""Real components run locally for tests and the demo: kube-apiserver/etcd (``kube``), their binaries
(``assets``), free loopback ports (``ports``).

Import the submodule you need; this package imports nothing on its own so that using one component does not
load the others.

Owns starting and stopping real components locally. May import: core, emulator, errors, kube, logs.
"""
