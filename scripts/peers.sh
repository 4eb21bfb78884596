#!/usr/bin/env bash
# The local peers the tests and the demo run against, all on 127.0.0.1, all project-local.
#
#   scripts/peers.sh install   create .venv-moto with moto[server]==5.2.5 and .peers/idp with
#                              oidc-provider (npm) for tests/idp/idp.mjs (idempotent)
#   scripts/peers.sh start     start moto on a free port; PID and URL go to .peers/
#   scripts/peers.sh env       print the AWS_* exports that point a shell at the started moto
#   scripts/peers.sh stop      stop what `start` started, by PID
#
# The Rust test harness (tests/src/moto.rs) starts its own moto per test from the same venv
# and kills it when the test ends; `start`/`stop` are for manual runs.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv-moto"
state="$root/.peers"
MOTO_VERSION="5.2.5"
OIDC_PROVIDER_VERSION="9.13.3"

install() {
  if [ -x "$venv/bin/moto_server" ] && "$venv/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
    return 0
  fi
  echo "peers: installing moto[server]==$MOTO_VERSION into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
}

install_idp() {
  local dir="$root/.peers/idp"
  if [ -f "$dir/node_modules/oidc-provider/package.json" ] && [ -f "$dir/node_modules/jose/package.json" ]; then
    return 0
  fi
  echo "peers: installing oidc-provider@$OIDC_PROVIDER_VERSION into $dir" >&2
  mkdir -p "$dir"
  [ -f "$dir/package.json" ] || echo '{"name":"registrar-test-idp","private":true,"type":"module"}' >"$dir/package.json"
  (cd "$dir" && npm install --silent --no-audit --no-fund "oidc-provider@$OIDC_PROVIDER_VERSION" "jose@6" >/dev/null)
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start() {
  install
  mkdir -p "$state"
  if [ -f "$state/moto.pid" ] && kill -0 "$(cat "$state/moto.pid")" 2>/dev/null; then
    echo "peers: moto already running at $(cat "$state/moto.url")" >&2
    return 0
  fi
  local port
  port=$(free_port)
  "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$state/moto.log" 2>&1 &
  echo $! >"$state/moto.pid"
  echo "http://127.0.0.1:$port" >"$state/moto.url"
  for _ in $(seq 1 100); do
    if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/', timeout=1)" 2>/dev/null; then
      echo "peers: moto at http://127.0.0.1:$port (pid $(cat "$state/moto.pid"))" >&2
      return 0
    fi
    sleep 0.1
  done
  echo "peers: moto did not start; see $state/moto.log" >&2
  stop
  return 1
}

env_exports() {
  [ -f "$state/moto.url" ] || { echo "peers: not started" >&2; return 1; }
  cat <<EOV
export AWS_ENDPOINT_URL=$(cat "$state/moto.url")
export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_EC2_METADATA_DISABLED=true
EOV
}

stop() {
  if [ -f "$state/moto.pid" ]; then
    kill "$(cat "$state/moto.pid")" 2>/dev/null || true
    rm -f "$state/moto.pid" "$state/moto.url"
  fi
}

case "${1:-}" in
  install) install; install_idp ;;
  start) start ;;
  env) env_exports ;;
  stop) stop ;;
  *) echo "usage: $0 install|start|env|stop" >&2; exit 2 ;;
esac
