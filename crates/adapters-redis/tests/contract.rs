//! The `MessageBus` port contract, run against `RedisBus` on a real Redis, with one channel
//! for all rooms and with a channel per room. Every test gets a fresh bus on its own channel,
//! so the tests run in parallel. `contract_topologies.rs` runs it on Sentinel and Cluster.

use std::sync::Arc;

use chat_adapters_redis::{ChannelMode, RedisBus, RedisConfig};
use chat_domain::MessageBus;
use chat_test_support::redis::{TestRedis, redis_url, unique_channel};

struct Fixture {
    bus: Arc<dyn MessageBus>,
    // Keeps a container (when one was started) alive for the whole test.
    _redis: TestRedis,
}

impl AsRef<dyn MessageBus> for Fixture {
    fn as_ref(&self) -> &(dyn MessageBus + 'static) {
        self.bus.as_ref()
    }
}

async fn fresh_bus(mode: ChannelMode) -> Fixture {
    let redis = redis_url().await;
    let mut config = RedisConfig::new(redis.url());
    config.channel = unique_channel("contract");
    config.channel_mode = Some(mode);
    let bus = RedisBus::connect(config)
        .await
        .expect("connect to the test Redis");
    Fixture {
        bus: Arc::new(bus),
        _redis: redis,
    }
}

mod single {
    use super::*;
    chat_domain::bus_contract_tests!(async { fresh_bus(ChannelMode::Single).await });
}

mod per_room {
    use super::*;
    chat_domain::bus_contract_tests!(async { fresh_bus(ChannelMode::PerRoom).await });
}
