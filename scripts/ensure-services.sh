#!/usr/bin/env bash
# PostgreSQL and Redis binaries for the tests of the postgres and redis sinks, and Chromium for the
# support page's browser test, kcat for the README's quick start test, docker-compose and kubectl
# for the deployment checks, from Debian's packages.
# Only installs (apt-get update once, then install) what is missing; the test fixtures start private
# servers on free ports in temporary folders, so nothing here runs as a system service.
set -euo pipefail
missing=()
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
[ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ] || missing+=(postgresql)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v chromium >/dev/null || missing+=(chromium)
command -v kcat >/dev/null || missing+=(kcat)
command -v docker-compose >/dev/null || missing+=(docker-compose)   # `config -q` of docker-compose.yml
command -v kubectl >/dev/null || missing+=(kubernetes-client)       # `kubectl kustomize` of deploy/k8s
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing ${missing[*]} from Debian's packages" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "need root or sudo to install ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
