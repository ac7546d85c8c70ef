//! Retention arithmetic shared by every domain that deletes old rows: the cutoff time before
//! which a row is past its retention, and the loop that deletes them a bounded batch at a time.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::AppError;

/// Rows one pruning statement deletes at most: short statements, no long lock.
pub const PRUNE_BATCH: i64 = 5_000;

/// Runs `batch` with the limit [`PRUNE_BATCH`] until it removes fewer than that; returns how
/// many it removed in all. `batch` removes at most the limit it is given and says how many.
/// (A closure returning a future rather than an async closure: the futures of the worker's
/// job handlers must be `Send`, which the compiler cannot yet prove through async closures.)
pub async fn in_batches<F, Fut>(mut batch: F) -> Result<u64, AppError>
where
    F: FnMut(i64) -> Fut,
    Fut: Future<Output = Result<u64, AppError>>,
{
    let mut total = 0;
    loop {
        let removed = batch(PRUNE_BATCH).await?;
        total += removed;
        if removed < PRUNE_BATCH as u64 {
            return Ok(total);
        }
    }
}

/// The time before which rows are past `retention` (the start of time for a retention too
/// long to subtract).
pub fn cutoff(retention: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(retention)
        .ok()
        .and_then(|age| Utc::now().checked_sub_signed(age))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutoff_is_retention_ago_and_never_overflows() {
        let day = cutoff(Duration::from_secs(86_400));
        let age = Utc::now() - day;
        assert!(
            age >= chrono::Duration::seconds(86_400) && age < chrono::Duration::seconds(86_401)
        );
        assert_eq!(cutoff(Duration::MAX), DateTime::<Utc>::MIN_UTC);
    }
}
