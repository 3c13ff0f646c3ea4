#!/bin/sh
# Init container of every Redis pod: decides whom this pod's Redis follows and writes
# redis.conf and sentinel.conf (from the templates beside this script) into their emptyDirs,
# where Redis and Sentinel may rewrite them later (Sentinel records what it learns, and has
# Redis record its new role after a failover).
#
#   - The sentinels answer (redis-sentinel Service): follow the master they name, which may
#     be this very pod if it restarted before they noticed it was gone.
#   - No sentinel answers (first boot, or every pod restarted together): pod 0 is the
#     master, the others replicate it.
#
# Names, not IPs, everywhere: the pods' stable names under the headless Service
# redis-headless stay valid when a pod comes back with a new IP.
set -eu

master_set=mymaster
port=6379
domain="redis-headless.${POD_NAMESPACE}"
self="${POD_NAME}.${domain}"
first="${POD_NAME%-*}-0.${domain}"

# "host\nport" from the sentinels, or nothing. redis-cli prints an error reply on stdout
# and exits 0, so only a reply of that shape counts.
ask_sentinels() {
  reply="$(timeout 5 redis-cli -h redis-sentinel -p 26379 --raw \
    SENTINEL get-master-addr-by-name "$master_set" 2>/dev/null || true)"
  host="$(printf '%s\n' "$reply" | sed -n 1p)"
  host_port="$(printf '%s\n' "$reply" | sed -n 2p)"
  case "$host" in "" | *" "*) return 1 ;; esac
  case "$host_port" in "" | *[!0-9]*) return 1 ;; esac
  master="$host"
  port="$host_port"
}

# Sentinel refuses a `monitor` line whose host does not resolve, so wait until it does. A
# master that was just lost does not resolve (its pod is gone): ask again, the sentinels
# name its successor once they have failed over.
while :; do
  if ask_sentinels; then
    echo "the sentinels name $master:$port as the master of $master_set"
  else
    master="$first"
    port=6379
    echo "no sentinel answers: $master is the master"
  fi
  getent ahosts "$master" >/dev/null && break
  echo "waiting for $master to resolve"
  sleep 2
done

sed -e "s/@SELF@/$self/g" /templates/redis.conf >/etc/redis/redis.conf
if [ "$master" != "$self" ]; then
  echo "replicaof $master $port" >>/etc/redis/redis.conf
  echo "$self starts as a replica of $master:$port"
else
  echo "$self starts as the master"
fi
sed -e "s/@SELF@/$self/g" -e "s/@MASTER@/$master/g" -e "s/@PORT@/$port/g" \
  /templates/sentinel.conf >/etc/sentinel/sentinel.conf
