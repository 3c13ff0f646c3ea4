#!/bin/sh
# preStop of the Redis container (rolling update, node drain, scale-down): if this Redis is
# the master, have the sentinels promote a replica now, so that clients see a switch of a
# second or two instead of waiting the 5 s down-after-milliseconds plus an election. Asks
# the redis-sentinel Service, not the sentinel beside it: that one is stopping too. Without
# a replica to promote (-NOGOODSLAVE) or a sentinel to ask, it just lets the pod stop.
set -u
local_cli() { redis-cli -p 6379 --raw "$@" 2>/dev/null; }
sentinel_cli() { timeout 5 redis-cli -h redis-sentinel -p 26379 --raw "$@"; }

[ "$(local_cli ROLE | sed -n 1p)" = master ] || exit 0
# This pod's stable name, as init.sh wrote it into redis.conf.
self="$(local_cli CONFIG GET replica-announce-ip | sed -n 2p)"
reply="$(sentinel_cli SENTINEL FAILOVER mymaster 2>&1 || true)"
[ "$reply" = OK ] || { echo "no switchover before stopping: $reply"; exit 0; }
# Done once the sentinels name another master; clients still connected here are dropped
# when Redis stops and ask the sentinels again. At most 15 s (terminationGracePeriodSeconds
# allows for it).
i=0
while [ "$i" -lt 15 ]; do
  master="$(sentinel_cli SENTINEL get-master-addr-by-name mymaster 2>/dev/null | sed -n 1p)"
  case "$master" in "" | *" "* | "$self") ;; *) exit 0 ;; esac
  sleep 1
  i=$((i + 1))
done
echo "the sentinels still name $self the master after 15 s; stopping anyway"
