#!/usr/bin/env bash
# Installs the message brokers the broker conformance suite runs for real:
# RabbitMQ and Redis, from the Debian packages (NATS and Kafka run inside the
# test binaries and need nothing). The tests start private instances on free
# loopback ports (internal/brokertest/servers), so this script leaves no
# broker service running: it keeps the packages from starting theirs and
# stops whatever started anyway.
#
# Idempotent: installs only what is missing. Run as root (or with sudo).
set -euo pipefail

missing=()
if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || ! command -v epmd >/dev/null 2>&1; then
  missing+=(rabbitmq-server)
fi
if ! command -v redis-server >/dev/null 2>&1; then
  missing+=(redis-server)
fi
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-brokers: rabbitmq-server and redis-server are installed"
  exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  sudo=(sudo)
fi

# policy-rc.d exiting 101 tells invoke-rc.d (and deb-systemd-invoke) not to
# start services from the packages' maintainer scripts. Add one for the
# install unless the machine has its own.
policy=/usr/sbin/policy-rc.d
added_policy=
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# added by .ci/install-brokers.sh during apt-get install\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
  "${sudo[@]}" chmod 755 "$policy"
  added_policy=1
fi
cleanup() {
  if [ -n "$added_policy" ]; then
    "${sudo[@]}" rm -f "$policy"
  fi
}
trap cleanup EXIT

echo "install-brokers: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

# Stop and disable services that started anyway, then end what is left of
# them: the processes of the packages' service users (the tests run theirs
# as the calling user).
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  for unit in rabbitmq-server.service epmd.service epmd.socket redis-server.service; do
    "${sudo[@]}" systemctl disable --now "$unit" >/dev/null 2>&1 || true
  done
else
  for svc in rabbitmq-server redis-server; do
    if [ -x "/etc/init.d/$svc" ]; then
      "${sudo[@]}" "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
    fi
  done
fi
for user in rabbitmq epmd redis; do
  if id "$user" >/dev/null 2>&1; then
    pids=$(pgrep -u "$user" || true)
    if [ -n "$pids" ]; then
      echo "install-brokers: stopping $user's processes: $(echo $pids)"
      # shellcheck disable=SC2086
      "${sudo[@]}" kill $pids 2>/dev/null || true
      sleep 2
      pids=$(pgrep -u "$user" || true)
      # shellcheck disable=SC2086
      [ -z "$pids" ] || "${sudo[@]}" kill -9 $pids 2>/dev/null || true
    fi
  fi
done

echo "install-brokers: installed ${missing[*]}; no broker service left running"
