//! A headless Chromium for end-to-end tests: starts the system's `chromedriver` on a free port,
//! opens a session over plain HTTP (fantoccini), and saves screenshots as test artifacts.
//!
//! Needs Debian's `chromium` and `chromium-driver` packages (or `CHROMEDRIVER` / `CHROMIUM`
//! naming the binaries). Missing ones fail the test with a message saying what to install: a
//! browser test that silently skips would pass in a CI that never ran it.

#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use fantoccini::{Client, ClientBuilder, Locator, elements::Element};
use serde_json::{Value, json};

use crate::helpers::eventually_explained;

/// Where screenshots and measurements go: `DASHBOARD_ARTIFACTS_DIR`, or `artifacts/dashboard`
/// at the workspace root (ignored by git).
pub fn artifacts_dir() -> PathBuf {
    let dir = std::env::var_os("DASHBOARD_ARTIFACTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../artifacts/dashboard"));
    std::fs::create_dir_all(&dir).expect("create the artifacts folder");
    dir
}

fn find_binary(variable: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(variable) {
        return Some(PathBuf::from(path));
    }
    candidates.iter().map(PathBuf::from).find(|p| p.exists())
}

/// A browser session; the driver process is killed on drop.
pub struct Browser {
    /// The WebDriver client.
    pub client: Client,
    driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile, 1440×900 (a laptop).
    pub async fn start() -> Self {
        let chromedriver = find_binary("CHROMEDRIVER", &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"])
            .unwrap_or_else(|| {
                panic!(
                    "chromedriver not found: install Debian's `chromium` and `chromium-driver` packages \
                     (apt-get install -y chromium chromium-driver) or set CHROMEDRIVER"
                )
            });
        let chromium = find_binary("CHROMIUM", &["/usr/bin/chromium", "/usr/lib/chromium/chromium"]).unwrap_or_else(|| {
            panic!("chromium not found: install Debian's `chromium` package (apt-get install -y chromium) or set CHROMIUM")
        });
        let profile = tempfile::tempdir().expect("profile dir");

        // chromedriver has no "port 0": take a free port from the OS and hand it over. Another
        // process could grab it in between, so a failed start is retried on a new port.
        let mut attempt = 0;
        let (driver, port) = loop {
            attempt += 1;
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let mut driver = tokio::process::Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
            let ready = wait_until_ready(port).await;
            if ready {
                break (driver, port);
            }
            let _ = driver.kill().await;
            assert!(attempt < 3, "chromedriver did not start (tried 3 ports)");
        };

        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1440,900", "--lang=en-GB",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session through chromedriver");
        Self {
            client,
            driver,
            _profile: profile,
        }
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The path (and query) of the current page.
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("current url");
        let query = url.query().map(|q| format!("?{q}")).unwrap_or_default();
        format!("{}{query}", url.path())
    }

    /// [`crate::helpers::eventually`] on this page: giving up, it says what the page showed then
    /// (its address and the start of its text).
    async fn wait_on_page<T, F, Fut>(&self, what: &str, limit: Duration, check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        eventually_explained(what, limit, check, || self.page_state()).await
    }

    /// The page's address and the start of its text, for a failure's message.
    async fn page_state(&self) -> String {
        let url = match self.client.current_url().await {
            Ok(url) => url.to_string(),
            Err(error) => format!("(no address: {error})"),
        };
        let text = match self
            .client
            .execute(
                "return document.body ? document.body.innerText.slice(0, 1500) : '(no body)'",
                vec![],
            )
            .await
        {
            Ok(text) => text.as_str().unwrap_or_default().to_owned(),
            Err(error) => format!("(no text: {error})"),
        };
        format!("\non {url}, whose text begins:\n{text}")
    }

    /// The element matching `css`, waiting for it to appear.
    pub async fn find(&self, css: &str) -> Element {
        let client = &self.client;
        self.wait_on_page(
            &format!("element {css}"),
            Duration::from_secs(30),
            || async move { client.find(Locator::Css(css)).await.ok() },
        )
        .await
    }

    /// Whether an element matching `css` is on the page now.
    pub async fn has(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .expect("find_all")
            .is_empty()
    }

    /// The text of `css`, once `wanted` holds for it (the page updates itself, so this waits
    /// for the live update rather than reloading).
    pub async fn wait_for_text(
        &self,
        css: &str,
        what: &str,
        wanted: impl Fn(&str) -> bool,
    ) -> String {
        let client = &self.client;
        let wanted = &wanted;
        self.wait_on_page(what, Duration::from_secs(60), || async move {
            let element = client.find(Locator::Css(css)).await.ok()?;
            let text = element.text().await.ok()?;
            wanted(text.trim()).then(|| text.trim().to_owned())
        })
        .await
    }

    /// Signs in with the login form the browser shows, and waits until the dashboard has
    /// answered with the page it was asked for. Waiting for an element of that page is not
    /// enough when it is one the login page has too (`main`): a test that went on at once found
    /// itself on the login page again whenever the sign-in took longer than its next step.
    pub async fn sign_in(&self, email: &str, password: &str) {
        self.fill("#email", email).await;
        self.fill("#password", password).await;
        self.click("#sign-in").await;
        let client = &self.client;
        self.wait_on_page(
            "the dashboard, signed in",
            Duration::from_secs(30),
            || async move {
                let url = client.current_url().await.ok()?;
                (!url.path().starts_with("/admin/login")).then_some(())
            },
        )
        .await;
    }

    /// Types `text` into the field `css`.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("clear");
        field.send_keys(text).await.expect("type");
    }

    /// The text of `css` now (waiting for it to appear).
    pub async fn text(&self, css: &str) -> String {
        self.wait_for_text(css, &format!("text of {css}"), |_| true)
            .await
    }

    /// Clicks `css`. An element that a live update replaced between finding and clicking it
    /// (stale) is found again.
    pub async fn click(&self, css: &str) {
        let client = &self.client;
        self.wait_on_page(
            &format!("click {css}"),
            Duration::from_secs(30),
            || async move {
                let element = client.find(Locator::Css(css)).await.ok()?;
                match element.click().await {
                    Ok(()) => Some(()),
                    Err(error) if error.is_stale_element_reference() => None,
                    Err(error) => panic!("click {css}: {error}"),
                }
            },
        )
        .await
    }

    /// Presses and releases `key` on the keyboard (wherever the focus is).
    pub async fn press_key(&self, key: char) {
        use fantoccini::actions::{InputSource, KeyAction, KeyActions};
        let keys = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value: key })
            .then(KeyAction::Up { value: key });
        self.client.perform_actions(keys).await.expect("key press");
    }

    /// Saves a PNG of the window as `<artifacts>/<name>.png` and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let path = artifacts_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Runs `script` in the page and returns its result.
    pub async fn run(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .expect("script runs")
    }

    /// Ends the session and the driver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill().await;
    }
}

async fn wait_until_ready(port: u16) -> bool {
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if let Ok(response) = client
            .get(format!("http://127.0.0.1:{port}/status"))
            .send()
            .await
            && let Ok(status) = response.json::<Value>().await
            && status["value"]["ready"] == true
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
