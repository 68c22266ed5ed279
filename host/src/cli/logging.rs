//! The process's log: lines to stderr from a thread of their own, optional
//! span export, and panics inside dependencies as one log line.

use super::otlp;

/// Logs to stderr from a thread of its own: workers only queue the line
/// (components may log on every call). Under a backlog of 8192 lines, new
/// lines are dropped rather than stall the host. (The default backlog of
/// 128 000 lines is allocated up front: 4 MiB of resident memory.) The guard
/// flushes on drop.
///
/// With `export` (its collector's URL and layer), spans are also exported:
/// the log keeps its own filter, the export takes `membrane`'s spans at info
/// whatever the log's filter says. Without it no OpenTelemetry layer exists.
pub(super) fn init_logging(
    default: &str,
    export: Option<(String, otlp::Layer)>,
) -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(8192)
        .lossy(true)
        .finish(std::io::stderr());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    match export {
        None => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_target(false)
            .with_ansi(ansi)
            .with_writer(writer)
            .init(),
        Some((url, layer)) => {
            let log = tracing_subscriber::fmt::layer()
                .with_target(false)
                .with_ansi(ansi)
                .with_writer(writer);
            tracing_subscriber::registry()
                .with(layer)
                .with(tracing_subscriber::Layer::with_filter(log, filter))
                .init();
            crate::runtime::trace::set_exporting(true);
            tracing::info!(
                "exporting spans over OTLP/HTTP to {}",
                otlp::traces_url(&url).unwrap_or(url)
            );
        }
    }
    guard
}

/// Logs a panic inside a dependency as one line through `tracing`, with no
/// backtrace. A peer can make one happen (async-nats panics in its
/// connection task on a lone carriage return in a header, nats.rs#1612),
/// and the default hook's backtrace, with `RUST_BACKTRACE` set, takes tens
/// of milliseconds to symbolise while the dying connection's socket stays
/// open and the server keeps routing messages into it. A panic in this
/// crate's own code keeps the default hook (and its backtrace).
pub(super) fn log_dependency_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let location = info.location().map(|l| l.to_string()).unwrap_or_default();
        if !location.contains("/registry/src/") {
            return default(info);
        }
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(
            "a task panicked in a dependency at {location}: {}",
            crate::runtime::output::escape(message.as_bytes())
        );
    }));
}
