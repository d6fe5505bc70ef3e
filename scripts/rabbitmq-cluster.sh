#!/usr/bin/env bash
# A throwaway three-node RabbitMQ cluster on this machine, for Conveyor's cluster tests and
# for trying failover by hand. It never touches the default broker (port 5672, node
# rabbit@...): every node gets its own name, ports, data and log directories under DIR, and
# its own Erlang cookie (DIR/.erlang.cookie), so it cannot join anything else either.
#
#   scripts/rabbitmq-cluster.sh start DIR         start three nodes, join them, wait until all run
#   scripts/rabbitmq-cluster.sh stop DIR          stop every node (SIGKILL after a bound), delete the data
#   scripts/rabbitmq-cluster.sh status DIR        cluster_status as each node sees it
#   scripts/rabbitmq-cluster.sh start-node DIR N  start node N (a, b or c) again, e.g. after a kill
#   scripts/rabbitmq-cluster.sh kill-node DIR N   SIGKILL node N's Erlang VM
#   scripts/rabbitmq-cluster.sh ctl DIR N ARGS... rabbitmqctl -n <node N> ARGS (e.g. stop_app)
#   scripts/rabbitmq-cluster.sh urls DIR          the AMQP URLs, one a line
#
# Ports: CLUSTER_BASE_PORT (default: a free one picked at random in 20000-29999); node i
# (0, 1, 2) listens for AMQP on BASE+i and for Erlang distribution on BASE+10+i.
# After `start`, DIR/cluster.env holds the node names, ports and URLs (sourced by `ctl`).
set -euo pipefail

NODES=(a b c)

usage() {
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 64
}

# The RabbitMQ scripts themselves, not a distribution's wrapper that switches user (and
# with it the cookie and HOME).
rabbit_bin() {
  if [[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]]; then
    echo /usr/lib/rabbitmq/bin
  else
    local server
    server="$(command -v rabbitmq-server)" || {
      echo "rabbitmq-server is not installed" >&2
      exit 69
    }
    dirname "$(readlink -f "$server")"
  fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ports_free() { # base
  local i
  for i in 0 1 2 10 11 12; do
    if port_open $(($1 + i)); then return 1; fi
  done
}

pick_base() {
  if [[ -n "${CLUSTER_BASE_PORT:-}" ]]; then
    echo "$CLUSTER_BASE_PORT"
    return
  fi
  local try base
  for try in $(seq 1 50); do
    base=$((20000 + (RANDOM % 1000) * 10))
    if ports_free "$base"; then
      echo "$base"
      return
    fi
  done
  echo "no free ports found for the cluster" >&2
  exit 75
}

node_name() { echo "${CLUSTER_PREFIX}-$1@localhost"; }
node_index() {
  case "$1" in a) echo 0 ;; b) echo 1 ;; c) echo 2 ;; *) echo "unknown node $1 (a, b or c)" >&2; exit 64 ;; esac
}

load_env() {
  [[ -f "$DIR/cluster.env" ]] || {
    echo "$DIR/cluster.env is missing: start the cluster first" >&2
    exit 66
  }
  # shellcheck disable=SC1091
  source "$DIR/cluster.env"
}

ctl() { # node args...
  local node="$1"
  shift
  HOME="$DIR" "$BIN/rabbitmqctl" -q -n "$(node_name "$node")" "$@"
}

start_node() { # node
  local node="$1" i
  i="$(node_index "$node")"
  mkdir -p "$DIR/$node/mnesia" "$DIR/$node/log"
  cat >"$DIR/$node/rabbitmq.conf" <<CONF
listeners.tcp.1 = 127.0.0.1:$((CLUSTER_BASE_PORT + i))
loopback_users = none
CONF
  : >"$DIR/$node/enabled_plugins"
  : >"$DIR/$node/rabbitmq-env.conf"
  env HOME="$DIR" \
    RABBITMQ_NODENAME="$(node_name "$node")" \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT=$((CLUSTER_BASE_PORT + i)) \
    RABBITMQ_DIST_PORT=$((CLUSTER_BASE_PORT + 10 + i)) \
    RABBITMQ_MNESIA_BASE="$DIR/$node/mnesia" \
    RABBITMQ_LOG_BASE="$DIR/$node/log" \
    RABBITMQ_PID_FILE="$DIR/$node/pid" \
    RABBITMQ_CONFIG_FILE="$DIR/$node/rabbitmq.conf" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/$node/enabled_plugins" \
    RABBITMQ_CONF_ENV_FILE="$DIR/$node/rabbitmq-env.conf" \
    RABBITMQ_ADVANCED_CONFIG_FILE="$DIR/$node/advanced.config" \
    ERL_EPMD_ADDRESS=127.0.0.1 \
    "$BIN/rabbitmq-server" -detached >"$DIR/$node/log/startup.log" 2>&1
  # `wait` returns once the node booted (or fails when it died while booting).
  local n
  for n in $(seq 1 60); do
    [[ -s "$DIR/$node/pid" ]] && break
    sleep 1
  done
  HOME="$DIR" timeout 120 "$BIN/rabbitmqctl" -q -n "$(node_name "$node")" wait --timeout 110 "$DIR/$node/pid" >/dev/null
}

running_nodes() { # node: how many nodes it sees running
  ctl "$1" cluster_status --formatter json 2>/dev/null |
    grep -o '"running_nodes":\[[^]]*\]' | grep -o '@' | wc -l
}

wait_running() { # count seconds
  local n node seen
  for n in $(seq 1 "$2"); do
    seen=1
    for node in "${NODES[@]}"; do
      if [[ "$(running_nodes "$node")" -ne "$1" ]]; then
        seen=0
        break
      fi
    done
    if [[ $seen -eq 1 ]]; then return 0; fi
    sleep 1
  done
  echo "the cluster did not show $1 running nodes within $2 s" >&2
  return 1
}

cmd_start() {
  mkdir -p "$DIR"
  DIR="$(cd "$DIR" && pwd)"
  if [[ -f "$DIR/cluster.env" ]]; then
    echo "$DIR already holds a cluster (stop it first)" >&2
    exit 73
  fi
  CLUSTER_BASE_PORT="$(pick_base)"
  CLUSTER_PREFIX="conveyor-$CLUSTER_BASE_PORT"
  if [[ ! -f "$DIR/.erlang.cookie" ]]; then
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/.erlang.cookie")
    chmod 400 "$DIR/.erlang.cookie"
  fi
  {
    echo "CLUSTER_BASE_PORT=$CLUSTER_BASE_PORT"
    echo "CLUSTER_PREFIX=$CLUSTER_PREFIX"
    for node in "${NODES[@]}"; do
      i="$(node_index "$node")"
      echo "NODE_${node^^}=$(node_name "$node")"
      echo "PORT_${node^^}=$((CLUSTER_BASE_PORT + i))"
    done
  } >"$DIR/cluster.env"
  for node in "${NODES[@]}"; do
    start_node "$node"
  done
  for node in b c; do
    ctl "$node" stop_app >/dev/null
    ctl "$node" join_cluster "$(node_name a)" >/dev/null
    ctl "$node" start_app >/dev/null
  done
  wait_running 3 120
  cmd_urls
}

cmd_urls() {
  local node i
  for node in "${NODES[@]}"; do
    i="$(node_index "$node")"
    echo "amqp://guest:guest@127.0.0.1:$((CLUSTER_BASE_PORT + i))/%2f"
  done
}

cmd_stop() {
  local node pid
  for node in "${NODES[@]}"; do
    if [[ -s "$DIR/$node/pid" ]]; then
      pid="$(cat "$DIR/$node/pid")"
      if kill -0 "$pid" 2>/dev/null; then
        HOME="$DIR" timeout 30 "$BIN/rabbitmqctl" -q -n "$(node_name "$node")" stop >/dev/null 2>&1 || true
        for _ in $(seq 1 20); do
          kill -0 "$pid" 2>/dev/null || break
          sleep 0.5
        done
        kill -9 "$pid" 2>/dev/null || true
      fi
    fi
    rm -rf "$DIR/$node/mnesia"
  done
  rm -f "$DIR/cluster.env"
}

cmd_kill_node() {
  local pid
  pid="$(cat "$DIR/$1/pid")"
  kill -9 "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}

cmd_status() {
  local node
  for node in "${NODES[@]}"; do
    echo "== $(node_name "$node")"
    ctl "$node" cluster_status 2>&1 || true
  done
}

[[ $# -ge 2 ]] || usage
COMMAND="$1"
DIR="$2"
shift 2
BIN="$(rabbit_bin)"
case "$COMMAND" in
  start) cmd_start ;;
  stop) if [[ -f "$DIR/cluster.env" ]]; then load_env && cmd_stop; fi ;;
  status) load_env && cmd_status ;;
  urls) load_env && cmd_urls ;;
  start-node) [[ $# -eq 1 ]] || usage; load_env && start_node "$1" ;;
  kill-node) [[ $# -eq 1 ]] || usage; load_env && cmd_kill_node "$1" ;;
  ctl) [[ $# -ge 2 ]] || usage; load_env && ctl "$@" ;;
  *) usage ;;
esac
