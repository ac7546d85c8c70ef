//! Trace export over OpenTelemetry's OTLP (`TraceConfig`), read from the standard `OTEL_*`
//! variables so a collector's usual settings work unchanged. Off unless an endpoint is set.

use std::time::Duration;

use super::{ConfigError, Source, millis};

/// Which traces are kept (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TraceSampler {
    /// Every trace.
    AlwaysOn,
    /// None.
    AlwaysOff,
    /// This fraction of traces, by trace id.
    Ratio(f64),
    /// As the parent decided (a client's `traceparent` flag, the request a job came from);
    /// a root follows the inner sampler.
    ParentBased(ParentRoot),
}

/// What a parent-based sampler does for a trace that starts here.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParentRoot {
    /// Keep it.
    AlwaysOn,
    /// Drop it.
    AlwaysOff,
    /// Keep this fraction.
    Ratio(f64),
}

/// Where and how traces are exported.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceConfig {
    /// The OTLP/HTTP traces URL: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as given, or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` with `/v1/traces` appended. `None`: tracing off (no
    /// exporter, no propagation, no cost).
    pub endpoint: Option<String>,
    /// Extra request headers (`OTEL_EXPORTER_OTLP_HEADERS`, then the `_TRACES_` variant on top):
    /// `key=value` pairs separated by commas, values percent-decoded (an API key, say).
    pub headers: Vec<(String, String)>,
    /// How long one export may take (`OTEL_EXPORTER_OTLP_TIMEOUT`, ms; default 10 s).
    pub timeout: Duration,
    /// `OTEL_SERVICE_NAME`; `None`: the binary's own name (`orderly-api`, `orderly-worker`).
    pub service_name: Option<String>,
    /// `OTEL_RESOURCE_ATTRIBUTES`: `key=value` pairs describing this process (a deployment
    /// environment, a region).
    pub resource_attributes: Vec<(String, String)>,
    /// `OTEL_TRACES_SAMPLER` (default `parentbased_always_on`).
    pub sampler: TraceSampler,
    /// How often finished spans are sent (`OTEL_BSP_SCHEDULE_DELAY`, ms; default 5 s).
    pub batch_delay: Duration,
    /// Spans held while the collector is slow (`OTEL_BSP_MAX_QUEUE_SIZE`, default 2048); past
    /// it new spans are dropped rather than slowing requests.
    pub max_queue_size: usize,
    /// Spans per export request (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, default 512).
    pub max_export_batch_size: usize,
    /// Which spans are exported (`TRACE_FILTER`, `RUST_LOG` syntax; default `info`), apart from
    /// which lines are logged: `RUST_LOG=warn` keeps the logs quiet without emptying traces.
    pub filter: String,
}

impl TraceConfig {
    /// Tracing off.
    pub fn off() -> Self {
        Self {
            endpoint: None,
            headers: Vec::new(),
            timeout: Duration::from_secs(10),
            service_name: None,
            resource_attributes: Vec::new(),
            sampler: TraceSampler::ParentBased(ParentRoot::AlwaysOn),
            batch_delay: Duration::from_secs(5),
            max_queue_size: 2048,
            max_export_batch_size: 512,
            filter: "info".into(),
        }
    }

    pub(super) fn read(env: &Source<'_>) -> Result<Self, ConfigError> {
        let disabled = env.bool_or("OTEL_SDK_DISABLED", false)?;
        let exporter = env.raw("OTEL_TRACES_EXPORTER");
        match exporter.as_deref() {
            None | Some("otlp") | Some("none") => {}
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "OTEL_TRACES_EXPORTER",
                    reason: format!("{other:?} is not supported (use otlp or none)"),
                });
            }
        }
        let protocol = env
            .raw("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| env.raw("OTEL_EXPORTER_OTLP_PROTOCOL"));
        if let Some(protocol) = protocol.filter(|p| p != "http/protobuf") {
            return Err(ConfigError::Invalid {
                name: "OTEL_EXPORTER_OTLP_PROTOCOL",
                reason: format!(
                    "{protocol:?} is not supported: traces are sent as http/protobuf (an \
                     OpenTelemetry Collector accepts it on port 4318)"
                ),
            });
        }
        let endpoint = match env.raw("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            Some(url) => Some(checked_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url)?),
            None => env
                .raw("OTEL_EXPORTER_OTLP_ENDPOINT")
                .map(|base| {
                    checked_url("OTEL_EXPORTER_OTLP_ENDPOINT", base)
                        .map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
                })
                .transpose()?,
        };
        let off = disabled || exporter.as_deref() == Some("none");
        let mut headers = pairs(env, "OTEL_EXPORTER_OTLP_HEADERS")?;
        for (key, value) in pairs(env, "OTEL_EXPORTER_OTLP_TRACES_HEADERS")? {
            headers.retain(|(k, _)| !k.eq_ignore_ascii_case(&key));
            headers.push((key, value));
        }
        let defaults = Self::off();
        Ok(Self {
            endpoint: endpoint.filter(|_| !off),
            headers,
            timeout: millis(env.parse_or(
                "OTEL_EXPORTER_OTLP_TIMEOUT",
                defaults.timeout.as_millis() as u64,
            )?),
            service_name: env.raw("OTEL_SERVICE_NAME"),
            resource_attributes: pairs(env, "OTEL_RESOURCE_ATTRIBUTES")?,
            sampler: sampler(env)?,
            batch_delay: millis(super::nonzero(
                "OTEL_BSP_SCHEDULE_DELAY",
                env.parse_or(
                    "OTEL_BSP_SCHEDULE_DELAY",
                    defaults.batch_delay.as_millis() as u64,
                )?,
            )?),
            max_queue_size: super::nonzero(
                "OTEL_BSP_MAX_QUEUE_SIZE",
                env.parse_or("OTEL_BSP_MAX_QUEUE_SIZE", defaults.max_queue_size)?,
            )?,
            max_export_batch_size: super::nonzero(
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
                env.parse_or(
                    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
                    defaults.max_export_batch_size,
                )?,
            )?,
            filter: env.raw("TRACE_FILTER").unwrap_or(defaults.filter),
        })
    }
}

/// An http(s) URL, or the error that names the variable.
fn checked_url(name: &'static str, value: String) -> Result<String, ConfigError> {
    match url::Url::parse(&value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(value),
        _ => Err(ConfigError::Invalid {
            name,
            reason: format!("{value:?} is not an http:// or https:// URL"),
        }),
    }
}

/// `key=value,key2=value2` with percent-encoded values, as the OpenTelemetry spec writes them.
fn pairs(env: &Source<'_>, name: &'static str) -> Result<Vec<(String, String)>, ConfigError> {
    env.list(name)
        .into_iter()
        .map(|item| {
            let (key, value) = item.split_once('=').ok_or_else(|| ConfigError::Invalid {
                name,
                reason: format!("{:?} is not key=value", shown_key(&item)),
            })?;
            let value = percent_encoding::percent_decode_str(value.trim())
                .decode_utf8()
                .map_err(|_| ConfigError::Invalid {
                    name,
                    reason: format!("the value of {:?} is not UTF-8", key.trim()),
                })?;
            Ok((key.trim().to_owned(), value.into_owned()))
        })
        .collect()
}

/// The part of a malformed pair that is safe to echo: headers carry API keys, so at most the
/// first few characters.
fn shown_key(item: &str) -> String {
    item.chars().take(12).collect()
}

fn sampler(env: &Source<'_>) -> Result<TraceSampler, ConfigError> {
    let ratio = || -> Result<f64, ConfigError> {
        let ratio: f64 = env.parse_or("OTEL_TRACES_SAMPLER_ARG", 1.0)?;
        if !(0.0..=1.0).contains(&ratio) {
            return Err(ConfigError::Invalid {
                name: "OTEL_TRACES_SAMPLER_ARG",
                reason: format!("{ratio} is not a fraction between 0 and 1"),
            });
        }
        Ok(ratio)
    };
    Ok(
        match env
            .raw("OTEL_TRACES_SAMPLER")
            .unwrap_or_else(|| "parentbased_always_on".into())
            .as_str()
        {
            "always_on" => TraceSampler::AlwaysOn,
            "always_off" => TraceSampler::AlwaysOff,
            "traceidratio" => TraceSampler::Ratio(ratio()?),
            "parentbased_always_on" => TraceSampler::ParentBased(ParentRoot::AlwaysOn),
            "parentbased_always_off" => TraceSampler::ParentBased(ParentRoot::AlwaysOff),
            "parentbased_traceidratio" => TraceSampler::ParentBased(ParentRoot::Ratio(ratio()?)),
            other => {
                return Err(ConfigError::Invalid {
                    name: "OTEL_TRACES_SAMPLER",
                    reason: format!(
                        "{other:?} is not one of always_on, always_off, traceidratio, \
                         parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
                    ),
                });
            }
        },
    )
}
