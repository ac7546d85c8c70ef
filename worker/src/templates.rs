//! Email templates (minijinja), compiled into the binary: `templates/email/<name>.txt` and
//! `.html`, plus a subject line per template. HTML templates are auto-escaped.

use minijinja::{AutoEscape, Environment};
use serde::Serialize;

/// A rendered message body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub text: String,
    /// HTML body.
    pub html: String,
}

/// Every email template.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

macro_rules! template {
    ($env:expr, $name:literal) => {
        $env.add_template(
            concat!($name, ".txt"),
            include_str!(concat!("../templates/email/", $name, ".txt")),
        )?;
        $env.add_template(
            concat!($name, ".html"),
            include_str!(concat!("../templates/email/", $name, ".html")),
        )?;
    };
}

const SUBJECTS: &[(&str, &str)] = &[
    (
        "order_confirmation",
        "Your order {{ order.id }} ({{ total }})",
    ),
    ("order_cancelled", "Your order {{ order.id }} was cancelled"),
    // No name in the subject: it is chosen by whoever registered the address, which is not yet
    // verified, so the first line a stranger's inbox shows must be ours alone.
    ("welcome", "Welcome to Orderly"),
    ("report_ready", "Your {{ report.kind }} report is ready"),
];

impl Templates {
    /// Compiles every template; a syntax error stops the worker at start-up.
    pub fn load() -> Result<Self, minijinja::Error> {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        template!(env, "order_confirmation");
        template!(env, "order_cancelled");
        template!(env, "welcome");
        template!(env, "report_ready");
        for (name, subject) in SUBJECTS {
            env.add_template_owned(format!("{name}.subject"), (*subject).to_owned())?;
        }
        Ok(Self { env })
    }

    /// Renders subject, text and HTML of template `name` with `context`.
    pub fn render(
        &self,
        name: &str,
        context: &impl Serialize,
    ) -> Result<Rendered, minijinja::Error> {
        let render = |suffix: &str| -> Result<String, minijinja::Error> {
            self.env
                .get_template(&format!("{name}.{suffix}"))?
                .render(context)
        };
        Ok(Rendered {
            subject: render("subject")?.trim().to_owned(),
            text: render("txt")?,
            html: render("html")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped_and_text_is_not() {
        let templates = Templates::load().unwrap();
        let rendered = templates
            .render(
                "welcome",
                &serde_json::json!({"name": "<b>Ann</b>", "email": "ann@example.com"}),
            )
            .unwrap();
        assert_eq!(rendered.subject, "Welcome to Orderly");
        assert!(rendered.text.contains("Hello <b>Ann</b>"));
        // minijinja escapes `/` too (`&#x2f;`), which is harmless in HTML text.
        assert!(
            rendered.html.contains("Hello &lt;b&gt;Ann&lt;"),
            "{}",
            rendered.html
        );
        assert!(!rendered.html.contains("<b>"));
    }
}
