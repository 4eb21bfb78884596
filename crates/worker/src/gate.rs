//! One reconcile per key at a time in this process (design invariant 4): a key that is running
//! is not started twice, and requests that arrive meanwhile collapse into one follow-up run,
//! whose result they all share (the follow-up sees the state their events announced).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use registrar_core::identity::ResourceKey;
use tokio::sync::oneshot;

#[derive(Debug, Default)]
struct Slot<T> {
    /// Requests that arrived while a run was going; served by the next run.
    next: Vec<oneshot::Sender<T>>,
}

/// Coalescing single-flight per resource key.
#[derive(Debug)]
pub struct KeyGate<T> {
    slots: Mutex<HashMap<ResourceKey, Slot<T>>>,
}

impl<T> Default for KeyGate<T> {
    fn default() -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Clone + Send> KeyGate<T> {
    /// Runs `work` for `key`, or joins the run that will start after the current one.
    /// `work(true)` is the caller's own run; `work(false)` a follow-up run that serves other
    /// callers too (so it may not rely on anything only this caller knows).
    pub async fn run<F, Fut>(&self, key: &ResourceKey, work: F) -> T
    where
        F: Fn(bool) -> Fut,
        Fut: Future<Output = T>,
    {
        let waiter = {
            let mut slots = self
                .slots
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match slots.get_mut(key) {
                Some(slot) => {
                    let (tx, rx) = oneshot::channel();
                    slot.next.push(tx);
                    Some(rx)
                }
                None => {
                    slots.insert(key.clone(), Slot { next: Vec::new() });
                    None
                }
            }
        };
        if let Some(rx) = waiter {
            if let Ok(result) = rx.await {
                return result;
            }
            // The runner was cancelled: run ourselves (the slot was cleared by the runner's guard).
            return Box::pin(self.run(key, work)).await;
        }
        let guard = SlotGuard { gate: self, key };
        let mine = work(true).await;
        loop {
            let waiting = {
                let mut slots = self
                    .slots
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let slot = slots
                    .get_mut(key)
                    .map(|s| std::mem::take(&mut s.next))
                    .unwrap_or_default();
                if slot.is_empty() {
                    slots.remove(key);
                }
                slot
            };
            if waiting.is_empty() {
                std::mem::forget(guard);
                return mine;
            }
            let theirs = work(false).await;
            for tx in waiting {
                let _ = tx.send(theirs.clone());
            }
        }
    }

    /// Keys with a run going.
    pub fn running(&self) -> usize {
        self.slots.lock().map(|s| s.len()).unwrap_or_default()
    }
}

/// Clears the key's slot if the runner is dropped mid-run, so waiters retry instead of hanging.
struct SlotGuard<'a, T> {
    gate: &'a KeyGate<T>,
    key: &'a ResourceKey,
}

impl<T> Drop for SlotGuard<'_, T> {
    fn drop(&mut self) {
        if let Ok(mut slots) = self.gate.slots.lock() {
            slots.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use registrar_core::identity::ResourceKind;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn key(id: &str) -> ResourceKey {
        ResourceKey {
            kind: ResourceKind::Gateway,
            account: "1".into(),
            region: "r".into(),
            id: id.into(),
            gateway_id: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn duplicates_during_a_run_collapse_into_one_follow_up_run() {
        let gate = Arc::new(KeyGate::<usize>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let concurrent = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..10 {
            let (gate, runs, concurrent) = (gate.clone(), runs.clone(), concurrent.clone());
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i)).await;
                gate.run(&key("a"), |_| async {
                    assert_eq!(
                        concurrent.fetch_add(1, Ordering::SeqCst),
                        0,
                        "never twice at once"
                    );
                    let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    concurrent.fetch_sub(1, Ordering::SeqCst);
                    n
                })
                .await
            }));
        }
        let results: Vec<usize> = futures::future::join_all(tasks)
            .await
            .into_iter()
            .map(|r| r.unwrap_or(0))
            .collect();
        assert_eq!(
            runs.load(Ordering::SeqCst),
            2,
            "the first run, then one for all who came meanwhile"
        );
        assert_eq!(results[0], 1);
        assert!(results[1..].iter().all(|&r| r == 2), "{results:?}");
        assert_eq!(gate.running(), 0);
    }

    #[tokio::test(start_paused = true)]
    #[allow(clippy::disallowed_methods)] // measures the paused clock itself
    async fn different_keys_run_in_parallel() {
        let gate = Arc::new(KeyGate::<()>::default());
        let start = tokio::time::Instant::now();
        let a = {
            let g = gate.clone();
            tokio::spawn(async move {
                g.run(&key("a"), |_| tokio::time::sleep(Duration::from_secs(1)))
                    .await
            })
        };
        let b = {
            let g = gate.clone();
            tokio::spawn(async move {
                g.run(&key("b"), |_| tokio::time::sleep(Duration::from_secs(1)))
                    .await
            })
        };
        let _ = futures::future::join(a, b).await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }
}
