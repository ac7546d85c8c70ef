//! The OpenAPI document tells the truth about the api: Schemathesis (a property-based fuzzer for
//! OpenAPI, pinned and installed by `scripts/test.sh`, see `ensure_schemathesis` in
//! `scripts/services.sh`) generates valid and invalid requests for every operation of
//! `/api-docs/openapi.json` and checks each answer: no server error, a documented status, the
//! documented content type, and a body that matches the documented schema.
//!
//! The executable is `SCHEMATHESIS_BIN`. Without it the test fails saying how to get it: a
//! conformance test that silently skips would pass in a CI that never ran it.

use std::{path::PathBuf, process::Stdio, time::Duration};

use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::{new_key, order_body, spawn_app};

/// What must hold for every generated request.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance";

/// Fixed, so a run generates the same requests every time and a failure reproduces.
const SEED: &str = "42";

/// Test cases per operation and phase: enough to reach each operation's error paths (bad ids,
/// bodies of the wrong type, missing fields), few enough to keep the run within the suite's
/// time budget on a small machine.
const MAX_EXAMPLES: &str = "50";

/// A bound on the whole run, far above its normal duration: a hung run fails instead of
/// holding the suite.
const RUN_LIMIT: Duration = Duration::from_secs(600);

/// Schemathesis settings no command-line flag carries.
///
/// - `PATCH /users/{id}/role` revokes every token of the user it changes, and the stateful phase
///   finds the caller's own id (from `GET /users/me`) and uses it: the rest of the run would then
///   only see 401s. Its `id` is pinned to a customer, so the role change is fuzzed on
///   someone else.
/// - A filter that matches no operation (one was renamed) fails the run rather than quietly
///   fuzzing what it was meant to keep out.
fn config(customer_id: &str) -> String {
    format!(
        r#"[warnings]
fail-on = ["unmatched_filter"]

[[operations]]
include-name = "PATCH /api/v1/users/{{id}}/role"
parameters = {{ "path.id" = "{customer_id}" }}
"#
    )
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn every_answer_of_every_operation_is_documented(pool: PgPool) {
    let Some(schemathesis) = std::env::var_os("SCHEMATHESIS_BIN").map(PathBuf::from) else {
        panic!(
            "SCHEMATHESIS_BIN is not set: run the tests with scripts/test.sh, which installs the \
             pinned Schemathesis and sets it"
        );
    };
    let app = spawn_app(pool).await;
    // Something of each kind, so reads and the stateful phase (which follows ids from list
    // responses) check real resources against their schemas, not only 404s.
    let admin = app.admin().await;
    let customer = app.customer().await;
    let product = app.create_product(&admin, 1999, 100).await;
    let order = app
        .place_order(
            &admin.token,
            &new_key(),
            &order_body(product["id"].as_str().expect("product id"), 2),
        )
        .await;
    assert_eq!(order.status(), StatusCode::CREATED);
    let webhook = app
        .post_json(
            "/api/v1/webhooks",
            Some(&admin.token),
            &json!({"url": "https://hooks.example.com/orderly", "events": ["order.placed"]}),
        )
        .await;
    assert_eq!(webhook.status(), StatusCode::CREATED);

    // Its own folder: Schemathesis reads a `schemathesis.toml` from where it runs.
    let work_dir = std::env::temp_dir().join(format!("orderly-test-{}/schemathesis", app.prefix));
    std::fs::create_dir_all(&work_dir).expect("create the schemathesis folder");
    std::fs::write(
        work_dir.join("schemathesis.toml"),
        config(&customer.id.to_string()),
    )
    .expect("write the schemathesis config");

    let started = std::time::Instant::now();
    let run = tokio::process::Command::new(&schemathesis)
        .current_dir(&work_dir)
        .args(["--config-file", "schemathesis.toml", "run"])
        .arg(app.url("/api-docs/openapi.json"))
        .args(["--checks", CHECKS])
        .args(["--seed", SEED])
        .args(["--max-examples", MAX_EXAMPLES])
        // One worker: the stateful phase's steps and the server's state follow one order.
        .args(["--workers", "1"])
        // No examples saved from earlier runs: every run generates the same requests.
        .args(["--generation-database", "none"])
        .args(["--request-timeout", "30"])
        .arg("--header")
        .arg(format!("Authorization: Bearer {}", admin.token))
        // Logout cannot be fuzzed without ending the session whose token every other request
        // carries: the rest of the run would see only 401s.
        .args(["--exclude-path", "/api/v1/auth/logout"])
        .arg("--no-color")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RUN_LIMIT, run)
        .await
        .unwrap_or_else(|_| panic!("schemathesis ran longer than {RUN_LIMIT:?}"))
        .unwrap_or_else(|error| panic!("could not run {}: {error}", schemathesis.display()));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis found answers the OpenAPI document does not describe ({}, after {:.0?}):\n{report}",
        output.status,
        started.elapsed()
    );

    // The run is only worth something if its requests were authenticated to the end.
    assert_eq!(
        app.get("/api/v1/users/me", Some(&admin.token))
            .await
            .status(),
        StatusCode::OK,
        "the admin's token stopped working during the run, so later operations were only \
         tested for 401:\n{report}"
    );
    let _ = std::fs::remove_dir_all(&work_dir);
}
