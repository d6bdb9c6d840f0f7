//! Log lines in the seed's shape: `[ WARNING] (source) message`, where the
//! source is `host`, `workflow` or the step a guest line came from. Levels
//! are coloured on a terminal (never when piped, or with `NO_COLOR`); a
//! closed stderr never stops the process.

use std::fmt;
use std::io::{self, IsTerminal as _};

use anstyle::{AnsiColor, Style};
use stepbox::telemetry::Traces;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// What is shown when `RUST_LOG` is not set (the trace spans are for the exporter, not the log).
const DEFAULT_FILTER: &str = "info,sqlx=error,wasmtime=warn,cranelift=warn,stepbox::otel=off";

/// When to colour output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless `NO_COLOR` is set.
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// Whether to colour what goes to `stream`.
    pub fn enabled(self, stream_is_terminal: bool) -> bool {
        match self {
            Self::Always => true,
            Self::Never => false,
            Self::Auto => stream_is_terminal && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty()),
        }
    }
}

/// Installs the stderr logger (`quiet` shows only errors, else `RUST_LOG`
/// or the default) and, when given, the trace exporter's layer.
pub fn init(quiet: bool, color: ColorChoice, traces: Option<&Traces>) {
    let filter = if quiet {
        EnvFilter::new("error")
    } else {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
    };
    let colored = color.enabled(io::stderr().is_terminal());
    let log = tracing_subscriber::fmt::layer().with_writer(Stderr).event_format(SeedFormat { colored });
    tracing_subscriber::registry().with(log.with_filter(filter)).with(traces.map(Traces::layer)).init();
}

/// Stderr that swallows write errors: a closed pipe must not end the run.
struct Stderr;

struct StderrWriter;

impl io::Write for StderrWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let _ = io::stderr().write_all(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = StderrWriter;

    fn make_writer(&'a self) -> Self::Writer {
        StderrWriter
    }
}

/// The event formatter.
struct SeedFormat {
    colored: bool,
}

impl<S, N> FormatEvent<S, N> for SeedFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let (level, color) = match *event.metadata().level() {
            Level::ERROR => ("ERROR", AnsiColor::Red),
            Level::WARN => ("WARNING", AnsiColor::Yellow),
            Level::INFO => ("INFO", AnsiColor::Green),
            Level::DEBUG => ("DEBUG", AnsiColor::Blue),
            Level::TRACE => ("TRACE", AnsiColor::Magenta),
        };
        let target = event.metadata().target();
        let source = fields.source.as_deref().unwrap_or(if target.starts_with("stepbox") { "host" } else { target });
        let style = if self.colored { Style::new().fg_color(Some(color.into())).bold() } else { Style::new() };
        writeln!(writer, "[{style}{level:>8}{style:#}] ({source}) {}{}", fields.message, fields.extra)
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

#[cfg(test)]
mod tests {
    use super::ColorChoice;

    #[test]
    fn colour_only_on_a_terminal_unless_forced() {
        assert!(!ColorChoice::Never.enabled(true));
        assert!(ColorChoice::Always.enabled(false));
        assert!(!ColorChoice::Auto.enabled(false));
    }
}
