//! One reconcile per key at a time in this process (design invariant 4): a key that is running
//! is not started twice. A request that arrives meanwhile waits for the running one to end;
//! if what that run settled covers it (its caller's `covered` says so, from when its message was
//! queued), it is served at once; otherwise it joins one follow-up run, whose result all such
//! requests share (the follow-up sees the state their events announced).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use registrar_core::identity::ResourceKey;
use tokio::sync::oneshot;

/// A request that arrived while a run was going, with its message's queue time.
type Arrived<T> = (Option<u64>, oneshot::Sender<T>);

#[derive(Debug)]
struct Slot<T> {
    /// Arrived during the run going now: judged by `covered` when it ends.
    arrived: Vec<Arrived<T>>,
    /// Not covered by an earlier run: served by the run going now (a follow-up).
    next: Vec<oneshot::Sender<T>>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self {
            arrived: Vec::new(),
            next: Vec::new(),
        }
    }
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
    /// Runs `work` for `key`, or waits for the run going now. `queued_at` is when the caller's
    /// message was queued. When a run ends, every request that arrived during it is asked
    /// `covered(its queued_at)`: `Some(result)` serves it (what that run settled covers it),
    /// `None` sends it to one follow-up run. `work(true)` is the caller's own run;
    /// `work(false)` a follow-up that serves other callers too (so it may not rely on anything
    /// only this caller knows).
    pub async fn run<F, Fut, C>(
        &self,
        key: &ResourceKey,
        queued_at: Option<u64>,
        covered: C,
        work: F,
    ) -> T
    where
        F: Fn(bool) -> Fut,
        Fut: Future<Output = T>,
        C: Fn(Option<u64>) -> Option<T>,
    {
        let waiter = {
            let mut slots = self.lock();
            match slots.get_mut(key) {
                Some(slot) => {
                    let (tx, rx) = oneshot::channel();
                    slot.arrived.push((queued_at, tx));
                    Some(rx)
                }
                None => {
                    slots.insert(key.clone(), Slot::default());
                    None
                }
            }
        };
        if let Some(rx) = waiter {
            if let Ok(result) = rx.await {
                return result;
            }
            // The runner was cancelled: run ourselves (the slot was cleared by the runner's guard).
            return Box::pin(self.run(key, queued_at, covered, work)).await;
        }
        let guard = SlotGuard { gate: self, key };
        let mine = work(true).await;
        let mut last = mine.clone();
        loop {
            // Judged under the lock, so no request slips between this run and the next.
            let (served_by_last, covered_now, more) = {
                let mut slots = self.lock();
                let slot = slots.get_mut(key).map(std::mem::take).unwrap_or_default();
                let (mut covered_now, mut follow) = (Vec::new(), Vec::new());
                for (queued, tx) in slot.arrived {
                    match covered(queued) {
                        Some(result) => covered_now.push((tx, result)),
                        None => follow.push(tx),
                    }
                }
                let more = !follow.is_empty();
                if more {
                    // They wait in `next` for the follow-up; newer requests gather in `arrived`.
                    slots.entry(key.clone()).or_default().next = follow;
                } else {
                    slots.remove(key);
                }
                (slot.next, covered_now, more)
            };
            for tx in served_by_last {
                let _ = tx.send(last.clone());
            }
            for (tx, result) in covered_now {
                let _ = tx.send(result);
            }
            if !more {
                std::mem::forget(guard);
                return mine;
            }
            last = work(false).await;
        }
    }

    /// Keys with a run going.
    pub fn running(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ResourceKey, Slot<T>>> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Clears the key's slot if the runner is dropped mid-run, so waiters retry instead of hanging.
struct SlotGuard<'a, T> {
    gate: &'a KeyGate<T>,
    key: &'a ResourceKey,
}

impl<T> Drop for SlotGuard<'_, T> {
    fn drop(&mut self) {
        // Even when poisoned (a panic in `covered`): an orphaned slot would hang every later
        // request of the key.
        self.gate
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(self.key);
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
                gate.run(
                    &key("a"),
                    None,
                    |_| None,
                    |_| async {
                        assert_eq!(
                            concurrent.fetch_add(1, Ordering::SeqCst),
                            0,
                            "never twice at once"
                        );
                        let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        concurrent.fetch_sub(1, Ordering::SeqCst);
                        n
                    },
                )
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
                g.run(
                    &key("a"),
                    None,
                    |_| None,
                    |_| tokio::time::sleep(Duration::from_secs(1)),
                )
                .await
            })
        };
        let b = {
            let g = gate.clone();
            tokio::spawn(async move {
                g.run(
                    &key("b"),
                    None,
                    |_| None,
                    |_| tokio::time::sleep(Duration::from_secs(1)),
                )
                .await
            })
        };
        let _ = futures::future::join(a, b).await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    /// Requests for one key, the i-th arriving i ms in, its message queued at `queued[i]` (ms).
    /// Run n (from 1) takes 100 ms, then settles the mark `settles(n)` (as the consumer's
    /// freshness marks keep when a settled run began), or nothing. A request is covered by a
    /// mark at least 2 ms after it was queued. Returns what served each request (a run's number,
    /// or 0: covered) and how many runs there were; the gate is left empty.
    async fn requests(queued: &[u64], settles: fn(usize) -> Option<u64>) -> (Vec<usize>, usize) {
        let gate = Arc::new(KeyGate::<usize>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let mark = Arc::new(std::sync::Mutex::new(0u64));
        let tasks: Vec<_> = queued
            .iter()
            .enumerate()
            .map(|(i, &queued)| {
                let (gate, runs, mark) = (gate.clone(), runs.clone(), mark.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(i as u64)).await;
                    let marked = || {
                        *mark
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                    };
                    let covered = |q: Option<u64>| q.filter(|q| marked() >= q + 2).map(|_| 0);
                    gate.run(&key("a"), Some(queued), covered, |_| async {
                        let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if let Some(m) = settles(n) {
                            *mark
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner) = m;
                        }
                        n
                    })
                    .await
                })
            })
            .collect();
        let served = futures::future::join_all(tasks)
            .await
            .into_iter()
            .map(|r| r.unwrap_or(usize::MAX))
            .collect();
        assert_eq!(gate.running(), 0);
        (served, runs.load(Ordering::SeqCst))
    }

    #[tokio::test(start_paused = true)]
    async fn requests_the_running_run_covers_are_served_by_it_and_only_the_rest_follow_up() {
        // Run 1 began at 100 (its mark); requests queued at 0..=98 are covered by it, one
        // queued at 99 (inside the margin) and one queued after it began are not.
        let (served, runs) = requests(&[100, 0, 50, 98, 99, 150], |n| Some(100 * n as u64)).await;
        assert_eq!(runs, 2, "the run, then one follow-up");
        // 0: the runner; 1-3 covered by its run; 4 and 5 served by the follow-up.
        assert_eq!(served, vec![1, 0, 0, 0, 2, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_backlog_the_first_run_covers_costs_that_run_alone() {
        let queued: Vec<u64> = (0..10).collect();
        let (served, runs) = requests(&queued, |_| Some(1_000)).await;
        assert_eq!(runs, 1);
        assert_eq!(served, [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_that_settles_nothing_leaves_its_waiters_one_follow_up() {
        // A failed run marks nothing; the follow-up does.
        let (served, runs) = requests(&[0, 1, 2, 3], |n| (n > 1).then_some(1_000)).await;
        assert_eq!(served, vec![1, 2, 2, 2]);
        assert_eq!(runs, 2);
    }
}
