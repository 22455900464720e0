//! Logs and metrics.

use std::sync::{OnceLock, PoisonError};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global tracing subscriber (`RUST_LOG` filters, default `info`, without
/// PostgreSQL's notices such as "relation already exists, skipping" from migrations).
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn"));
    // Colour codes only for a person at a terminal, not in files or log collectors.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if installed.is_ok() {
        std::panic::set_hook(Box::new(panic_hook(std::panic::take_hook())));
    }
}

/// A hook as `std::panic::set_hook` takes it.
type PanicHook = Box<dyn Fn(&std::panic::PanicHookInfo<'_>) + Sync + Send + 'static>;

/// The panic hook with logs set up: [`log_panic`], unless the filter drops this module's
/// ERROR lines (`RUST_LOG=off`): panics are never dropped, so they then go to `previous`
/// (Rust's own hook, which prints them to stderr as without a log).
fn panic_hook(previous: PanicHook) -> impl Fn(&std::panic::PanicHookInfo<'_>) + Sync + Send {
    move |info| {
        if tracing::enabled!(tracing::Level::ERROR) {
            log_panic(info);
        } else {
            previous(info);
        }
    }
}

/// The panic hook once logs are set up: a panic is an ERROR line of the log, in its format,
/// instead of text on stderr beside it (a JSON log stays parseable). A panic the engine
/// catches (a plugin's bug, see `ProcessSet::run_engine_caught`) is also logged where it is
/// caught, with the update or order it failed. With `RUST_BACKTRACE=1` the line holds the
/// backtrace, as the default hook would print it.
fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    let message = crate::domain::processes::panic_message(info.payload());
    let location = info.location().map(ToString::to_string).unwrap_or_default();
    let thread = std::thread::current();
    let backtrace = std::backtrace::Backtrace::capture();
    let backtrace = (backtrace.status() == std::backtrace::BacktraceStatus::Captured)
        .then(|| backtrace.to_string());
    tracing::error!(
        panic.message = message,
        panic.location = %location,
        panic.thread = thread.name().unwrap_or("unnamed"),
        panic.backtrace = backtrace,
        "panicked"
    );
}

/// A count is reused for the gauges until this many times its duration has passed.
const RECOUNT_AFTER_COST: u32 = 100;

/// The last counts behind a family of gauges (`N` of them), each reused until 100 times
/// the time it took has passed. A count of rows that are kept for ever (applied updates,
/// finished effects) reads an index range as long as its result, so refreshing it every
/// few seconds would take a growing share of a core from the requests; this way a large
/// count costs at most 1 % of a core however large it grows, at the price of being up to
/// 100 times its cost old, while small counts (what waits, what is dead) are fresh at
/// every refresh.
pub struct GaugeCounts<const N: usize>(std::sync::Mutex<[Option<Counted>; N]>);

/// A count: the number, when it was taken, how long it took.
#[derive(Clone, Copy, Debug)]
struct Counted {
    n: i64,
    at: Instant,
    took: Duration,
}

impl Counted {
    /// Whether to count again at `now`.
    fn due(&self, now: Instant) -> bool {
        now.duration_since(self.at) >= self.took * RECOUNT_AFTER_COST
    }
}

impl<const N: usize> GaugeCounts<N> {
    pub const fn new() -> Self {
        Self(std::sync::Mutex::new([None; N]))
    }

    /// Count `i`: the last one while it is fresh, else `count`'s, remembered.
    pub async fn get<E, F>(&self, i: usize, count: impl FnOnce() -> F) -> Result<i64, E>
    where
        F: Future<Output = Result<i64, E>>,
    {
        let last = self.0.lock().unwrap_or_else(PoisonError::into_inner)[i];
        if let Some(c) = last
            && !c.due(Instant::now())
        {
            return Ok(c.n);
        }
        let at = Instant::now();
        let n = count().await?;
        let counted = Counted {
            n,
            at,
            took: at.elapsed(),
        };
        self.0.lock().unwrap_or_else(PoisonError::into_inner)[i] = Some(counted);
        Ok(n)
    }
}

impl<const N: usize> Default for GaugeCounts<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// The process-wide Prometheus recorder, installed on first use. One per process because
/// the `metrics` facade has one global recorder (tests start several servers).
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ])
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        // Fails only if another recorder is installed; then ours just renders nothing new.
        let _ = metrics::set_global_recorder(recorder);
        spawn_upkeep(handle.clone());
        handle
    })
}

/// How often histogram samples are folded into their buckets when nobody scrapes.
const UPKEEP: Duration = Duration::from_secs(5);

/// A recorder made with `build_recorder` keeps every histogram sample until `/metrics`
/// renders it: unscraped, memory grew with every request (RSS 65 → 169 MiB over 1.2
/// million updates in `bench drain`). A thread of its own folds them every [`UPKEEP`],
/// whatever runtime the process has.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the metrics upkeep thread; histograms are folded only when /metrics is scraped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `MakeWriter` into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Panics once under `subscriber` with [`panic_hook`] installed (put back at once);
    /// whether the hook before it was called instead.
    fn panic_under(subscriber: impl tracing::Subscriber + Send + Sync) -> bool {
        // The hook is the process's: one test at a time sets it.
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let fell_back = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = fell_back.clone();
        // Other tests' panics (run_engine_caught's) may reach this hook meanwhile.
        let this = std::thread::current().id();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(panic_hook(Box::new(move |_| {
            if std::thread::current().id() == this {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }))));
        let caught = tracing::subscriber::with_default(subscriber, || {
            std::panic::catch_unwind(|| panic!("a plugin's bug in {}", "SKU-1"))
        });
        std::panic::set_hook(previous);
        assert!(caught.is_err());
        fell_back.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[test]
    fn a_panic_is_an_error_line_of_the_json_log() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        assert!(!panic_under(subscriber));
        let out = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
        assert_eq!(line["level"], "ERROR", "{line}");
        assert_eq!(line["fields"]["message"], "panicked", "{line}");
        assert_eq!(
            line["fields"]["panic.message"], "a plugin's bug in SKU-1",
            "{line}"
        );
        let location = line["fields"]["panic.location"]
            .as_str()
            .unwrap_or_default();
        assert!(
            location.starts_with("crates/orderflow/src/telemetry.rs:"),
            "{line}"
        );
    }

    #[test]
    fn a_panic_the_log_filters_out_goes_to_the_hook_before() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("off"))
            .with_writer(move || writer.clone())
            .finish();
        assert!(panic_under(subscriber));
        assert!(buffer.0.lock().unwrap().is_empty());
    }

    #[test]
    fn a_count_is_reused_for_a_hundred_times_its_cost() {
        let at = Instant::now();
        let cheap = Counted {
            n: 3,
            at,
            took: Duration::from_micros(100),
        };
        assert!(!cheap.due(at + Duration::from_millis(9)));
        assert!(cheap.due(at + Duration::from_millis(10)), "10 ms later");
        let large = Counted {
            n: 2_400_000,
            at,
            took: Duration::from_millis(220),
        };
        assert!(!large.due(at + Duration::from_secs(5)), "the next refresh");
        assert!(!large.due(at + Duration::from_secs(21)));
        assert!(large.due(at + Duration::from_secs(22)));
    }

    #[tokio::test]
    async fn a_fresh_count_is_not_taken_again() {
        let counts = GaugeCounts::<2>::new();
        let slow = || async {
            std::thread::sleep(Duration::from_millis(50));
            Ok::<_, ()>(7)
        };
        assert_eq!(counts.get(0, slow).await, Ok(7));
        // Within 100 times 50 ms the first count stands; the other slot counts on its own.
        assert_eq!(counts.get(0, || async { Ok::<_, ()>(8) }).await, Ok(7));
        assert_eq!(counts.get(1, || async { Ok::<_, ()>(1) }).await, Ok(1));
        assert_eq!(counts.get(0, || async { Err(()) }).await, Ok(7));
    }
}
