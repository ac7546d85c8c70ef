//! Extractors whose rejections are `AppError`s, so malformed JSON, a wrong content type or a
//! bad path parameter get the one error shape like everything else; and `ValidatedJson`, which
//! also runs the DTO's `validator` rules and reports every failing field in `details`; and
//! `Multipart` for uploads.
//!
//! Every string a client sends through them is checked for what PostgreSQL's `text` cannot hold:
//! a NUL character (`\u0000` in JSON, `%00` in a query or path) or bytes that are not UTF-8.
//! Such input is refused here, naming the field, instead of failing as a database error (a 500)
//! halfway through a request.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, RawPathParams, Request},
    http::{HeaderMap, header, request::Parts},
};
use orderly::error::{AppError, FieldError};
use percent_encoding::percent_decode;
use serde::de::DeserializeOwned;
use validator::{Validate, ValidationErrors, ValidationErrorsKind};

const NO_NUL: &str = "must not contain NUL characters";

/// `axum::Json` with our rejection, refusing NUL characters in any string of the body.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(AppError::UnsupportedMediaType(
                "expected a request body with Content-Type: application/json".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await?;
        check_json_text(&bytes)?;
        let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes)?;
        Ok(Self(value))
    }
}

/// `application/json` or any `application/*+json`, as axum's own `Json` accepts.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json") || subtype.to_ascii_lowercase().ends_with("+json"))
}

/// Refuses a JSON body that is not UTF-8, or that has a NUL character in a string or key.
///
/// JSON can only carry a NUL as the escape `\u0000`, so a body without that sequence passes
/// after one scan; only a body with it is parsed a second time to name the field.
fn check_json_text(bytes: &[u8]) -> Result<(), AppError> {
    if let Err(error) = std::str::from_utf8(bytes) {
        let field = enclosing_key(&bytes[..error.valid_up_to()]);
        let (name, message) = match field {
            Some(key) => (key, "must be UTF-8 text".to_owned()),
            None => (
                "body".to_owned(),
                format!("is not UTF-8 text (byte {})", error.valid_up_to()),
            ),
        };
        return Err(field_error(name, message));
    }
    let escaped_nul = bytes
        .windows(6)
        .any(|w| w[0] == b'\\' && w[1].eq_ignore_ascii_case(&b'u') && &w[2..] == b"0000");
    if !escaped_nul {
        return Ok(());
    }
    // Malformed JSON is left to the typed parse, which reports where it is malformed.
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Ok(());
    };
    match nul_path(&value, String::new()) {
        Some(path) => Err(field_error(path, NO_NUL.to_owned())),
        None => Ok(()),
    }
}

/// The path (`items[0].name`) of the first string or key holding a NUL, if any.
fn nul_path(value: &serde_json::Value, path: String) -> Option<String> {
    match value {
        serde_json::Value::String(s) if s.contains('\0') => {
            Some(if path.is_empty() { "body".into() } else { path })
        }
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_path(item, format!("{path}[{i}]"))),
        serde_json::Value::Object(map) => map.iter().find_map(|(key, item)| {
            let here = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            if key.contains('\0') {
                Some(if path.is_empty() {
                    "body".into()
                } else {
                    path.clone()
                })
            } else {
                nul_path(item, here)
            }
        }),
        _ => None,
    }
}

/// The last object key before the end of `prefix`: the field an invalid byte right after
/// `prefix` belongs to, for the error message.
fn enclosing_key(prefix: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(prefix).ok()?;
    let colon = text.rfind(':')?;
    let before = text[..colon].trim_end().strip_suffix('"')?;
    let start = before.rfind('"')?;
    let key = &before[start + 1..];
    (!key.is_empty() && key.len() <= 64).then(|| key.to_owned())
}

fn field_error(field: String, message: String) -> AppError {
    AppError::invalid_field(field, message)
}

/// 400 for a path or query parameter that cannot be read, naming it.
fn bad_parameter(kind: &str, name: &str, problem: &str) -> AppError {
    AppError::BadRequest {
        message: format!("invalid {kind}: {name}: {problem}"),
        details: vec![FieldError::new(name, problem)],
    }
}

/// `axum::extract::Path` with our rejection, refusing NUL characters in any parameter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // axum already refuses parameters that do not decode to UTF-8.
        let raw = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|rejection| {
                AppError::bad_request(format!("invalid path parameter: {}", rejection.body_text()))
            })?;
        if let Some((name, _)) = raw.iter().find(|(_, value)| value.contains('\0')) {
            return Err(bad_parameter("path parameter", name, NO_NUL));
        }
        let axum::extract::Path(value) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// `axum::extract::Query` with our rejection, refusing parameters that decode to NUL
/// characters or to bytes that are not UTF-8 (axum alone would turn those into U+FFFD).
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        check_query_text(parts.uri.query().unwrap_or_default())?;
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// Refuses a query string with a name or value that decodes to NUL or to non-UTF-8 bytes.
fn check_query_text(query: &str) -> Result<(), AppError> {
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |raw: &str| -> Result<String, ()> {
            let plus_as_space = raw.replace('+', " ");
            percent_decode(plus_as_space.as_bytes())
                .decode_utf8()
                .map(|text| text.into_owned())
                .map_err(|_| ())
        };
        let name = decode(raw_name);
        let problem = match (&name, decode(raw_value)) {
            (Err(_), _) | (_, Err(_)) => Some("must be UTF-8 text"),
            (Ok(n), Ok(v)) if n.contains('\0') || v.contains('\0') => Some(NO_NUL),
            _ => None,
        };
        if let Some(problem) = problem {
            let name = name.unwrap_or_else(|_| raw_name.to_owned());
            let name: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
            return Err(bad_parameter("query string", &name, problem));
        }
    }
    Ok(())
}

/// `axum::extract::Multipart` with our rejection (415 without a multipart content type).
#[derive(Debug)]
pub struct Multipart(pub axum::extract::Multipart);

impl<S: Send + Sync> FromRequest<S> for Multipart {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            axum::extract::Multipart::from_request(req, state).await?,
        ))
    }
}

/// A JSON body that parsed and passed its `validator` rules.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidatedJson<T>(pub T);

impl<S, T> FromRequest<S> for ValidatedJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Validate,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        value.validate().map_err(validation_error)?;
        Ok(Self(value))
    }
}

/// An optional JSON body (`Option<ValidatedJson<T>>`): `None` when the request has no body at
/// all, so a client may take every default by sending nothing; otherwise as [`ValidatedJson`].
impl<S, T> axum::extract::OptionalFromRequest<S> for ValidatedJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Validate,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        let json = is_json(req.headers());
        let bytes = Bytes::from_request(req, state).await?;
        if bytes.is_empty() {
            return Ok(None);
        }
        if !json {
            return Err(AppError::UnsupportedMediaType(
                "expected a request body with Content-Type: application/json".into(),
            ));
        }
        check_json_text(&bytes)?;
        let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes)?;
        value.validate().map_err(validation_error)?;
        Ok(Some(Self(value)))
    }
}

/// A query string that parsed and passed its `validator` rules.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidatedQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ValidatedQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Validate,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(value) = Query::<T>::from_request_parts(parts, state).await?;
        value.validate().map_err(validation_error)?;
        Ok(Self(value))
    }
}

/// Turns validator's errors into a 422 listing every field (`items[0].quantity`).
pub fn validation_error(errors: ValidationErrors) -> AppError {
    let mut details = Vec::new();
    flatten(&errors, "", &mut details);
    details.sort_by(|a, b| a.field.cmp(&b.field));
    let message = details
        .iter()
        .map(|d| format!("{}: {}", d.field, d.message))
        .collect::<Vec<_>>()
        .join("; ");
    AppError::Unprocessable { message, details }
}

fn flatten(errors: &ValidationErrors, prefix: &str, out: &mut Vec<FieldError>) {
    for (field, kind) in errors.errors() {
        let path = if prefix.is_empty() {
            field.to_string()
        } else {
            format!("{prefix}.{field}")
        };
        match kind {
            ValidationErrorsKind::Field(list) => {
                for error in list {
                    let message = error
                        .message
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_else(|| format!("is invalid ({})", error.code));
                    out.push(FieldError::new(path.clone(), message));
                }
            }
            ValidationErrorsKind::Struct(inner) => flatten(inner, &path, out),
            ValidationErrorsKind::List(items) => {
                for (index, inner) in items {
                    flatten(inner, &format!("{path}[{index}]"), out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(error: AppError) -> String {
        match error {
            AppError::Unprocessable { message, .. } | AppError::BadRequest { message, .. } => {
                message
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn nul_in_a_nested_json_string_is_named_by_its_path() {
        let body = br#"{"items":[{"product_id":"a"},{"note":"x\u0000y"}]}"#;
        let error = check_json_text(body).unwrap_err();
        assert_eq!(
            message(error),
            "items[1].note: must not contain NUL characters"
        );
    }

    #[test]
    fn an_escaped_backslash_before_u0000_is_not_a_nul() {
        assert!(check_json_text(br#"{"name":"C:\\u0000"}"#).is_ok());
        assert!(check_json_text(br#"{"name":"plain"}"#).is_ok());
    }

    #[test]
    fn invalid_utf8_names_the_field_it_is_in() {
        let error = check_json_text(b"{\"email\":\"a\xffb@x.io\"}").unwrap_err();
        assert_eq!(message(error), "email: must be UTF-8 text");
    }

    #[test]
    fn query_parameters_with_nul_or_bad_utf8_are_refused_by_name() {
        assert_eq!(
            message(check_query_text("limit=10&q=%00").unwrap_err()),
            "invalid query string: q: must not contain NUL characters"
        );
        assert_eq!(
            message(check_query_text("q=%ff").unwrap_err()),
            "invalid query string: q: must be UTF-8 text"
        );
        assert!(check_query_text("q=caf%C3%A9+au+lait&limit=5").is_ok());
    }

    #[test]
    fn json_content_types() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            is_json(&headers)
        };
        assert!(with("application/json"));
        assert!(with("application/json; charset=utf-8"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/jsonx"));
    }
}
