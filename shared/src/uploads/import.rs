//! The rules of a product import file, independent of how it is read: which columns it must
//! have, what a valid row is (the catalogue's own `parse_*` checks), and that a SKU may appear
//! only once per file (the later line is the error, so what an import applies never depends on
//! which of two conflicting lines won).
//!
//! The worker feeds it one record at a time as it streams the file, so memory does not depend on
//! the file's size but for one small entry per accepted SKU (a 64-bit fingerprint and its line:
//! a hash table of about 18 MB for 500,000 rows, 36 MB for a million, briefly half as much again
//! while it grows).

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
};

use crate::{
    error::AppError,
    products::{
        NewProduct,
        model::{parse_currency, parse_name, parse_price, parse_sku, parse_stock},
    },
    uploads::model::RowError,
};

/// The columns an import file must have, in the header row, in any order.
pub const IMPORT_COLUMNS: [&str; 5] = ["sku", "name", "price_cents", "currency", "stock"];

/// Valid rows are written in batches of this many, each batch in one transaction.
pub const IMPORT_BATCH_ROWS: usize = 1_000;

/// One batch of an import, applied in one transaction: the valid rows of a stretch of the file
/// and the errors of its invalid ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportBatch {
    /// Products to upsert by SKU.
    pub products: Vec<NewProduct>,
    /// Reasons rows were refused (a row may have several).
    pub errors: Vec<RowError>,
    /// Percent of the file read once this batch is applied.
    pub progress: u8,
}

impl ImportBatch {
    /// Whether the batch holds anything to apply.
    pub fn is_empty(&self) -> bool {
        self.products.is_empty() && self.errors.is_empty()
    }
}

/// Where each required column is in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportHeader {
    sku: usize,
    name: usize,
    price_cents: usize,
    currency: usize,
    stock: usize,
    width: usize,
}

impl ImportHeader {
    /// Reads the header row. A wrong header makes the whole file unusable, so this is an error
    /// for the upload, not for a row.
    pub fn parse(fields: &[&[u8]]) -> Result<Self, String> {
        let names: Vec<String> = fields
            .iter()
            .enumerate()
            .map(|(i, raw)| {
                let text = String::from_utf8_lossy(raw);
                // Spreadsheet programs often start UTF-8 files with a byte-order mark.
                let text = if i == 0 {
                    text.trim_start_matches('\u{feff}')
                } else {
                    &text
                };
                text.trim().to_ascii_lowercase()
            })
            .collect();
        let expected = IMPORT_COLUMNS.join(",");
        let position = |column: &str| -> Result<usize, String> {
            let mut found = names.iter().enumerate().filter(|(_, n)| *n == column);
            match (found.next(), found.next()) {
                (Some((i, _)), None) => Ok(i),
                (Some(_), Some(_)) => Err(format!("the header names column {column:?} twice")),
                (None, _) => Err(format!(
                    "the header row has no {column:?} column (expected the columns {expected})"
                )),
            }
        };
        if let Some(unknown) = names.iter().find(|n| !IMPORT_COLUMNS.contains(&n.as_str())) {
            return Err(format!(
                "the header names an unknown column {unknown:?} (expected the columns {expected})"
            ));
        }
        Ok(Self {
            sku: position("sku")?,
            name: position("name")?,
            price_cents: position("price_cents")?,
            currency: position("currency")?,
            stock: position("stock")?,
            width: names.len(),
        })
    }
}

/// Checks the data rows of one import file, in file order.
#[derive(Debug)]
pub struct RowValidator {
    header: ImportHeader,
    /// Fingerprint of each accepted SKU → the line that holds it. Fingerprints rather than the
    /// SKUs themselves keep memory small; a collision (odds around 1 in 10^7 for a million rows)
    /// would report a false duplicate, never apply one.
    accepted: HashMap<u64, u64>,
    hasher: RandomState,
}

impl RowValidator {
    /// A validator for a file with `header`.
    pub fn new(header: ImportHeader) -> Self {
        Self {
            header,
            accepted: HashMap::new(),
            hasher: RandomState::new(),
        }
    }

    /// Checks the row at `line`: the product to upsert, or every reason it is refused.
    pub fn check(&mut self, line: u64, fields: &[&[u8]]) -> Result<NewProduct, Vec<RowError>> {
        let h = self.header;
        if fields.len() != h.width {
            return Err(vec![RowError::row(
                line,
                format!("expected {} fields, found {}", h.width, fields.len()),
            )]);
        }
        let mut errors = Vec::new();
        let mut text = |column: &str, index: usize| match std::str::from_utf8(fields[index]) {
            Ok(s) => Some(s),
            Err(_) => {
                errors.push(RowError::field(line, column, "is not valid UTF-8"));
                None
            }
        };
        let sku = text("sku", h.sku);
        let name = text("name", h.name);
        let price = text("price_cents", h.price_cents);
        let currency = text("currency", h.currency);
        let stock = text("stock", h.stock);

        let sku = sku.and_then(|s| field_result(line, &mut errors, parse_sku(s)));
        let name = name.and_then(|s| field_result(line, &mut errors, parse_name(s)));
        let price_cents = price.and_then(|s| {
            let cents = whole_number(line, "price_cents", s, "a whole number of minor units")
                .map_err(|e| errors.push(e))
                .ok()?;
            field_result(line, &mut errors, parse_price(cents))
        });
        let currency = currency.and_then(|s| field_result(line, &mut errors, parse_currency(s)));
        let stock = stock.and_then(|s| {
            let units = whole_number(line, "stock", s, "a whole number")
                .map_err(|e| errors.push(e))
                .ok()?;
            field_result(line, &mut errors, parse_stock(units))
        });

        match (sku, name, price_cents, currency, stock) {
            (Some(sku), Some(name), Some(price_cents), Some(currency), Some(stock))
                if errors.is_empty() =>
            {
                let fingerprint = self.hasher.hash_one(&sku);
                if let Some(first) = self.accepted.get(&fingerprint) {
                    return Err(vec![RowError::field(
                        line,
                        "sku",
                        format!("duplicate of line {first}: a SKU may appear once per file"),
                    )]);
                }
                self.accepted.insert(fingerprint, line);
                Ok(NewProduct {
                    sku,
                    name,
                    description: String::new(),
                    price_cents,
                    currency,
                    stock,
                    active: true,
                })
            }
            _ => Err(errors),
        }
    }
}

/// The value of a `parse_*` check, or its message recorded against `line`.
fn field_result<T>(
    line: u64,
    errors: &mut Vec<RowError>,
    result: Result<T, AppError>,
) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(AppError::Unprocessable { details, message }) => {
            match details.into_iter().next() {
                Some(detail) => errors.push(RowError::field(line, detail.field, detail.message)),
                None => errors.push(RowError::row(line, message)),
            }
            None
        }
        Err(other) => {
            errors.push(RowError::row(line, other.to_string()));
            None
        }
    }
}

fn whole_number(line: u64, column: &str, raw: &str, what: &str) -> Result<i64, RowError> {
    raw.trim()
        .parse::<i64>()
        .map_err(|_| RowError::field(line, column, format!("must be {what}, got {raw:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(row: &str) -> Vec<&[u8]> {
        row.split(',').map(str::as_bytes).collect()
    }

    fn validator() -> RowValidator {
        RowValidator::new(
            ImportHeader::parse(&fields("sku,name,price_cents,currency,stock")).unwrap(),
        )
    }

    #[test]
    fn header_columns_may_come_in_any_order() {
        let header =
            ImportHeader::parse(&fields("\u{feff}Stock, currency ,price_cents,NAME,sku")).unwrap();
        let mut rows = RowValidator::new(header);
        let product = rows.check(2, &fields("7,EUR,1299,Mug,MUG-1")).unwrap();
        assert_eq!(product.sku, "MUG-1");
        assert_eq!(product.name, "Mug");
        assert_eq!(product.price_cents, 1299);
        assert_eq!(product.currency, "EUR");
        assert_eq!(product.stock, 7);
        assert!(product.active);
    }

    #[test]
    fn a_wrong_header_is_an_error_for_the_file() {
        for (header, says) in [
            ("sku,name,price_cents,currency", "no \"stock\""),
            ("sku,name,price,currency,stock", "unknown column \"price\""),
            ("sku,sku,name,price_cents,currency,stock", "twice"),
            ("MUG-1,Mug,1299,EUR,7", "unknown column"),
        ] {
            let error = ImportHeader::parse(&fields(header)).unwrap_err();
            assert!(error.contains(says), "{header}: {error}");
        }
    }

    #[test]
    fn every_bad_field_of_a_row_is_reported() {
        let errors = validator()
            .check(5, &fields(" ,Mug,12.99,euro,-1"))
            .unwrap_err();
        let by_field: Vec<(&str, u64)> = errors
            .iter()
            .map(|e| (e.field.as_deref().unwrap(), e.line))
            .collect();
        assert_eq!(
            by_field,
            [
                ("sku", 5),
                ("price_cents", 5),
                ("currency", 5),
                ("stock", 5)
            ]
        );
        assert!(errors[1].message.contains("whole number"), "{errors:?}");
    }

    #[test]
    fn a_row_with_the_wrong_width_is_one_error() {
        let errors = validator().check(3, &fields("MUG-1,Mug,1299")).unwrap_err();
        assert_eq!(errors, [RowError::row(3, "expected 5 fields, found 3")]);
    }

    #[test]
    fn invalid_utf8_is_reported_per_field() {
        let row: Vec<&[u8]> = vec![b"MUG-1", b"M\xffg", b"1299", b"EUR", b"1"];
        let errors = validator().check(2, &row).unwrap_err();
        assert_eq!(errors, [RowError::field(2, "name", "is not valid UTF-8")]);
    }

    #[test]
    fn nul_characters_are_reported_per_field() {
        let row: Vec<&[u8]> = vec![b"MUG\0-1", b"M\0g", b"1299", b"EUR", b"1\0"];
        let errors = validator().check(4, &row).unwrap_err();
        let fields: Vec<&str> = errors.iter().filter_map(|e| e.field.as_deref()).collect();
        assert_eq!(fields, ["sku", "name", "stock"], "{errors:?}");
        assert!(errors.iter().all(|e| e.line == 4));
    }

    #[test]
    fn a_repeated_sku_is_an_error_for_the_later_line_only() {
        let mut rows = validator();
        assert!(rows.check(2, &fields("MUG-1,Mug,1299,EUR,1")).is_ok());
        // An invalid row does not claim its SKU...
        assert!(rows.check(3, &fields("CUP-1,Cup,x,EUR,1")).is_err());
        assert!(rows.check(4, &fields("CUP-1,Cup,500,EUR,1")).is_ok());
        // ...a valid one does.
        let errors = rows
            .check(5, &fields("MUG-1,Mug again,100,EUR,1"))
            .unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field.as_deref(), Some("sku"));
        assert!(errors[0].message.contains("line 2"), "{errors:?}");
    }
}
