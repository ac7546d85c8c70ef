//! The user model and the parsed inputs a service accepts.
//!
//! Parse, don't validate: an `Email` or a `Password` can only be built through `parse`, so a
//! service holding one knows it is well-formed and never checks again.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::AppError;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Role {
    /// Places and manages their own orders.
    Customer,
    /// Manages the catalogue, all orders, webhooks and the queues.
    Admin,
}

impl Role {
    /// The role's name as stored and as carried in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Admin => "admin",
        }
    }
}

/// An account, as the rest of the system sees it (never with its password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct User {
    /// Stable id (UUIDv7, so ids sort by creation time).
    pub id: Uuid,
    /// Lowercased email address.
    pub email: String,
    /// Display name.
    pub name: String,
    /// What the user may do.
    pub role: Role,
    /// When the account was created.
    pub created_at: DateTime<Utc>,
    /// When the account last changed.
    pub updated_at: DateTime<Utc>,
}

/// A lowercased RFC 5321 `addr-spec` (`local@domain`), exactly the mailbox mail is sent to.
///
/// Only the plain form is accepted: a dot-atom local part and a dotted host name of letters,
/// digits and hyphens. Display names (`Ann <ann@example.com>`), angle brackets, quoted local
/// parts, comments, commas, spaces, control and non-ASCII characters are refused, so what is
/// stored is the address a mail server delivers to and nothing a mail client or a spreadsheet
/// could read as something else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

/// `atext` of RFC 5322: the characters a dot-atom local part is made of, besides letters and digits.
const LOCAL_PART_SYMBOLS: &str = "!#$%&'*+/=?^_`{|}~-";

impl Email {
    /// Parses an address: trimmed, lowercased, at most 254 bytes, local part at most 64.
    pub fn parse(raw: &str) -> Result<Self, AppError> {
        let email = raw.trim().to_ascii_lowercase();
        let invalid = || {
            AppError::invalid_field(
                "email",
                "must be a plain email address such as ann@example.com (no name, brackets, \
                 quotes, spaces or commas)",
            )
        };
        if email.len() > 254 || !email.is_ascii() {
            return Err(invalid());
        }
        let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && local.split('.').all(|atom| {
                !atom.is_empty()
                    && atom
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || LOCAL_PART_SYMBOLS.contains(c))
            });
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
            && labels
                .last()
                .is_some_and(|tld| !tld.chars().all(|c| c.is_ascii_digit()));
        if !local_ok || !domain_ok {
            return Err(invalid());
        }
        Ok(Self(email))
    }

    /// The address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password that meets the length rules (8 to 128 characters).
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password([REDACTED])")
    }
}

impl Password {
    /// Parses a new password.
    pub fn parse(raw: String) -> Result<Self, AppError> {
        let chars = raw.chars().count();
        if chars < 8 {
            return Err(AppError::invalid_field(
                "password",
                "must be at least 8 characters",
            ));
        }
        if chars > 128 {
            return Err(AppError::invalid_field(
                "password",
                "must be at most 128 characters",
            ));
        }
        Ok(Self(raw))
    }

    /// The password text (only the hasher reads it).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A display name: trimmed, 1 to 100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    /// Parses a name.
    pub fn parse(raw: &str) -> Result<Self, AppError> {
        let name = raw.trim();
        let count = name.chars().count();
        if count == 0 || count > 100 || name.chars().any(char::is_control) {
            return Err(AppError::invalid_field(
                "name",
                "must be 1 to 100 characters without control characters",
            ));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Who is asking: the authenticated user behind a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor {
    /// The user.
    pub user_id: Uuid,
    /// Their role.
    pub role: Role,
}

impl Actor {
    /// Whether the actor is an admin.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether the actor may act on something owned by `owner`: their own, or anything for admins.
    pub fn may_access(&self, owner: Uuid) -> bool {
        self.is_admin() || self.user_id == owner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_normalised() {
        assert_eq!(
            Email::parse("  Ada@Example.COM ").unwrap().as_str(),
            "ada@example.com"
        );
    }

    #[test]
    fn bad_emails_are_refused() {
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a da@example.com",
            "ada@.com",
            "ada@example..com",
            // Display names and brackets: lettre would deliver to the address inside.
            "a1<victim@example.com>",
            "Ann <ann@example.com>",
            "<ann@example.com>",
            "\"ann\"@example.com",
            "ann,bob@example.com",
            "ann@example.com,bob@example.com",
            "=HYPERLINK(\"http://x.io\")@x.io",
            "ann(comment)@example.com",
            "ann\u{0}@example.com",
            "ann\r\n@example.com",
            ".ann@example.com",
            "ann.@example.com",
            "ann..b@example.com",
            "ann@-example.com",
            "ann@example-.com",
            "ann@exa_mple.com",
            "ann@127.0.0.1",
            "ann@[127.0.0.1]",
            "ännchen@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn plain_addresses_with_every_atext_character_are_accepted() {
        for good in [
            "ann@example.com",
            "ann.lee+shop@mail.example.co.uk",
            "o'brien@example.ie",
            "x!#$%&'*+/=?^_`{|}~-y@example.com",
            "a@b-c.io",
        ] {
            assert_eq!(Email::parse(good).unwrap().as_str(), good);
        }
    }

    #[test]
    fn password_length_rules() {
        assert!(Password::parse("short".into()).is_err());
        assert!(Password::parse("x".repeat(129)).is_err());
        assert!(Password::parse("long enough".into()).is_ok());
        assert_eq!(
            format!("{:?}", Password::parse("long enough".into()).unwrap()),
            "Password([REDACTED])"
        );
    }
}
