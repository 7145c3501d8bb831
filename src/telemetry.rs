//! Logs and traces.
//!
//! Logs are `tracing` events written to stderr, filtered by `RUST_LOG` (default `warn`).
//!
//! Traces are off unless `serve --otel-enabled` (`OTEL_ENABLED=true`): then medledger's
//! spans at INFO and above (one per HTTP request, with the wait for the block's fsync and
//! the block append inside) are exported over OTLP/HTTP with protobuf bodies to
//! `--otlp-endpoint` (`OTEL_EXPORTER_OTLP_ENDPOINT`) + `/v1/traces`. The SDK batches them
//! on its own thread, off the request path, and drops spans (never blocks a request) when
//! its queue is full. The SDK's standard variables still apply: `OTEL_SERVICE_NAME`
//! (default `medledger`), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and
//! `OTEL_TRACES_SAMPLER_ARG` (default: every trace), `OTEL_BSP_SCHEDULE_DELAY` (ms,
//! default 5,000), `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_EXPORTER_OTLP_TIMEOUT`. A request that
//! carries a W3C `traceparent` header joins the caller's trace.
//!
//! Spans name routes and counts, never ids, metadata or payloads (the privacy rule).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// The collector's default address (the OTLP/HTTP port, on loopback).
pub const OTLP_ENDPOINT_DEFAULT: &str = "http://127.0.0.1:4318";

/// Keeps the trace exporter alive; [`Telemetry::shutdown`] sends what is still queued.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// The OTLP trace endpoint for a collector base URL: `{base}/v1/traces`, as the
/// `OTEL_EXPORTER_OTLP_ENDPOINT` convention has it. Plain `http://` only: the exporter is
/// built without TLS (a collector on loopback or a local network forwards further).
pub fn traces_url(base: &str) -> Result<String, String> {
    let base = base.trim().trim_end_matches('/');
    if base.starts_with("https://") {
        return Err(format!(
            "the OTLP endpoint `{base}` is https://, but the exporter has no TLS: \
             send to a local collector over http://"
        ));
    }
    let rest = base
        .strip_prefix("http://")
        .ok_or_else(|| format!("the OTLP endpoint `{base}` must be an http:// URL"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("the OTLP endpoint `{base}` names no host"));
    }
    Ok(format!("{base}/v1/traces"))
}

/// Installs the global subscriber: logs to stderr, and when `otlp_endpoint` is given,
/// the OTLP trace exporter to that collector.
pub fn init(otlp_endpoint: Option<&str>) -> Result<Telemetry, String> {
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")));
    let Some(endpoint) = otlp_endpoint else {
        tracing_subscriber::registry().with(logs).init();
        return Ok(Telemetry { provider: None });
    };
    let url = traces_url(endpoint)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url.clone())
        .build()
        .map_err(|e| format!("the OTLP exporter for {url}: {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("medledger");
    }
    let provider = SdkTracerProvider::builder()
        .with_resource(resource.build())
        .with_batch_exporter(exporter)
        .build();
    let traces = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("medledger"))
        .with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target("medledger", tracing::Level::INFO),
        );
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .init();
    Ok(Telemetry {
        provider: Some(provider),
    })
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still queued and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                eprintln!("medledger: exporting the last traces: {e}");
            }
        }
    }
}

/// A count or number as a span attribute: OpenTelemetry has no unsigned integers, and a
/// `u64` field is exported as text, so numbers go in as `i64` (saturating).
pub fn otel_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Names an exported span once what names it is known (a request's route is known only
/// after routing, when the OpenTelemetry span has started and `otel.name` no longer
/// applies).
pub fn rename(span: &tracing::Span, name: String) {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if !span.is_disabled() {
        span.context().span().update_name(name);
    }
}

/// Joins `span` to the trace named by the request's W3C `traceparent` header, if any.
pub fn join_remote_trace(span: &tracing::Span, headers: &actix_web::http::header::HeaderMap) {
    use opentelemetry::propagation::TextMapPropagator as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    struct Headers<'a>(&'a actix_web::http::header::HeaderMap);
    impl opentelemetry::propagation::Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|k| k.as_str()).collect()
        }
    }
    if span.is_disabled() || !headers.contains_key("traceparent") {
        return;
    }
    let parent =
        opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&Headers(headers));
    // Fails only if the span has started already; then it keeps its own trace.
    let _ = span.set_parent(parent);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_url_is_the_base_and_v1_traces() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url(" http://collector.local:4318/ ").unwrap(),
            "http://collector.local:4318/v1/traces"
        );
        assert!(traces_url("https://collector.local:4318")
            .unwrap_err()
            .contains("no TLS"));
        for bad in ["127.0.0.1:4318", "ftp://x", "http://", "http:///v1", ""] {
            assert!(traces_url(bad).is_err(), "{bad} accepted");
        }
    }
}
