//! Coalescing read-index requests.
//!
//! A read index costs a heartbeat round to a quorum (Raft paper section 8; on a follower,
//! also a request to the leader). Concurrent readers share rounds: a reader joins the next
//! round to *start* after it arrived (a round already in flight may have begun before the
//! reader's request, so its answer could be too old for it), and one round serves every
//! reader that joined it. Under load this turns N heartbeat rounds into about two.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::node::ConsensusError;

type Reply = Result<u64, ConsensusError>;

#[derive(Default)]
struct Rounds {
    running: bool,
    next: Vec<oneshot::Sender<Reply>>,
}

#[derive(Clone, Default)]
pub struct ReadIndexBatcher {
    rounds: Arc<Mutex<Rounds>>,
}

impl ReadIndexBatcher {
    /// A read index obtained by a round that started after this call. `fetch` performs one
    /// round; it runs on a spawned task so a cancelled reader does not cancel the others.
    pub async fn read_index<F, Fut>(&self, fetch: F) -> Reply
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send,
    {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut rounds = self.rounds.lock().expect("read index lock poisoned");
            rounds.next.push(tx);
            !std::mem::replace(&mut rounds.running, true)
        };
        if start {
            let rounds = self.rounds.clone();
            tokio::spawn(async move {
                loop {
                    let waiters = {
                        let mut r = rounds.lock().expect("read index lock poisoned");
                        if r.next.is_empty() {
                            r.running = false;
                            return;
                        }
                        std::mem::take(&mut r.next)
                    };
                    let reply = fetch().await;
                    for waiter in waiters {
                        let _ = waiter.send(reply.clone());
                    }
                }
            });
        }
        rx.await
            .unwrap_or_else(|_| Err(ConsensusError::Stopped("read index task ended".into())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test]
    async fn concurrent_readers_share_rounds_that_start_after_them() {
        let batcher = ReadIndexBatcher::default();
        let rounds = Arc::new(AtomicU64::new(0));
        let mut readers = Vec::new();
        for _ in 0..50 {
            let batcher = batcher.clone();
            let rounds = rounds.clone();
            readers.push(tokio::spawn(async move {
                batcher
                    .read_index(move || {
                        let rounds = rounds.clone();
                        async move {
                            tokio::task::yield_now().await;
                            Ok(rounds.fetch_add(1, Ordering::SeqCst) + 1)
                        }
                    })
                    .await
            }));
        }
        for reader in readers {
            let round = reader.await.unwrap().unwrap();
            assert!(round >= 1);
        }
        let total = rounds.load(Ordering::SeqCst);
        assert!(total < 50, "50 readers took {total} rounds");
    }
}
