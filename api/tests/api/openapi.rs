//! The OpenAPI document and Swagger UI: `/api-docs/openapi.json` documents exactly the API's
//! operations, every documented operation is really routed, and `/docs` serves a self-contained
//! Swagger UI (no CDN or other external URL) that loads our document.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::spawn_app;

/// Every operation the api serves to clients, as (method, path template).
const API_OPERATIONS: &[(&str, &str)] = &[
    ("POST", "/api/v1/auth/register"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/refresh"),
    ("POST", "/api/v1/auth/logout"),
    ("GET", "/api/v1/auth/me"),
    ("GET", "/api/v1/users/me"),
    ("POST", "/api/v1/users/me/password"),
    ("PATCH", "/api/v1/users/{id}/role"),
    ("GET", "/api/v1/products"),
    ("POST", "/api/v1/products"),
    ("GET", "/api/v1/products/{id}"),
    ("PATCH", "/api/v1/products/{id}"),
    ("DELETE", "/api/v1/products/{id}"),
    ("GET", "/api/v1/orders"),
    ("POST", "/api/v1/orders"),
    ("GET", "/api/v1/orders/{id}"),
    ("PATCH", "/api/v1/orders/{id}"),
    ("POST", "/api/v1/orders/{id}/cancel"),
    ("POST", "/api/v1/reports"),
    ("GET", "/api/v1/reports"),
    ("POST", "/api/v1/reports/schedules"),
    ("GET", "/api/v1/reports/schedules"),
    ("GET", "/api/v1/reports/schedules/{id}"),
    ("PATCH", "/api/v1/reports/schedules/{id}"),
    ("DELETE", "/api/v1/reports/schedules/{id}"),
    ("GET", "/api/v1/reports/{id}"),
    ("GET", "/api/v1/reports/{id}/download"),
    ("POST", "/api/v1/reports/{id}/cancel"),
    ("GET", "/api/v1/reports/{id}/events"),
    ("POST", "/api/v1/webhooks"),
    ("GET", "/api/v1/webhooks"),
    ("GET", "/api/v1/webhooks/{id}"),
    ("PATCH", "/api/v1/webhooks/{id}"),
    ("DELETE", "/api/v1/webhooks/{id}"),
    ("POST", "/api/v1/webhooks/{id}/rotate-secret"),
    ("POST", "/api/v1/webhooks/{id}/ping"),
    ("GET", "/api/v1/webhooks/{id}/deliveries"),
    (
        "POST",
        "/api/v1/webhooks/{id}/deliveries/{delivery_id}/retry",
    ),
    ("POST", "/api/v1/uploads"),
    ("GET", "/api/v1/uploads/{id}"),
    ("POST", "/api/v1/uploads/{id}/cancel"),
    ("GET", "/api/v1/uploads/{id}/events"),
    ("GET", "/health"),
    ("GET", "/health/live"),
];

fn documented_operations(document: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, _) in item.as_object().expect("path item") {
            if [
                "get", "post", "put", "patch", "delete", "head", "options", "trace",
            ]
            .contains(&method.as_str())
            {
                operations.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    operations
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn document_lists_exactly_the_routed_operations(pool: PgPool) {
    let app = spawn_app(pool).await;
    let response = app.get("/api-docs/openapi.json", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let document: Value = response.json().await.expect("the document is JSON");
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "{}",
        document["openapi"]
    );
    assert!(document["components"]["securitySchemes"]["bearer"].is_object());
    assert!(document["components"]["schemas"]["ErrorBody"].is_object());

    let documented = documented_operations(&document);
    let expected: BTreeSet<(String, String)> = API_OPERATIONS
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(
        documented, expected,
        "documented operations differ from the API's"
    );

    // Each documented operation reaches a handler: whatever it answers (401, 404 for a random
    // id, 415 for a missing body...), it is not the router's "route not found" or a 405.
    for (method, path) in &documented {
        let concrete = path
            .replace("{id}", &Uuid::now_v7().to_string())
            .replace("{delivery_id}", &Uuid::now_v7().to_string());
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let response = app
            .client
            .request(method.clone(), app.url(&concrete))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {concrete} is not routed"
        );
        assert!(
            !(status == StatusCode::NOT_FOUND && body["message"] == "route not found"),
            "{method} {concrete} is not routed"
        );
    }
}

fn attribute_values<'a>(html: &'a str, attribute: &str) -> Vec<&'a str> {
    let needle = format!("{attribute}=\"");
    html.match_indices(&needle)
        .filter_map(|(at, _)| {
            let rest = &html[at + needle.len()..];
            rest.find('"').map(|end| &rest[..end])
        })
        .collect()
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn docs_serve_a_self_contained_swagger_ui_for_our_document(pool: PgPool) {
    let app = spawn_app(pool).await;

    let response = app.get("/docs", None).await;
    let page_url = if response.status().is_redirection() {
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        assert_eq!(location, "/docs/");
        location
    } else {
        "/docs".to_owned()
    };
    let response = app.get(&page_url, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = response.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "not Swagger UI: {html}");

    let assets: Vec<&str> = attribute_values(&html, "src")
        .into_iter()
        .chain(attribute_values(&html, "href"))
        .collect();
    assert!(!assets.is_empty());
    for asset in &assets {
        assert!(!asset.contains("//"), "external asset {asset}");
        let path = format!("/docs/{}", asset.trim_start_matches("./"));
        assert_eq!(
            app.get(&path, None).await.status(),
            StatusCode::OK,
            "{path} not served"
        );
    }

    // The initializer points the UI at our document and nowhere else.
    let initializer = app
        .get("/docs/swagger-initializer.js", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        initializer.contains("\"/api-docs/openapi.json\""),
        "UI not pointed at our document: {initializer}"
    );
    for text in [&html, &initializer] {
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "external URL in: {text}"
        );
    }
}

/// The document as `/api-docs/openapi.json` serves it.
async fn document(pool: PgPool) -> Value {
    let app = spawn_app(pool).await;
    let response = app.get("/api-docs/openapi.json", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("the document is JSON")
}

/// Every operation of the document as (method, path, operation).
fn operations(document: &Value) -> Vec<(String, String, &Value)> {
    let mut found = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                found.push((method.to_uppercase(), path.clone(), operation));
            }
        }
    }
    found
}

/// A response, with a `$ref` to `components.responses` followed.
fn resolve<'a>(document: &'a Value, response: &'a Value) -> &'a Value {
    match response["$ref"].as_str() {
        Some(reference) => {
            let name = reference
                .strip_prefix("#/components/responses/")
                .unwrap_or_else(|| panic!("unexpected $ref {reference}"));
            &document["components"]["responses"][name]
        }
        None => response,
    }
}

/// Swagger UI shows, and "Try it out" is compared with, one example per error status: each in
/// the one error shape with its own status code and reason phrase, and a message of its own
/// (not the schema's sample `statusCode: 422` on every error).
#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn every_error_status_has_its_own_real_example(pool: PgPool) {
    let document = document(pool).await;
    let statuses = ["400", "401", "403", "404", "409", "422", "429"];
    let mut messages: std::collections::BTreeMap<&str, BTreeSet<String>> = Default::default();
    for (method, path, operation) in operations(&document) {
        for status in statuses {
            let Some(response) = operation["responses"].get(status) else {
                continue;
            };
            let content = &resolve(&document, response)["content"]["application/json"];
            let example = &content["example"];
            assert!(
                example.is_object(),
                "{method} {path} {status} has no example: {content}"
            );
            assert_eq!(
                example["statusCode"].as_u64().map(|c| c.to_string()),
                Some(status.to_owned()),
                "{method} {path} {status}: {example}"
            );
            let reason = StatusCode::from_bytes(status.as_bytes())
                .unwrap()
                .canonical_reason()
                .unwrap();
            assert_eq!(example["error"], reason, "{method} {path} {status}");
            let message = example["message"].as_str().unwrap_or_default();
            assert!(!message.is_empty(), "{method} {path} {status}: {example}");
            messages
                .entry(status)
                .or_default()
                .insert(message.to_owned());
        }
    }
    for status in statuses {
        assert!(
            messages.contains_key(status),
            "no operation documents {status}"
        );
    }
    // No message stands for two statuses.
    for (a, of_a) in &messages {
        for (b, of_b) in &messages {
            if a < b {
                let shared: Vec<_> = of_a.intersection(of_b).collect();
                assert!(shared.is_empty(), "{a} and {b} share {shared:?}");
            }
        }
    }
    // The specific ones where a generic message would mislead.
    let place_order = &document["paths"]["/api/v1/orders"]["post"]["responses"];
    assert_eq!(
        resolve(&document, &place_order["400"])["content"]["application/json"]["example"]["message"],
        "missing Idempotency-Key header"
    );
    let validation =
        &resolve(&document, &place_order["422"])["content"]["application/json"]["example"];
    assert_eq!(validation["details"][0]["field"], "items[0].quantity");
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn placing_an_order_documents_a_required_idempotency_key_with_an_example(pool: PgPool) {
    let document = document(pool).await;
    let parameters = document["paths"]["/api/v1/orders"]["post"]["parameters"]
        .as_array()
        .expect("parameters");
    let key = parameters
        .iter()
        .find(|p| p["name"] == "Idempotency-Key")
        .expect("an Idempotency-Key parameter");
    assert_eq!(key["in"], "header");
    assert_eq!(key["required"], true);
    let example = key["example"].as_str().expect("an example key");
    assert!(
        Uuid::parse_str(example).is_ok(),
        "a UUID, as advised: {example}"
    );
}

/// Every `example` in the document, with where it is.
fn examples<'a>(value: &'a Value, at: String, found: &mut Vec<(String, &'a Value)>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                if key == "example" {
                    found.push((at.clone(), inner));
                }
                if key == "examples" && inner.is_array() {
                    for example in inner.as_array().into_iter().flatten() {
                        found.push((at.clone(), example));
                    }
                }
                examples(inner, format!("{at}/{key}"), found);
            }
        }
        Value::Array(items) => {
            for (i, inner) in items.iter().enumerate() {
                examples(inner, format!("{at}/{i}"), found);
            }
        }
        _ => {}
    }
}

/// No placeholder where a client copies values from: no example is a generated filler, and the
/// schemas of the everyday operations give every plain string and number an example, so
/// Swagger UI shows `"currency": "EUR"`, not `"string"`, and `"quantity": 2`, not a huge int.
#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn no_example_is_a_placeholder(pool: PgPool) {
    let document = document(pool).await;
    let mut found = Vec::new();
    examples(&document, String::new(), &mut found);
    assert!(!found.is_empty());
    for (at, example) in &found {
        assert_ne!(**example, serde_json::json!(1073741824), "{at}");
        assert_ne!(**example, serde_json::json!("string"), "{at}");
    }
    let schemas = &document["components"]["schemas"];
    for name in [
        "ErrorBody",
        "FieldError",
        "OrderLineRequest",
        "OrderItemResponse",
        "OrderResponse",
        "CreateProductRequest",
        "UpdateProductRequest",
        "ProductResponse",
        "RegisterRequest",
        "LoginRequest",
        "TokenResponse",
        "RefreshRequest",
        "ChangePasswordRequest",
        "UserResponse",
        "HealthReport",
        "LiveReport",
        "CheckStatus",
        "CreateReportRequest",
        "ReportAccepted",
        "ReportResponse",
        "ReportPage",
        "CreateReportScheduleRequest",
        "UpdateReportScheduleRequest",
        "ReportScheduleResponse",
        "ReportSchedulePage",
        "UploadForm",
        "UploadAccepted",
        "RowErrorResponse",
        "UploadResponse",
        "CreateWebhookRequest",
        "UpdateWebhookRequest",
        "RotateSecretRequest",
        "WebhookResponse",
        "CreatedWebhookResponse",
        "RotatedSecretResponse",
        "WebhookPage",
        "DeliveryResponse",
        "DeliveryPage",
    ] {
        let properties = own_properties(&schemas[name]);
        assert!(!properties.is_empty(), "schema {name}: {}", schemas[name]);
        for (field, property) in properties {
            let types: Vec<&str> = match &property["type"] {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            let plain_string = types.contains(&"string")
                && property.get("format").is_none()
                && property.get("enum").is_none();
            let number = types.contains(&"integer") || types.contains(&"number");
            if plain_string || number {
                assert!(
                    property.get("example").is_some() || property.get("examples").is_some(),
                    "{name}.{field} has no example: {property}"
                );
            }
            // `null` shows a field that is absent in the example's state; only where it may be.
            if property.get("example") == Some(&Value::Null) {
                assert!(
                    types.contains(&"null"),
                    "{name}.{field} is not nullable: {property}"
                );
            }
        }
    }
}

/// The properties a schema declares itself: its own and those of its inline `allOf` members (a
/// `#[serde(flatten)]` field becomes an `allOf` with a `$ref`, whose schema is checked on its
/// own).
fn own_properties(schema: &Value) -> Vec<(&String, &Value)> {
    std::iter::once(schema)
        .chain(schema["allOf"].as_array().into_iter().flatten())
        .filter_map(|part| part["properties"].as_object())
        .flatten()
        .collect()
}

/// The JSON body Swagger UI fills in for an operation: each property of its request schema with
/// its example (every property has one, so nothing is left to a generated sample).
fn example_body(document: &Value, method: &str, path: &str) -> Value {
    let schema =
        &document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"];
    // An optional body is `oneOf: [null, $ref]`.
    let name = std::iter::once(schema)
        .chain(schema["oneOf"].as_array().into_iter().flatten())
        .find_map(|s| s["$ref"].as_str())
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
        .unwrap_or_else(|| panic!("{method} {path} has no request schema: {schema}"));
    let body = own_properties(&document["components"]["schemas"][name])
        .into_iter()
        .map(|(field, property)| {
            let example = property
                .get("example")
                .unwrap_or_else(|| panic!("{name}.{field} has no example"));
            (field.clone(), example.clone())
        })
        .collect();
    Value::Object(body)
}

/// The response body, after checking its status.
async fn body_of(response: reqwest::Response, status: StatusCode, what: &str) -> Value {
    let actual = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(actual, status, "{what}: {body}");
    body
}

/// "Try it out" with the example bodies of the reports, report schedules and webhooks
/// operations succeeds (as an admin, who may use every kind), and what comes back matches the
/// response examples where the api normalises the input.
#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn example_request_bodies_are_accepted(pool: PgPool) {
    let app = spawn_app(pool).await;
    let document: Value = app
        .get("/api-docs/openapi.json", None)
        .await
        .json()
        .await
        .expect("the document is JSON");
    let admin = app.admin().await;
    let token = Some(admin.token.as_str());
    let schemas = &document["components"]["schemas"];

    let report = app
        .post_json(
            "/api/v1/reports",
            token,
            &example_body(&document, "post", "/api/v1/reports"),
        )
        .await;
    body_of(report, StatusCode::ACCEPTED, "POST /reports").await;

    let schedule = app
        .post_json(
            "/api/v1/reports/schedules",
            token,
            &example_body(&document, "post", "/api/v1/reports/schedules"),
        )
        .await;
    let schedule = body_of(schedule, StatusCode::CREATED, "POST /reports/schedules").await;
    assert_eq!(
        schedule["cron"],
        schemas["ReportScheduleResponse"]["properties"]["cron"]["example"]
    );
    let changed = app
        .patch_json(
            &format!(
                "/api/v1/reports/schedules/{}",
                schedule["id"].as_str().unwrap()
            ),
            token,
            &example_body(&document, "patch", "/api/v1/reports/schedules/{id}"),
        )
        .await;
    body_of(changed, StatusCode::OK, "PATCH /reports/schedules/{id}").await;

    let webhook = app
        .post_json(
            "/api/v1/webhooks",
            token,
            &example_body(&document, "post", "/api/v1/webhooks"),
        )
        .await;
    let webhook = body_of(webhook, StatusCode::CREATED, "POST /webhooks").await;
    let endpoint = &schemas["WebhookResponse"]["properties"];
    assert_eq!(webhook["url"], endpoint["url"]["example"]);
    assert_eq!(webhook["events"], endpoint["events"]["example"]);
    let id = webhook["id"].as_str().unwrap();
    let changed = app
        .patch_json(
            &format!("/api/v1/webhooks/{id}"),
            token,
            &example_body(&document, "patch", "/api/v1/webhooks/{id}"),
        )
        .await;
    body_of(changed, StatusCode::OK, "PATCH /webhooks/{id}").await;
    let rotated = app
        .post_json(
            &format!("/api/v1/webhooks/{id}/rotate-secret"),
            token,
            &example_body(&document, "post", "/api/v1/webhooks/{id}/rotate-secret"),
        )
        .await;
    body_of(rotated, StatusCode::OK, "POST /webhooks/{id}/rotate-secret").await;
}

/// The description says where the bearer token comes from and what lives outside the document.
#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn the_description_explains_login_and_the_undocumented_endpoints(pool: PgPool) {
    let document = document(pool).await;
    let description = document["info"]["description"]
        .as_str()
        .expect("description");
    for needle in [
        "POST /api/v1/auth/login",
        "access_token",
        "**Authorize**",
        "Idempotency-Key",
        "GET /metrics",
        "GET /admin/api/overview",
        "GET /admin/api/queues/{queue}/jobs",
        "GET /admin/api/schedules",
    ] {
        assert!(
            description.contains(needle),
            "{needle} missing: {description}"
        );
    }
}
