//! Sending collected [`Writes`] through the backend's own multi-row statements
//! (`sqlite::write`, `postgres::write`), then the writes that are the same on both.

use super::*;
use crate::store::per_backend;

impl Tx {
    /// Sends collected writes, a few statements in all.
    pub async fn write(&mut self, w: &Writes) -> Result<()> {
        per_backend!(self, write(w))?;
        self.raised.effects |= w
            .effects
            .iter()
            .any(|e| e.kind == crate::store::effects::KIND);
        if !w.wake.is_empty()
            && let Some(at) = w.wake_at
        {
            self.wake_parked_many(&w.wake, at).await?;
        }
        if let Some(at) = w.wake_at {
            self.wake_condition_timers(&w.wake_conditions, at).await?;
        }
        if !w.follow_ups.is_empty() {
            self.insert_updates(&w.follow_ups).await?;
        }
        Ok(())
    }
}
