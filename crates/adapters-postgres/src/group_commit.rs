//! Group commit: appends queue here, one queue per writer task (rooms are split between
//! writers by id), and each writer takes everything waiting in its queue (up to
//! `max_batch`) and stores it in one transaction. Each caller is
//! answered with its own row only after that transaction has committed, so an answer still
//! means "durably stored"; the commit's fsync and round trips are shared by the batch.

use std::future::Future;

use chat_domain::{NewChatMessage, RepositoryError};
use tokio::sync::{mpsc, oneshot};

use crate::store::AppendOutcome;

/// One caller waiting for its message to be stored.
pub(crate) struct PendingAppend {
    pub(crate) message: NewChatMessage,
    pub(crate) reply: oneshot::Sender<AppendOutcome>,
}

/// Stores one batch in one transaction: an outcome per message once committed, or one
/// error for all. A writer's store keeps state between batches (its session, its ids).
pub(crate) trait StoreBatch: Send {
    fn store(
        &mut self,
        batch: Vec<NewChatMessage>,
    ) -> impl Future<Output = Result<Vec<AppendOutcome>, RepositoryError>> + Send;
}

/// One writer. While it commits a batch, the next one piles up in its queue, so batches
/// grow with the load and a lone message waits for nobody.
pub(crate) async fn run_writer(
    mut store: impl StoreBatch,
    mut queue: mpsc::Receiver<PendingAppend>,
    max_batch: usize,
) {
    let mut pending = Vec::with_capacity(max_batch);
    loop {
        if queue.recv_many(&mut pending, max_batch).await == 0 {
            // Every repository clone is gone: nothing can arrive any more.
            return;
        }
        // A caller that gave up (its request was cancelled) was never told its message
        // was stored, so it is not stored behind its back.
        let (messages, replies): (Vec<NewChatMessage>, Vec<_>) = pending
            .drain(..)
            .filter(|p| !p.reply.is_closed())
            .map(|p| (p.message, p.reply))
            .unzip();
        if messages.is_empty() {
            continue;
        }
        match store.store(messages).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    // A caller that left since then simply misses its answer.
                    let _ = reply.send(outcome);
                }
            }
            Err(error) => {
                // Nothing of the batch was stored (the transaction rolled back or never
                // began): every caller gets the same error and may retry.
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}
