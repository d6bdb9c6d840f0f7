//! Group commit for one-row writes that many tasks of a process make at
//! once (a workflow's finish): the caller that finds no batch in flight
//! writes everything queued by then in one statement, and the others get
//! their answers from it. No timer: a lone call is a batch of one and
//! waits for nobody; calls made while a batch is in flight form the next.

use std::future::Future;
use std::sync::Mutex;

use tokio::sync::oneshot;

/// The calls of one kind waiting for a batch.
pub(super) struct Coalescer<I, O> {
    queued: Mutex<Vec<(I, oneshot::Sender<O>)>>,
    /// Held by the caller writing a batch.
    turn: tokio::sync::Mutex<()>,
}

impl<I, O> Default for Coalescer<I, O> {
    fn default() -> Self {
        Self { queued: Mutex::default(), turn: tokio::sync::Mutex::default() }
    }
}

impl<I, O> Coalescer<I, O> {
    /// Queues `item` and waits for its answer. When this caller's turn comes
    /// before the answer, it runs `write` on every item queued by then; `write`
    /// answers each, in order. `None` if the batch that carried the item was
    /// dropped before it answered (its caller cancelled): write it alone.
    pub async fn call<W, Fut>(&self, item: I, write: W) -> Option<O>
    where
        W: FnOnce(Vec<I>) -> Fut,
        Fut: Future<Output = Vec<O>>,
    {
        let (sender, mut answer) = oneshot::channel();
        self.lock().push((item, sender));
        tokio::select! {
            biased;
            answered = &mut answer => return answered.ok(),
            _turn = self.turn.lock() => {
                let batch = std::mem::take(&mut *self.lock());
                if !batch.is_empty() {
                    let (items, senders): (Vec<I>, Vec<_>) = batch.into_iter().unzip();
                    for (sender, answered) in senders.into_iter().zip(write(items).await) {
                        let _ = sender.send(answered);
                    }
                }
            }
        }
        // Answered by this batch, or by the one before it.
        answer.await.ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(I, oneshot::Sender<O>)>> {
        self.queued.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Which items are the first with their key: a batch carries those, the
/// rest go alone (a row written twice in one statement has no single answer).
pub(super) fn firsts<T, K: Eq + std::hash::Hash>(items: &[T], key: impl Fn(&T) -> K) -> Vec<bool> {
    let mut seen = std::collections::HashSet::new();
    items.iter().map(|item| seen.insert(key(item))).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[test]
    fn only_the_first_of_a_key_is_batched() {
        assert_eq!(firsts(&["a", "b", "a", "c", "b"], |item| *item), [true, true, false, true, false]);
    }

    #[tokio::test]
    async fn a_lone_call_is_a_batch_of_one() {
        let coalescer = Coalescer::default();
        let answer = coalescer.call(7, |items: Vec<i32>| async move { items.iter().map(|n| n * 2).collect() }).await;
        assert_eq!(answer, Some(14));
    }

    #[tokio::test]
    async fn calls_made_while_a_batch_is_in_flight_share_the_next_and_each_gets_its_own_answer() {
        let coalescer = Arc::new(Coalescer::default());
        let batches = Arc::new(Mutex::new(Vec::new()));
        let write = |batches: Arc<Mutex<Vec<Vec<i32>>>>| {
            move |items: Vec<i32>| async move {
                batches.lock().unwrap().push(items.clone());
                tokio::time::sleep(Duration::from_millis(50)).await;
                items.iter().map(|n| n * 10).collect::<Vec<_>>()
            }
        };
        let first = tokio::spawn({
            let (coalescer, batches) = (coalescer.clone(), batches.clone());
            async move { coalescer.call(1, write(batches)).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let mut later = Vec::new();
        for n in 2..=5 {
            let (coalescer, batches) = (coalescer.clone(), batches.clone());
            later.push(tokio::spawn(async move { coalescer.call(n, write(batches)).await }));
        }
        assert_eq!(first.await.unwrap(), Some(10));
        for (n, call) in (2..=5).zip(later) {
            assert_eq!(call.await.unwrap(), Some(n * 10));
        }
        // The first call went alone; the four made while it was in flight went together.
        let batches = batches.lock().unwrap().clone();
        assert_eq!(batches.len(), 2, "{batches:?}");
        assert_eq!(batches[0], [1]);
        let mut second = batches[1].clone();
        second.sort();
        assert_eq!(second, [2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn an_item_whose_batch_was_dropped_is_told_to_go_alone() {
        let coalescer = Arc::new(Coalescer::<i32, i32>::default());
        let started = Arc::new(AtomicUsize::new(0));
        let leader = tokio::spawn({
            let (coalescer, started) = (coalescer.clone(), started.clone());
            async move {
                coalescer
                    .call(1, |items| async move {
                        started.fetch_add(1, Ordering::SeqCst);
                        std::future::pending::<()>().await;
                        items
                    })
                    .await
            }
        });
        while started.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let follower = tokio::spawn({
            let coalescer = coalescer.clone();
            async move { coalescer.call(2, |items| async move { items }).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        leader.abort();
        // The follower's own turn came once the leader was gone: it wrote its item itself.
        assert_eq!(follower.await.unwrap(), Some(2));
    }
}
