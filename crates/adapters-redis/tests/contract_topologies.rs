//! The `MessageBus` port contract on the highly available topologies, each from real
//! `redis-server` processes: a Sentinel group (1 master, 1 replica, 3 sentinels) in both
//! channel modes, and a 3-master Redis Cluster with sharded pub/sub. Every test starts its own
//! topology, so the tests run in parallel and a failure keeps that topology's logs.

use std::sync::Arc;

use chat_adapters_redis::{ChannelMode, RedisBus, RedisConfig};
use chat_domain::MessageBus;
use chat_test_support::redis::unique_channel;
use chat_test_support::topologies::{RedisCluster, SentinelGroup};

/// A bus and the topology it runs on (stopped when the test ends).
struct Fixture<T> {
    bus: Arc<dyn MessageBus>,
    _topology: T,
}

impl<T> AsRef<dyn MessageBus> for Fixture<T> {
    fn as_ref(&self) -> &(dyn MessageBus + 'static) {
        self.bus.as_ref()
    }
}

async fn bus_on(url: String, mode: Option<ChannelMode>) -> Arc<dyn MessageBus> {
    let mut config = RedisConfig::new(url);
    config.channel = unique_channel("contract-ha");
    config.channel_mode = mode;
    Arc::new(
        RedisBus::connect(config)
            .await
            .expect("connect to the test topology"),
    )
}

async fn on_sentinel(mode: ChannelMode) -> Fixture<SentinelGroup> {
    let sentinel = SentinelGroup::start().await;
    Fixture {
        bus: bus_on(sentinel.url(), Some(mode)).await,
        _topology: sentinel,
    }
}

async fn on_cluster() -> Fixture<RedisCluster> {
    let cluster = RedisCluster::start().await;
    Fixture {
        // Unset: a cluster defaults to a channel per room.
        bus: bus_on(cluster.url(), None).await,
        _topology: cluster,
    }
}

mod sentinel_single {
    use super::*;
    chat_domain::bus_contract_tests!(async { on_sentinel(ChannelMode::Single).await });
}

mod sentinel_per_room {
    use super::*;
    chat_domain::bus_contract_tests!(async { on_sentinel(ChannelMode::PerRoom).await });
}

mod cluster {
    use super::*;
    chat_domain::bus_contract_tests!(async { on_cluster().await });
}
