//! The process's log filter, changeable while it runs.
//!
//! The filter is a `tracing` env-filter (`info`, `warn,timproxy::outbound=debug`, …). It starts
//! as `--log-level` / `TIMPROXY_LOG` if given, else as `admin.log_level_default` from the
//! configuration (which a reload may change). An operator may replace it for a while through
//! the admin listener, so one component can be debugged without a restart: after the reset
//! delay it returns to the default by itself.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::cli::LogFormat;

/// Level names the reference's `GET /actuator/logging/levels` lists.
pub const ACCEPTED_LEVELS: [&str; 5] = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"];

/// A filter that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{filter}` is not a log filter: {reason}")]
pub struct FilterError {
    pub filter: String,
    pub reason: String,
}

/// Parse `text` as an env-filter.
pub fn parse_filter(text: &str) -> Result<EnvFilter, FilterError> {
    EnvFilter::try_new(text).map_err(|e| FilterError {
        filter: text.to_owned(),
        reason: e.to_string(),
    })
}

/// Installs a parsed filter into the subscriber.
pub type ApplyFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// The running filter and how to change it.
pub struct LogControl {
    apply: ApplyFilter,
    state: Mutex<State>,
}

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogControl")
            .field("view", &self.view())
            .finish()
    }
}

struct State {
    /// What the process returns to after a temporary change.
    default: String,
    /// The default came from the command line; the configuration does not change it.
    pinned: bool,
    current: String,
    /// Set while a temporary filter is active.
    reset_at: Option<OffsetDateTime>,
    temporary: bool,
    /// Counts changes, so a reset timer of an earlier change does nothing.
    generation: u64,
}

/// The filter as the admin listener shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLevelView {
    /// The filter in effect.
    pub filter: String,
    /// The filter the process returns to.
    pub default: String,
    /// Whether `filter` is a temporary change.
    pub temporary: bool,
    /// When a temporary change ends by itself (RFC 3339), if it does.
    pub reset_at: Option<String>,
    /// Whether the default came from `--log-level` / `TIMPROXY_LOG` (configuration reloads
    /// leave it alone).
    pub default_from_command_line: bool,
}

static INSTALLED: OnceLock<Arc<LogControl>> = OnceLock::new();

/// Install the process-wide subscriber (stderr, text or JSON) with a changeable filter.
/// `command_line` is `--log-level` / `TIMPROXY_LOG`; without it the process logs at `info` until
/// a configuration names its `admin.log_level_default`.
pub fn init(command_line: Option<&str>, format: LogFormat) -> Result<Arc<LogControl>, FilterError> {
    let start = command_line.unwrap_or("info");
    let filter = parse_filter(start)?;
    let (layer, handle) = tracing_subscriber::reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(layer);
    match format {
        LogFormat::Text => registry.with(fmt).init(),
        LogFormat::Json => registry.with(fmt.json()).init(),
    }
    let control = LogControl::new(
        start,
        command_line.is_some(),
        Box::new(move |filter| handle.reload(filter).map_err(|e| e.to_string())),
    );
    let _ = INSTALLED.set(control.clone());
    Ok(control)
}

/// The control [`init`] installed, if any (library users and tests may have none).
pub fn installed() -> Option<Arc<LogControl>> {
    INSTALLED.get().cloned()
}

impl LogControl {
    /// A control whose filter currently is `default` (already installed by the caller).
    pub fn new(default: &str, pinned: bool, apply: ApplyFilter) -> Arc<Self> {
        Arc::new(Self {
            apply,
            state: Mutex::new(State {
                default: default.to_owned(),
                pinned,
                current: default.to_owned(),
                reset_at: None,
                temporary: false,
                generation: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn view(&self) -> LogLevelView {
        let state = self.lock();
        LogLevelView {
            filter: state.current.clone(),
            default: state.default.clone(),
            temporary: state.temporary,
            reset_at: state.reset_at.and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            }),
            default_from_command_line: state.pinned,
        }
    }

    /// The configuration's `admin.log_level_default` (on start and on every reload). Ignored
    /// when the command line named a filter; while a temporary change is active it takes
    /// effect when that ends.
    pub fn set_default(&self, filter: &str) -> Result<(), FilterError> {
        let parsed = parse_filter(filter)?;
        let mut state = self.lock();
        if state.pinned || state.default == filter {
            return Ok(());
        }
        state.default = filter.to_owned();
        if !state.temporary {
            state.generation += 1;
            self.install(&mut state, parsed, filter);
        }
        Ok(())
    }

    /// Change the filter now. With `reset_after`, it returns to the default after that long
    /// (a later change cancels the reset); without, it stays until the next change.
    pub fn set_temporary(
        self: &Arc<Self>,
        filter: &str,
        reset_after: Option<Duration>,
    ) -> Result<LogLevelView, FilterError> {
        let parsed = parse_filter(filter)?;
        let reset_after = reset_after.filter(|d| !d.is_zero());
        tracing::warn!(
            filter,
            reset_after = ?reset_after,
            "log filter changed through the admin listener"
        );
        {
            let mut state = self.lock();
            state.generation += 1;
            state.temporary = true;
            state.reset_at = reset_after.map(|d| OffsetDateTime::now_utc() + d);
            self.install(&mut state, parsed, filter);
            if let Some(delay) = reset_after {
                let generation = state.generation;
                let control: Weak<Self> = Arc::downgrade(self);
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    if let Some(control) = control.upgrade() {
                        control.reset_if(generation);
                    }
                });
            }
        }
        Ok(self.view())
    }

    /// Return to the default filter now.
    pub fn reset(&self) -> LogLevelView {
        let generation = self.lock().generation;
        self.reset_if(generation);
        self.view()
    }

    fn reset_if(&self, generation: u64) {
        let mut state = self.lock();
        if state.generation != generation || !state.temporary {
            return;
        }
        state.generation += 1;
        state.temporary = false;
        state.reset_at = None;
        let default = state.default.clone();
        match parse_filter(&default) {
            Ok(parsed) => self.install(&mut state, parsed, &default),
            Err(e) => tracing::error!(error = %e, "cannot return to the default log filter"),
        }
        tracing::info!(filter = %default, "log filter back to the default");
    }

    fn install(&self, state: &mut State, parsed: EnvFilter, text: &str) {
        match (self.apply)(parsed) {
            Ok(()) => state.current = text.to_owned(),
            Err(e) => {
                tracing::error!(error = %e, filter = text, "installing the log filter failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recording() -> (Arc<LogControl>, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let control = LogControl::new(
            "info",
            false,
            Box::new(move |filter| {
                sink.lock().unwrap().push(filter.to_string());
                Ok(())
            }),
        );
        (control, seen)
    }

    #[tokio::test]
    async fn a_temporary_filter_returns_to_the_default_after_its_delay() {
        let (control, seen) = recording();
        let view = control
            .set_temporary("debug", Some(Duration::from_millis(50)))
            .unwrap();
        // Nothing has yielded to the timer yet (single-threaded test runtime).
        assert_eq!(view.filter, "debug");
        assert!(view.temporary && view.reset_at.is_some());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while control.view().temporary && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(control.view().filter, "info");
        assert_eq!(*seen.lock().unwrap(), ["debug", "info"]);
    }

    #[tokio::test]
    async fn a_later_change_cancels_the_earlier_reset() {
        let (control, _) = recording();
        control
            .set_temporary("debug", Some(Duration::from_secs(600)))
            .unwrap();
        let first = control.lock().generation;
        control.set_temporary("trace", None).unwrap();
        // What the first change's timer does when it fires.
        control.reset_if(first);
        assert_eq!(control.view().filter, "trace");
        assert!(control.view().reset_at.is_none());
        assert_eq!(control.reset().filter, "info");
    }

    #[tokio::test]
    async fn a_bad_filter_changes_nothing_and_says_why() {
        let (control, seen) = recording();
        let err = control.set_temporary("info,[x", None).unwrap_err();
        assert!(err.to_string().starts_with("`info,[x` is not a log filter"));
        assert_eq!(control.view().filter, "info");
        assert!(seen.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_configured_default_waits_for_a_temporary_change_and_yields_to_the_command_line() {
        let (control, _) = recording();
        control.set_temporary("debug", None).unwrap();
        control.set_default("warn").unwrap();
        assert_eq!(control.view().filter, "debug");
        assert_eq!(control.reset().filter, "warn");

        let pinned = LogControl::new("trace", true, Box::new(|_| Ok(())));
        pinned.set_default("warn").unwrap();
        assert_eq!(pinned.view().filter, "trace");
        assert_eq!(pinned.view().default, "trace");
    }
}
