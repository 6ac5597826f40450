#!/usr/bin/env bash
# Makes sure the message brokers the consumer tests use answer: RabbitMQ on 127.0.0.1:5672
# (guest/guest) and NATS with JetStream on 127.0.0.1:4222, each started when it is installed
# but not running; IDEM_AMQP_URL / IDEM_NATS_URL, when set, point the tests at another
# broker, which is then left alone (the tests check it). Fails with a message saying how to
# provide a broker otherwise. Bounded: at most 90 s for RabbitMQ, 15 s for NATS. Safe to run again.
set -euo pipefail

listening() { timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" >/dev/null 2>&1; }
wait_for() { # host port seconds
  local tries=$(($3 * 5))
  for _ in $(seq 1 "$tries"); do listening "$1" "$2" && return 0; sleep 0.2; done
  return 1
}

amqp_help="Start RabbitMQ on 127.0.0.1:5672 with user guest/guest (Debian: apt-get install rabbitmq-server, then rabbitmq-server -detached), or point the tests at one: IDEM_AMQP_URL=amqp://user:password@host:port"
nats_help="Start NATS with JetStream on 127.0.0.1:4222 (Debian: apt-get install nats-server, then nats-server -js -a 127.0.0.1 -p 4222), or point the tests at one: IDEM_NATS_URL=nats://host:port"

if [ -n "${IDEM_AMQP_URL:-}" ]; then
  echo "bootstrap: IDEM_AMQP_URL is set; RabbitMQ is not started here (the tests check it)."
elif ! listening 127.0.0.1 5672; then
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    echo "bootstrap: no RabbitMQ answers on 127.0.0.1:5672 and rabbitmq-server is not installed. $amqp_help" >&2
    exit 1
  fi
  echo "bootstrap: starting RabbitMQ (rabbitmq-server -detached)"
  rabbitmq-server -detached || true
  if ! wait_for 127.0.0.1 5672 90; then
    echo "bootstrap: RabbitMQ did not come up on 127.0.0.1:5672 within 90 s (see /var/log/rabbitmq). $amqp_help" >&2
    exit 1
  fi
fi

if [ -n "${IDEM_NATS_URL:-}" ]; then
  echo "bootstrap: IDEM_NATS_URL is set; NATS is not started here (the tests check it)."
elif ! listening 127.0.0.1 4222; then
  nats_bin=$(command -v nats-server || true)
  [ -z "$nats_bin" ] && [ -x /usr/sbin/nats-server ] && nats_bin=/usr/sbin/nats-server
  if [ -z "$nats_bin" ]; then
    echo "bootstrap: no NATS answers on 127.0.0.1:4222 and nats-server is not installed. $nats_help" >&2
    exit 1
  fi
  echo "bootstrap: starting NATS with JetStream on 127.0.0.1:4222"
  store_dir=/var/lib/nats-server
  log_file=/var/log/nats-server.log
  if ! mkdir -p "$store_dir" 2>/dev/null || ! touch "$log_file" 2>/dev/null; then
    store_dir="${TMPDIR:-/tmp}/idem-nats-server"
    log_file="$store_dir.log"
    mkdir -p "$store_dir"
  fi
  if command -v start-stop-daemon >/dev/null 2>&1; then
    # Matched by its own pid file: another nats-server (on another port) must not count.
    start-stop-daemon --start --oknodo --background --make-pidfile \
      --pidfile "$store_dir.pid" --exec "$nats_bin" -- \
      -a 127.0.0.1 -p 4222 -js -sd "$store_dir" -l "$log_file"
  else
    nohup "$nats_bin" -a 127.0.0.1 -p 4222 -js -sd "$store_dir" -l "$log_file" >/dev/null 2>&1 &
  fi
  if ! wait_for 127.0.0.1 4222 15; then
    echo "bootstrap: NATS did not come up on 127.0.0.1:4222 within 15 s (see $log_file). $nats_help" >&2
    exit 1
  fi
fi
