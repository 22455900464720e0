//! The server's group commits, read from its `/metrics` before and after a phase.

use super::phase::Phase;

/// The server's group commits so far (`orderflow_inbox_group_commit_size` and `_seconds`).
#[derive(Clone, Copy)]
pub(super) struct Commits {
    /// Updates stored.
    updates: f64,
    pub(super) commits: f64,
    /// Seconds the writer spent storing groups (from taking a group to its commit's end).
    seconds: f64,
    /// Commits that took over 10 ms.
    pub(super) slow: f64,
}

impl Commits {
    /// One scrape (each refreshes the server's inbox gauges, a few reads of its store).
    pub(super) async fn read(base: &str) -> Self {
        let text = crate::server::metrics(base).await.unwrap_or_default();
        let value = |name| crate::server::series(&text, name).unwrap_or(0.0);
        Self {
            updates: value("orderflow_inbox_group_commit_size_sum"),
            commits: value("orderflow_inbox_group_commit_size_count"),
            seconds: value("orderflow_inbox_group_commit_seconds_sum"),
            slow: value("orderflow_inbox_group_commit_seconds_count")
                - value("orderflow_inbox_group_commit_seconds_bucket{le=\"0.01\"}"),
        }
    }

    /// What happened since `before`.
    pub(super) fn since(self, before: Self) -> Self {
        Self {
            updates: self.updates - before.updates,
            commits: self.commits - before.commits,
            seconds: self.seconds - before.seconds,
            slow: self.slow - before.slow,
        }
    }

    pub(super) fn per_commit(self) -> f64 {
        self.updates / self.commits.max(1.0)
    }

    /// Milliseconds per commit.
    pub(super) fn ms_per_commit(self) -> f64 {
        self.seconds * 1000.0 / self.commits.max(1.0)
    }

    /// The share of `phase` the writer spent storing groups: near 1, the one writer's
    /// commits are the bound; well below, the requests do not reach it fast enough.
    pub(super) fn busy(self, phase: &Phase) -> f64 {
        self.seconds / phase.elapsed.as_secs_f64()
    }
}
