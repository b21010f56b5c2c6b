#!/usr/bin/env bash
# System packages the tests and the demo run for real: Prometheus from Debian.
# (Go >= 1.26 builds kube-apiserver/etcd; Debian's golang-go is too old, so the asset builder only checks for it
# and names what is missing.)
set -euo pipefail

command -v prometheus >/dev/null 2>&1 && exit 0
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "prometheus is missing; as root run: apt-get install -y --no-install-recommends prometheus" >&2; exit 1
  fi
else
  SUDO=
fi
echo "installing Debian's prometheus package"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends prometheus
