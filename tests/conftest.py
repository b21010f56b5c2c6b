"""Shared fixtures. Real-component fixtures live in tests/plugins/ and are loaded here."""

pytest_plugins = [
    "tests.plugins.kube",
    "tests.plugins.prometheus",
    "tests.plugins.vllm",
]
