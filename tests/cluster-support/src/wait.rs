//! Polling waits with a timeout; a timeout reports what was awaited and the last object seen,
//! which is usually enough to see why (a Pending pod's conditions, a claim without allocation).

use std::fmt::Debug;
use std::time::{Duration, Instant};

use kube::api::ListParams;
use kube::Api;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("timed out after {secs} s waiting for {what}; last seen: {last}")]
    Timeout { what: String, secs: u64, last: String },
}

const POLL: Duration = Duration::from_millis(250);

fn show<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("<unserialisable: {e}>"))
}

/// Polls `name` until `cond` holds; a missing object or a failed GET counts as "not yet".
pub async fn wait_for<K>(api: &Api<K>, name: &str, timeout: Duration, what: &str, cond: impl Fn(&K) -> bool) -> Result<K, WaitError>
where
    K: Clone + DeserializeOwned + Debug + serde::Serialize,
{
    let start = Instant::now();
    let mut last;
    loop {
        match api.get(name).await {
            Ok(obj) if cond(&obj) => return Ok(obj),
            Ok(obj) => last = show(&obj),
            Err(e) => last = format!("error: {e}"),
        }
        if start.elapsed() >= timeout {
            return Err(WaitError::Timeout { what: format!("{what} ({name})"), secs: timeout.as_secs(), last });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls a list until `cond` holds for the whole list.
pub async fn wait_for_list<K>(
    api: &Api<K>,
    lp: &ListParams,
    timeout: Duration,
    what: &str,
    cond: impl Fn(&[K]) -> bool,
) -> Result<Vec<K>, WaitError>
where
    K: Clone + DeserializeOwned + Debug + serde::Serialize,
{
    let start = Instant::now();
    let mut last;
    loop {
        match api.list(lp).await {
            Ok(list) if cond(&list.items) => return Ok(list.items),
            Ok(list) => last = show(&list.items),
            Err(e) => last = format!("error: {e}"),
        }
        if start.elapsed() >= timeout {
            return Err(WaitError::Timeout { what: what.to_string(), secs: timeout.as_secs(), last });
        }
        tokio::time::sleep(POLL).await;
    }
}
