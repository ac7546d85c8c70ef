//! Keyset pagination shared by the list endpoints: `?limit=&cursor=` in, `next_cursor` out.
//!
//! Ids are UUIDv7, which sort by creation time, so the cursor is simply the last id of a page:
//! stable under inserts (no skipped or repeated rows, unlike offsets) and an index seek per page.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::AppError;

/// Default page size.
pub const DEFAULT_LIMIT: u32 = 20;
/// Largest page size.
pub const MAX_LIMIT: u32 = 100;

/// A validated page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PageRequest {
    /// Rows per page, 1..=100.
    pub limit: u32,
    /// Return rows after this id (exclusive); `None` for the first page.
    pub cursor: Option<Uuid>,
}

impl PageRequest {
    /// Parses `limit` and `cursor` as given in a query string.
    pub fn parse(limit: Option<u32>, cursor: Option<&str>) -> Result<Self, AppError> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(AppError::invalid_field(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            ));
        }
        let cursor = match cursor.filter(|c| !c.is_empty()) {
            None => None,
            Some(raw) => Some(
                Uuid::parse_str(raw)
                    .map_err(|_| AppError::invalid_field("cursor", "is not a valid cursor"))?,
            ),
        };
        Ok(Self { limit, cursor })
    }

    /// Rows to fetch: one more than the page, to know whether another page follows.
    pub fn fetch_limit(&self) -> i64 {
        i64::from(self.limit) + 1
    }
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The rows.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<Uuid>,
}

impl<T> Page<T> {
    /// Builds a page from `limit + 1` fetched rows, using `id` to make the cursor.
    pub fn from_rows(mut rows: Vec<T>, request: &PageRequest, id: impl Fn(&T) -> Uuid) -> Self {
        let has_more = rows.len() > request.limit as usize;
        rows.truncate(request.limit as usize);
        let next_cursor = if has_more { rows.last().map(&id) } else { None };
        Self {
            items: rows,
            next_cursor,
        }
    }

    /// Maps the rows.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}
