//! Log lines in the seed's shape: `[ WARNING] (source) message`, where the
//! source is `host`, `workflow` or the step a guest line came from.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// What is shown when `RUST_LOG` is not set.
const DEFAULT_FILTER: &str = "info,sqlx=warn,wasmtime=warn,cranelift=warn";

/// Installs the stderr logger: `--quiet` shows nothing, else `RUST_LOG` or the default.
pub fn init(quiet: bool) {
    let filter = if quiet {
        EnvFilter::new("off")
    } else {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
    };
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).event_format(SeedFormat).init();
}

/// The event formatter.
struct SeedFormat;

impl<S, N> FormatEvent<S, N> for SeedFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = match *event.metadata().level() {
            Level::ERROR => "ERROR",
            Level::WARN => "WARNING",
            Level::INFO => "INFO",
            Level::DEBUG => "DEBUG",
            Level::TRACE => "TRACE",
        };
        let target = event.metadata().target();
        let source = fields.source.as_deref().unwrap_or(if target.starts_with("stepbox") { "host" } else { target });
        writeln!(writer, "[{level:>8}] ({source}) {}{}", fields.message, fields.extra)
    }
}

#[derive(Default)]
struct Fields {
    source: Option<String>,
    message: String,
    extra: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "source" => self.source = Some(value.to_string()),
            "message" => self.message = value.to_string(),
            name => self.extra.push_str(&format!(" {name}={value}")),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "source" => self.source = Some(format!("{value:?}")),
            "message" => self.message = format!("{value:?}"),
            name => self.extra.push_str(&format!(" {name}={value:?}")),
        }
    }
}
