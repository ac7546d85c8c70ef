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
    ("DELETE", "/api/v1/webhooks/{id}"),
    ("GET", "/api/v1/webhooks/{id}/deliveries"),
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
        let concrete = path.replace("{id}", &Uuid::now_v7().to_string());
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
