//! The keyed work queue behind the components' API writers (status-updater: one node's
//! ConfigMap, labels and files; kwok-gpu-device-plugin: one node's capacity). Keys are marked
//! dirty by the event loops; a dirty key is worked on as soon as one of `width` slots is free,
//! never twice at once: a key marked again while its work is in flight stays dirty and is worked
//! on once more afterwards, so changes coalesce and each key's writes stay in order. There is no
//! batch barrier: a slow write delays only its own key. A failed key is marked again after a pause.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::{Id, JoinSet};

/// Dirty keys and the wake-up of the worker loop.
#[derive(Default)]
pub struct WorkQueue {
    dirty: Mutex<BTreeSet<String>>,
    notify: Notify,
    /// A release of free memory is scheduled (see [`WorkQueue::drained`]).
    release_pending: AtomicBool,
}

/// How long the queue must have been drained before free memory is handed back: one release
/// per burst, not one per write while writes trickle in.
const RELEASE_AFTER: Duration = Duration::from_secs(2);

impl WorkQueue {
    /// Marks keys dirty (already dirty ones once).
    pub fn mark<I: IntoIterator<Item = String>>(&self, keys: I) {
        let mut d = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
        let before = d.len();
        d.extend(keys);
        if d.len() != before {
            self.notify.notify_one();
        }
    }

    /// The last write of a burst is done: what the burst allocated (watch events, request and
    /// response bodies of up to thousands of writes) is free, but glibc would keep its pages
    /// resident. Released once, [`RELEASE_AFTER`] later, if the queue is still drained then.
    fn drained(self: std::sync::Arc<Self>) {
        if self.release_pending.swap(true, Ordering::SeqCst) {
            return;
        }
        tokio::spawn(async move {
            tokio::time::sleep(RELEASE_AFTER).await;
            self.release_pending.store(false, Ordering::SeqCst);
            if self.dirty.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
                fakegpu_operator_core::common::release_free_memory();
            }
        });
    }

    /// Works on dirty keys forever, at most `width` at a time; `work(key)` is started when the
    /// key is taken, so it sees the latest state. A key whose work fails (or panics) is marked
    /// again after `retry_after`.
    pub async fn run<W, F, E>(self: std::sync::Arc<Self>, width: usize, retry_after: Duration, work: W)
    where
        W: Fn(String) -> F,
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let width = width.max(1);
        let mut running: JoinSet<(String, Result<(), E>)> = JoinSet::new();
        let mut in_flight: HashMap<Id, String> = HashMap::new();
        loop {
            let ready: Vec<String> = {
                let mut dirty = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
                let busy: HashSet<&String> = in_flight.values().collect();
                let ready: Vec<String> = dirty.iter().filter(|k| !busy.contains(k)).take(width - running.len()).cloned().collect();
                for k in &ready {
                    dirty.remove(k);
                }
                ready
            };
            for key in ready {
                let job = work(key.clone());
                let name = key.clone();
                let task = running.spawn(async move { (key, job.await) });
                in_flight.insert(task.id(), name);
            }
            tokio::select! {
                _ = self.notify.notified() => {}
                Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                    let (key, error) = match done {
                        Ok((id, (key, result))) => {
                            in_flight.remove(&id);
                            (key, result.err().map(|e| e.to_string()))
                        }
                        Err(e) => (in_flight.remove(&e.id()).unwrap_or_default(), Some(format!("task failed: {e}"))),
                    };
                    if running.is_empty() {
                        self.clone().drained();
                    }
                    // (A key marked while its work was in flight is taken on the next turn.)
                    if let Some(error) = error {
                        tracing::warn!(key = %key, error = %error, "write failed; retrying");
                        let me = self.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(retry_after).await;
                            me.mark([key]);
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bounded_width_one_in_flight_per_key_and_coalescing() {
        let q = Arc::new(WorkQueue::default());
        let now = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let per_key: Arc<Mutex<HashMap<String, (usize, usize)>>> = Arc::default();
        let (n, p, k) = (now.clone(), peak.clone(), per_key.clone());
        tokio::spawn(q.clone().run(4, Duration::from_millis(10), move |key: String| {
            let (n, p, k) = (n.clone(), p.clone(), k.clone());
            async move {
                let c = n.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(c, Ordering::SeqCst);
                {
                    let mut m = k.lock().unwrap();
                    let e = m.entry(key.clone()).or_default();
                    e.0 += 1;
                    assert_eq!(e.0, 1, "{key} worked on twice at once");
                    e.1 += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                k.lock().unwrap().get_mut(&key).unwrap().0 -= 1;
                n.fetch_sub(1, Ordering::SeqCst);
                Ok::<(), String>(())
            }
        }));
        q.mark((0..40).map(|i| format!("n{i}")));
        // Marked again while in flight: worked on once more, not concurrently.
        tokio::time::sleep(Duration::from_millis(5)).await;
        q.mark(["n0".to_string(), "n0".to_string()]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let done = per_key.lock().unwrap().values().map(|v| v.1).sum::<usize>();
            if done >= 41 && now.load(Ordering::SeqCst) == 0 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "queue stalled at {done}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let m = per_key.lock().unwrap();
        assert_eq!(m.len(), 40);
        assert_eq!(m["n0"].1, 2, "n0 again after its first write");
        assert!(m.iter().filter(|(k, _)| *k != "n0").all(|(_, v)| v.1 == 1));
        assert_eq!(peak.load(Ordering::SeqCst), 4, "width 4 used, never exceeded");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_key_is_retried() {
        let q = Arc::new(WorkQueue::default());
        let tries = Arc::new(AtomicUsize::new(0));
        let t = tries.clone();
        tokio::spawn(q.clone().run(2, Duration::from_millis(10), move |_key: String| {
            let t = t.clone();
            async move {
                if t.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err("conflict".to_string())
                } else {
                    Ok(())
                }
            }
        }));
        q.mark(["a".to_string()]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tries.load(Ordering::SeqCst) < 3 {
            assert!(tokio::time::Instant::now() < deadline, "not retried");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(tries.load(Ordering::SeqCst), 3, "no work after success");
    }
}
