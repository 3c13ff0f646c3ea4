//! The topology fixtures against the real `redis-server`: they start, a killed master is
//! replaced within the time the product's fail-over tests allow, and the helpers report
//! what the servers say.

use std::time::{Duration, Instant};

use chat_test_support::topologies::{RedisCluster, SentinelGroup};

/// The fail-over budget the product's tests use; it normally takes about three seconds.
const FAILOVER_BUDGET: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_group_promotes_the_replica_when_the_master_dies() {
    let started = Instant::now();
    let mut group = SentinelGroup::start().await;
    eprintln!("sentinel group ready in {:?}", started.elapsed());

    let [master, replica] = group.data_ports();
    assert_ne!(master, replica);
    assert_eq!(group.master_port().await, master);
    let url = group.url();
    assert!(
        url.starts_with("redis-sentinel://127.0.0.1:")
            && url.contains("?sentinelServiceName=mymaster&node=127.0.0.1:")
            && url.matches("&node=127.0.0.1:").count() == 2,
        "unexpected sentinel URL {url}"
    );

    let killed = group.kill_master().await;
    assert_eq!(killed, master);
    let failover = Instant::now();
    let new_master = group.wait_for_new_master(killed, FAILOVER_BUDGET).await;
    eprintln!("sentinel fail-over took {:?}", failover.elapsed());
    assert_eq!(new_master, replica, "the only replica must be promoted");
    assert_eq!(group.master_port().await, replica);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_fails_a_dead_master_over_to_its_replica() {
    const KEY: &str = "chat:messages:room:1";
    let started = Instant::now();
    let mut cluster = RedisCluster::start().await;
    eprintln!("cluster ready in {:?}", started.elapsed());

    let ports = cluster.ports();
    assert_eq!(ports.len(), 6);
    assert_eq!(
        cluster.url(),
        format!(
            "redis-cluster://127.0.0.1:{}?node=127.0.0.1:{}&node=127.0.0.1:{}",
            ports[0], ports[1], ports[2]
        )
    );
    assert!(
        cluster.shard_channels().await.is_empty(),
        "a fresh cluster has no shard channel"
    );

    let master = cluster.master_of(KEY).await;
    assert!(ports.contains(&master));
    let killed = cluster.kill_master_of(KEY).await;
    assert_eq!(killed, master);
    let failover = Instant::now();
    let new_master = cluster
        .wait_for_failover(KEY, killed, FAILOVER_BUDGET)
        .await;
    eprintln!("cluster fail-over took {:?}", failover.elapsed());
    assert_ne!(new_master, killed);
    assert!(ports.contains(&new_master));
    assert_eq!(cluster.master_of(KEY).await, new_master);
    assert!(cluster.shard_channels().await.is_empty());
}
