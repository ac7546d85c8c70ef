//! Retention arithmetic shared by every domain that deletes old rows: the cutoff time before
//! which a row is past its retention, and the batch size of one deleting statement.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Rows one pruning statement deletes at most: short statements, no long lock.
pub const PRUNE_BATCH: i64 = 5_000;

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
