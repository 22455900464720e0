//! The end-to-end phase of the drain benchmark: a `serve` with its in-process worker,
//! offered a steady rate of single async updates; the time from each 202 to applied.

use super::*;

/// How the benchmark reads the server's inbox: SQLite read-only, or PostgreSQL.
#[derive(Clone)]
enum Reader {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// Settled updates after `seq` `$1`, by seq.
const SETTLED_AFTER: &str = "SELECT seq, id FROM inbox WHERE seq > $1 \
     AND status NOT IN ('accepted', 'processing') ORDER BY seq";
/// When each applied update after `seq` `$1` was received and processed, with its `seq` and
/// attempts.
const STAMPS: &str = "SELECT seq, attempts, received_at, processed_at FROM inbox \
     WHERE status = 'applied' AND seq > $1";
/// The errors of the update `$1`'s failed attempts, as text.
const ERRORS: &str = "SELECT CAST(errors AS TEXT) FROM inbox WHERE seq = $1";
/// The last `seq` stored.
pub(super) const LAST_SEQ: &str = "SELECT COALESCE(MAX(seq), 0) FROM inbox";
/// An applied update's `seq`, attempts, `received_at` and `processed_at`.
type Stamp = (i64, i32, DateTime<Utc>, DateTime<Utc>);

impl Reader {
    async fn settled_after(&self, low: i64) -> sqlx::Result<Vec<(i64, String)>> {
        match self {
            Self::Sqlite(p) => sqlx::query_as(SETTLED_AFTER).bind(low).fetch_all(p).await,
            Self::Postgres(p) => sqlx::query_as(SETTLED_AFTER).bind(low).fetch_all(p).await,
        }
    }

    async fn stamps(&self, low: i64) -> sqlx::Result<Vec<Stamp>> {
        match self {
            Self::Sqlite(p) => sqlx::query_as(STAMPS).bind(low).fetch_all(p).await,
            Self::Postgres(p) => sqlx::query_as(STAMPS).bind(low).fetch_all(p).await,
        }
    }

    async fn errors(&self, seq: i64) -> sqlx::Result<String> {
        match self {
            Self::Sqlite(p) => sqlx::query_scalar(ERRORS).bind(seq).fetch_one(p).await,
            Self::Postgres(p) => sqlx::query_scalar(ERRORS).bind(seq).fetch_one(p).await,
        }
    }

    async fn last_seq(&self) -> sqlx::Result<i64> {
        match self {
            Self::Sqlite(p) => sqlx::query_scalar(LAST_SEQ).fetch_one(p).await,
            Self::Postgres(p) => sqlx::query_scalar(LAST_SEQ).fetch_one(p).await,
        }
    }

    async fn close(&self) {
        match self {
            Self::Sqlite(p) => p.close().await,
            Self::Postgres(p) => p.close().await,
        }
    }
}

/// Offers `rate` async updates per second to a `serve` with its worker, and measures 202
/// to applied: on a SQLite file, or on a scratch database of the PostgreSQL server `admin`.
pub(super) async fn end_to_end(
    binary: &Path,
    args: &Args,
    admin: Option<&str>,
) -> anyhow::Result<()> {
    let plain = Setup::plain();
    let scratch = match admin {
        Some(admin) => Some(ScratchDb::create(admin, "e2e").await?),
        None => None,
    };
    let url = scratch.as_ref().map(|d| d.url.as_str());
    let server = Server::start_with(binary, url, &plain.processes, &plain.config, &[])?;
    let (shop, erp) = tokens(&server)?;
    let http = reqwest::Client::new();
    let orders = args.orders.min(1000);
    create_orders(&http, &server.base, &shop, orders).await?;
    let (backend, reader) = match url {
        Some(url) => (
            "PostgreSQL",
            // The table grows from empty during the run, faster than autovacuum analyses
            // it, and the 2 ms poll then ran as a sequential scan of the whole inbox (a
            // third of a core on PostgreSQL, taken from the server measured). The poll
            // reads the window after the low-water mark by primary key.
            Reader::Postgres(
                sqlx::PgPool::connect_with(
                    url.parse::<sqlx::postgres::PgConnectOptions>()?
                        .options([("enable_seqscan", "off"), ("enable_bitmapscan", "off")]),
                )
                .await?,
            ),
        ),
        None => {
            let file = server
                .database_url
                .trim_start_matches("sqlite://")
                .to_owned();
            let pool = sqlx::SqlitePool::connect_with(
                sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(&file)
                    .read_only(true),
            )
            .await?;
            ("SQLite", Reader::Sqlite(pool))
        }
    };

    if args.prefill > 0 {
        let took = Instant::now();
        super::prefill::prefill(&server.database_url, args.prefill, orders, args.rate.max(1))
            .await?;
        println!(
            "end to end, {backend} serve: {} applied updates stored before the run in {:.1} s",
            args.prefill,
            took.elapsed().as_secs_f64()
        );
    }
    // Updates up to here are not the run's: the poll and the server's stamps start after.
    let low = reader.last_seq().await?;

    // Sized for the whole run up front: growing a map of a million ids rehashes it while
    // every connection waits on its lock, a stall of the load client and not of the server.
    let expected = args.rate.saturating_mul(args.seconds).min(4_000_000) as usize;
    let acked: Arc<Mutex<HashMap<String, Instant>>> =
        Arc::new(Mutex::new(HashMap::with_capacity(expected)));
    let answers = Arc::new(Mutex::new(Tenths::new()?));
    let seen: Arc<Mutex<HashMap<String, Instant>>> =
        Arc::new(Mutex::new(HashMap::with_capacity(expected)));
    let sending = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let poller = tokio::spawn(poll_applied(
        reader.clone(),
        seen.clone(),
        sending.clone(),
        low,
    ));

    // The server's resident memory, once a second while the load runs.
    let rss = {
        let (pid, sending) = (server.pid(), sending.clone());
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while sending.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some((now, _)) = crate::machine::memory_of(pid) {
                    samples.push(now);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            samples
        })
    };
    let connections = 32_u64;
    let interval = Duration::from_secs_f64(connections as f64 / args.rate as f64);
    let duration = Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (http, base, erp, acked, answers) = (
            http.clone(),
            server.base.clone(),
            erp.clone(),
            acked.clone(),
            answers.clone(),
        );
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D ^ (c + 1));
        tasks.push(tokio::spawn(async move {
            let mut next = started + interval.mul_f64(c as f64 / connections as f64);
            let mut errors = 0_u64;
            let mut failures = Vec::new();
            let mut behind = Behind::new();
            while next < started + duration {
                tokio::time::sleep_until(next.into()).await;
                let scheduled = next;
                next += interval;
                let body = json!({"order_reference": format!("D-{}", rng.below(orders)),
                    "event": "touch", "attributes": {"c": c}});
                let sent = Instant::now();
                let r = http
                    .post(format!("{base}/v1/erp/order-updates"))
                    .bearer_auth(&erp)
                    .header("prefer", "respond-async")
                    .json(&body)
                    .send()
                    .await;
                let at = Instant::now();
                match r {
                    Ok(r) if r.status().as_u16() == 202 => {
                        let took = at.saturating_duration_since(sent).as_micros() as u64;
                        behind.record(scheduled, sent, at);
                        answers.lock().unwrap().record(
                            sent.duration_since(started),
                            duration,
                            took,
                        );
                        let v: Value = r.json().await.unwrap_or_default();
                        if let Some(id) = v["id"].as_str() {
                            acked.lock().unwrap().insert(id.to_owned(), at);
                        }
                    }
                    other => {
                        errors += 1;
                        // What went wrong, for the first few: a status and its body, or
                        // the client's error (a connection closed under a request, say).
                        if failures.len() < 3 {
                            failures.push(match other {
                                Ok(r) => {
                                    format!("{} {}", r.status(), r.text().await.unwrap_or_default())
                                }
                                Err(e) => format!("{e:?}"),
                            });
                        }
                    }
                }
            }
            (errors, failures, behind)
        }));
    }
    let mut errors = 0;
    let mut failures = Vec::new();
    let mut behind = Behind::new();
    for t in tasks {
        let (n, f, b) = t.await?;
        errors += n;
        failures.extend(f);
        behind.merge(b);
    }
    let sent_for = started.elapsed();
    let total = acked.lock().unwrap().len();
    // Let the last updates through, then stop polling.
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sending.store(false, std::sync::atomic::Ordering::Relaxed);
    let polls = poller.await??;

    let mut observed = Histogram::<u64>::new(3)?;
    let acked = acked.lock().unwrap().clone();
    let seen = seen.lock().unwrap().clone();
    let mut missing = 0;
    for (id, at) in &acked {
        match seen.get(id) {
            Some(done) => observed.record(done.saturating_duration_since(*at).as_micros() as u64)?,
            None => missing += 1,
        }
    }
    let stamps = reader.stamps(low).await?;
    let mut server_side = Tenths::new()?;
    let first = stamps.iter().map(|s| s.2).min().unwrap_or_default();
    let last = stamps.iter().map(|s| s.2).max().unwrap_or_default();
    let span = (last - first).to_std().unwrap_or_default();
    // The slowest update, and how many took over a second or more than one attempt: a
    // maximum far above the p99 is one of these, and its errors say why.
    let mut slowest: Option<(u64, &Stamp)> = None;
    let (mut over_a_second, mut retried) = (0, 0);
    for stamp @ (_, attempts, received, processed) in &stamps {
        let d = (*processed - *received)
            .num_microseconds()
            .unwrap_or(0)
            .max(0) as u64;
        let since = (*received - first).to_std().unwrap_or_default();
        server_side.record(since, span, d);
        over_a_second += usize::from(d > 1_000_000);
        retried += usize::from(*attempts > 1);
        if slowest.is_none_or(|(most, _)| d > most) {
            slowest = Some((d, stamp));
        }
    }
    let slowest_errors = match slowest {
        Some((_, (seq, attempts, ..))) if *attempts > 1 => Some(reader.errors(*seq).await?),
        _ => None,
    };
    reader.close().await;
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "end to end, {backend} serve: {} updates/s offered over {connections} connections; \
         {total} accepted in {:.1} s ({errors} errors), {} seen applied ({missing} not within \
         30 s)",
        args.rate,
        sent_for.as_secs_f64(),
        observed.len(),
    );
    let reached = (total as u64 + errors) as f64 / sent_for.as_secs_f64();
    // The latencies printed below run from each request's actual send. Where the load fell
    // behind its schedule (each connection waits for its answer), the wait before the send
    // is not in them; from the schedule, it is.
    println!(
        "  the schedule: {reached:.0} updates/s sent; {} of {total} requests went out over {} \
         ms after their time (at most {:.1} ms){}; request -> 202 from its time in the \
         schedule: p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        behind.count,
        BEHIND.as_millis(),
        behind.most.as_secs_f64() * 1e3,
        if behind.count * 100 > total as u64 {
            ": the load fell behind, and the latencies below, from each request's send, understate"
        } else {
            ""
        },
        ms(&behind.from_schedule, 0.5),
        ms(&behind.from_schedule, 0.99),
        behind.from_schedule.max() as f64 / 1000.0
    );
    for f in failures.iter().take(3) {
        println!("  error: {f}");
    }
    let answers = answers.lock().unwrap().clone();
    println!(
        "  request -> 202 (durable):               p50 {:.1} ms  p99 {:.1} ms  p99.9 {:.1} ms  max {:.1} ms",
        ms(&answers.all, 0.5),
        ms(&answers.all, 0.99),
        ms(&answers.all, 0.999),
        answers.all.max() as f64 / 1000.0
    );
    println!(
        "  202 -> applied (observed, 2 ms polls): p50 {:.1} ms  p99 {:.1} ms  p99.9 {:.1} ms  max {:.1} ms",
        ms(&observed, 0.5),
        ms(&observed, 0.99),
        ms(&observed, 0.999),
        observed.max() as f64 / 1000.0
    );
    println!(
        "  the polls themselves ({} of them):      p50 {:.1} ms  p99 {:.1} ms",
        polls.len(),
        ms(&polls, 0.5),
        ms(&polls, 0.99)
    );
    println!(
        "  received_at -> processed_at (server):    p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms; load {}",
        ms(&server_side.all, 0.5),
        ms(&server_side.all, 0.99),
        server_side.all.max() as f64 / 1000.0,
        load_average()
    );
    println!(
        "  first tenth of the run / last tenth: request -> 202 p50 {:.1} / {:.1} ms, p99 {:.1} / \
         {:.1} ms; received_at -> processed_at p50 {:.1} / {:.1} ms, p99 {:.1} / {:.1} ms",
        ms(&answers.first, 0.5),
        ms(&answers.last, 0.5),
        ms(&answers.first, 0.99),
        ms(&answers.last, 0.99),
        ms(&server_side.first, 0.5),
        ms(&server_side.last, 0.5),
        ms(&server_side.first, 0.99),
        ms(&server_side.last, 0.99),
    );
    if let Some((d, (seq, attempts, received, _))) = slowest {
        println!(
            "  slowest update: seq {seq}, received {}, {:.1} ms to processed in {attempts} \
             attempt(s){}; {over_a_second} took over 1 s, {retried} more than one attempt",
            received.format("%H:%M:%S%.3f"),
            d as f64 / 1000.0,
            slowest_errors.map_or(String::new(), |e| format!(", errors {e}"))
        );
    }
    let samples = rss.await?;
    let tenth = (samples.len() / 10).max(1);
    let median_of = |s: &[f64]| {
        let mut s = s.to_vec();
        s.sort_by(f64::total_cmp);
        s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
    };
    if let Some((_, peak)) = server.memory() {
        println!(
            "  server RSS: median {:.1} MiB over the first tenth of the run, {:.1} MiB over \
             the last tenth ({} samples, 1 s apart); peak {peak:.1} MiB",
            median_of(&samples[..tenth.min(samples.len())]),
            median_of(&samples[samples.len().saturating_sub(tenth)..]),
            samples.len()
        );
    }
    drop(server);
    if let Some(db) = scratch {
        db.drop().await?;
    }
    Ok(())
}

/// A latency over a whole run, and over its first and its last tenth: a server that slows
/// down as its inbox grows shows in the difference.
#[derive(Clone)]
struct Tenths {
    all: Histogram<u64>,
    first: Histogram<u64>,
    last: Histogram<u64>,
}

impl Tenths {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            all: Histogram::new(3)?,
            first: Histogram::new(3)?,
            last: Histogram::new(3)?,
        })
    }

    /// Records `micros`, taken `at` into a run of `length`.
    fn record(&mut self, at: Duration, length: Duration, micros: u64) {
        self.all.record(micros).ok();
        let tenth = length / 10;
        if at < tenth {
            self.first.record(micros).ok();
        } else if at >= length.saturating_sub(tenth) {
            self.last.record(micros).ok();
        }
    }
}

/// Records when each update is first seen in a final state. Keeps a low-water mark: every
/// update at or below it has been seen, so each poll reads only the recent window. Returns
/// how long each poll took (a slow poll delays what it sees, and takes from the server).
async fn poll_applied(
    reader: Reader,
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    sending: Arc<std::sync::atomic::AtomicBool>,
    mut low: i64,
) -> anyhow::Result<Histogram<u64>> {
    let mut done: HashSet<i64> = HashSet::new();
    let mut polls = Histogram::<u64>::new(3)?;
    while sending.load(std::sync::atomic::Ordering::Relaxed) {
        let asked = Instant::now();
        let rows = reader.settled_after(low).await?;
        let now = Instant::now();
        polls
            .record(now.duration_since(asked).as_micros() as u64)
            .ok();
        {
            let mut seen = seen.lock().unwrap();
            for (seq, id) in rows {
                if done.insert(seq) {
                    seen.insert(id, now);
                }
            }
        }
        while done.remove(&(low + 1)) {
            low += 1;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(polls)
}

/// A request sent this much after its time in the schedule counts as behind it.
const BEHIND: Duration = Duration::from_millis(10);

/// How far a connection's acknowledged requests went out after their time in the
/// schedule: the latency of a request runs from its actual send, so a run that falls behind
/// its schedule (every connection waiting for an answer) hides the wait before the send.
struct Behind {
    /// Requests sent over [`BEHIND`] late, and the latest of all.
    count: u64,
    most: Duration,
    /// Request -> 202 from each request's time in the schedule, in µs.
    from_schedule: Histogram<u64>,
}

impl Behind {
    fn new() -> Self {
        Self {
            count: 0,
            most: Duration::ZERO,
            from_schedule: Histogram::new(3).expect("histogram"),
        }
    }

    /// A request due at `scheduled`, sent at `sent` and acknowledged at `at`.
    fn record(&mut self, scheduled: Instant, sent: Instant, at: Instant) {
        let late = sent.saturating_duration_since(scheduled);
        self.count += u64::from(late > BEHIND);
        self.most = self.most.max(late);
        let took = at.saturating_duration_since(scheduled).as_micros() as u64;
        self.from_schedule.record(took).ok();
    }

    fn merge(&mut self, other: Behind) {
        self.count += other.count;
        self.most = self.most.max(other.most);
        self.from_schedule.add(&other.from_schedule).ok();
    }
}
