//! What the ids in a job's payload name, for the job page: one small table of the payload keys
//! the shop uses ([`KNOWN_KEYS`]: `order_id`, `endpoint_id`, `delivery_id`, `report_id`,
//! `schedule_id`, `upload_id`), each with the API URL of what it names and, where a glance
//! helps, what it is now: an order's status and total (read through the orders service), a
//! webhook endpoint's URL (through the webhooks service: [`endpoint_labels`], which the groups
//! section also uses for the `webhooks` queue's group keys). The
//! dashboard has no page of its own for these; it never reads another domain's repository.
//!
//! The API URLs answer to a bearer token (the dashboard's cookie stays under `/admin`), so they
//! are for copying into a script or an API client as much as for clicking.

use std::collections::{BTreeSet, HashMap};

use axum::http::StatusCode;
use futures::StreamExt;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{dashboard::session::AdminSession, state::AppState};

/// What one payload id names.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PayloadLink {
    /// The payload key (`order_id`).
    pub key: &'static str,
    /// What it names (`Order`).
    pub noun: &'static str,
    /// The id.
    pub id: String,
    /// Its API URL, when it has one.
    pub url: Option<String>,
    /// What it is now (`paid · 42.00 EUR`, an endpoint's URL), when the shop could tell.
    pub detail: Option<String>,
}

/// A payload key the dashboard knows, and where what it names lives.
struct KnownKey {
    key: &'static str,
    noun: &'static str,
    /// The API URL of `id`, given the whole payload (a delivery is listed under its endpoint).
    url: fn(&str, &Map<String, Value>) -> Option<String>,
}

/// Payload keys that name something, in the order the job page lists them.
const KNOWN_KEYS: [KnownKey; 6] = [
    KnownKey {
        key: "order_id",
        noun: "Order",
        url: |id, _| Some(format!("/api/v1/orders/{id}")),
    },
    KnownKey {
        key: "endpoint_id",
        noun: "Webhook endpoint",
        url: |id, _| Some(format!("/api/v1/webhooks/{id}")),
    },
    KnownKey {
        key: "delivery_id",
        noun: "Webhook delivery",
        url: |_, payload| {
            let endpoint = payload.get("endpoint_id")?.as_str()?;
            Some(format!("/api/v1/webhooks/{endpoint}/deliveries"))
        },
    },
    KnownKey {
        key: "report_id",
        noun: "Report",
        url: |id, _| Some(format!("/api/v1/reports/{id}")),
    },
    KnownKey {
        key: "schedule_id",
        noun: "Report schedule",
        url: |id, _| Some(format!("/api/v1/reports/schedules/{id}")),
    },
    KnownKey {
        key: "upload_id",
        noun: "Upload",
        url: |id, _| Some(format!("/api/v1/uploads/{id}")),
    },
];

/// The known ids of `payload` (its top-level keys), with their URLs, without reading anything.
pub fn payload_ids(payload: &Value) -> Vec<PayloadLink> {
    let Some(payload) = payload.as_object() else {
        return Vec::new();
    };
    KNOWN_KEYS
        .iter()
        .filter_map(|known| {
            let id = payload.get(known.key)?.as_str()?;
            // Ids are UUIDs: anything else is not put into a URL.
            uuid::Uuid::parse_str(id).ok()?;
            Some(PayloadLink {
                key: known.key,
                noun: known.noun,
                id: id.to_owned(),
                url: (known.url)(id, payload),
                detail: None,
            })
        })
        .collect()
}

/// [`payload_ids`] with what the shop says of them now: an order's status and total, an
/// endpoint's URL. A read that fails leaves the detail out (the id and its URL still show).
pub(super) async fn payload_links(
    state: &AppState,
    session: &AdminSession,
    payload: &Value,
) -> Vec<PayloadLink> {
    let mut links = payload_ids(payload);
    let endpoints: Vec<&str> = links
        .iter()
        .filter(|l| l.key == "endpoint_id")
        .map(|l| l.id.as_str())
        .collect();
    let orders: Vec<String> = links
        .iter()
        .filter(|l| l.key == "order_id")
        .map(|l| l.id.clone())
        .collect();
    let (endpoints, orders) = tokio::join!(
        endpoint_labels(state, session, endpoints),
        order_details(state, session, orders)
    );
    for link in &mut links {
        link.detail = match link.key {
            "endpoint_id" => endpoints.get(&link.id).cloned(),
            "order_id" => orders.get(&link.id).cloned(),
            _ => None,
        };
    }
    links
}

/// `paid · 42.00 EUR` for each order id, read through the orders service.
async fn order_details(
    state: &AppState,
    session: &AdminSession,
    ids: Vec<String>,
) -> HashMap<String, String> {
    let mut details = HashMap::new();
    for id in ids {
        let Ok(uuid) = uuid::Uuid::parse_str(&id) else {
            continue;
        };
        match state.services.orders.get(&session.actor, uuid).await {
            Ok(order) => {
                details.insert(
                    id,
                    format!(
                        "{} · {}",
                        order.status.as_str(),
                        money(order.total_cents, &order.currency)
                    ),
                );
            }
            Err(error) if error.status() == StatusCode::NOT_FOUND => {
                details.insert(id, "order not found".to_owned());
            }
            Err(error) => {
                tracing::warn!(%error, order_id = %uuid, "order not read for the dashboard");
            }
        }
    }
    details
}

/// Endpoint reads at once for one page (a page can show 110 groups: the top and every open
/// breaker), so that an open dashboard never holds much of the database pool.
const LABEL_READS: usize = 8;

/// The URLs of the webhook endpoints whose ids are `keys`, by id, read through the webhooks
/// service [`LABEL_READS`] at a time: "(disabled)" after a disabled one, "endpoint deleted" for
/// one that is gone; an id that is not a UUID, or an endpoint that could not be read, is left
/// out. What a payload's `endpoint_id` names, and what the `webhooks` queue's group keys stand
/// for (see [`super::groups`]).
pub(super) async fn endpoint_labels(
    state: &AppState,
    session: &AdminSession,
    keys: Vec<&str>,
) -> HashMap<String, String> {
    let keys: BTreeSet<&str> = keys.into_iter().collect();
    // Collected first: a stream over the lazy iterator would make the page's future not `Send`.
    let reads: Vec<_> = keys
        .into_iter()
        .filter_map(|key| {
            let id = uuid::Uuid::parse_str(key).ok()?;
            Some(async move {
                let label = match state.services.webhooks.get(&session.actor, id).await {
                    Ok(endpoint) if endpoint.enabled => endpoint.url,
                    Ok(endpoint) => format!("{} (disabled)", endpoint.url),
                    Err(error) if error.status() == StatusCode::NOT_FOUND => {
                        "endpoint deleted".to_owned()
                    }
                    Err(error) => {
                        tracing::warn!(
                            %error,
                            endpoint_id = %id,
                            "webhook endpoint not read for the dashboard"
                        );
                        return None;
                    }
                };
                Some((key.to_owned(), label))
            })
        })
        .collect();
    let labels: Vec<Option<(String, String)>> = futures::stream::iter(reads)
        .buffer_unordered(LABEL_READS)
        .collect()
        .await;
    labels.into_iter().flatten().collect()
}

/// ISO 4217 currencies without minor units: their amounts are whole.
const WHOLE_CURRENCIES: [&str; 16] = [
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND", "VUV",
    "XAF", "XOF", "XPF",
];

/// An amount in minor units as `42.00 EUR` (`4200 JPY` for a currency without minor units).
fn money(minor: i64, currency: &str) -> String {
    if WHOLE_CURRENCIES.contains(&currency) {
        return format!("{minor} {currency}");
    }
    let sign = if minor < 0 { "-" } else { "" };
    let minor = minor.unsigned_abs();
    format!("{sign}{}.{:02} {currency}", minor / 100, minor % 100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn known_keys_become_links() {
        let order = "0190f5c4-4a3c-7b6e-9a11-2b3c4d5e6f70";
        let endpoint = "0190f5c4-4a3c-7b6e-9a11-000000000001";
        let links = payload_ids(&json!({
            "type": "order_confirmation",
            "order_id": order,
            "delivery_id": "0190f5c4-4a3c-7b6e-9a11-000000000002",
            "endpoint_id": endpoint,
            "user_id": "0190f5c4-4a3c-7b6e-9a11-000000000003",
        }));
        let urls: Vec<(&str, Option<&str>)> =
            links.iter().map(|l| (l.key, l.url.as_deref())).collect();
        assert_eq!(
            urls,
            [
                ("order_id", Some(&*format!("/api/v1/orders/{order}"))),
                (
                    "endpoint_id",
                    Some(&*format!("/api/v1/webhooks/{endpoint}"))
                ),
                (
                    "delivery_id",
                    Some(&*format!("/api/v1/webhooks/{endpoint}/deliveries"))
                ),
            ]
        );
        // Not an id: never put into a URL.
        assert!(payload_ids(&json!({"report_id": "../../admin"})).is_empty());
        assert!(payload_ids(&json!("text")).is_empty());
    }

    #[test]
    fn money_reads_in_major_units() {
        assert_eq!(money(4200, "EUR"), "42.00 EUR");
        assert_eq!(money(5, "USD"), "0.05 USD");
        assert_eq!(money(4200, "JPY"), "4200 JPY");
        assert_eq!(money(-150, "EUR"), "-1.50 EUR");
    }
}
