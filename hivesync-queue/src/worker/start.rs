//! When a delivery's record says `running`.
//!
//! A job's record counts its attempts, and every write a delivery makes is fenced to its attempt,
//! so that a worker whose job went to another worker cannot overwrite that worker's record. The
//! write that starts an attempt therefore fences everything after it; but only a status reader
//! needs to see it *before* the outcome. A job that finishes quickly folds its start into its
//! outcome: one write takes the record from `queued` (attempts `n`, checked) to the outcome
//! (attempts `n + 1`), as fenced as two writes would be: any other delivery that started
//! meanwhile moved the count, and the folded write is refused.
//!
//! A job still running after [`WorkerConfig::record_start_after`](super::WorkerConfig) gets its
//! start written then, and a handler's first progress report writes it at once, so a status
//! reader sees a running job as `running` within that delay.

use std::sync::Arc;

use hivesync_core::domain::{JobId, JobUpdate};
use hivesync_core::ports::Store;
use hivesync_core::{Error, ErrorKind, Result};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// Where a delivery's start stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not written yet.
    Pending,
    /// Written: the record counts `attempts`, and later writes are fenced to them.
    Started { attempts: u32 },
    /// The record refused it: the job finished, another delivery started it, or the record is
    /// gone. This delivery must not write anything else.
    Refused(ErrorKind),
    /// The outcome was written with the start folded in.
    Folded,
}

/// A delivery's start, written once: when it is due, at the first progress report, or folded
/// into the outcome, whichever comes first.
pub(crate) struct RecordStart {
    store: Arc<dyn Store>,
    job: JobId,
    /// The attempts the record counted when this delivery read it.
    before: u32,
    update: JobUpdate,
    phase: Arc<Mutex<Phase>>,
    /// Fires when the record refuses the start: the handler is asked to stop.
    refused: CancellationToken,
}

impl std::fmt::Debug for RecordStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordStart")
            .field("job", &self.job)
            .field("before", &self.before)
            .finish_non_exhaustive()
    }
}

impl RecordStart {
    /// The start of a delivery of `job`, whose record counted `before` attempts when read.
    pub(crate) fn new(store: Arc<dyn Store>, job: JobId, before: u32, update: JobUpdate) -> Self {
        let mut update = update.for_attempt(before);
        update.new_attempt = true;
        RecordStart {
            store,
            job,
            before,
            update,
            phase: Arc::new(Mutex::new(Phase::Pending)),
            refused: CancellationToken::new(),
        }
    }

    /// Writes the start unless it is written already; answers the attempts the record counts.
    /// An outage leaves it to be tried again; a refusal is final.
    pub(crate) async fn ensure(&self) -> Result<u32> {
        // Every progress report asks: once written, answer without a task.
        if let Ok(phase) = self.phase.try_lock()
            && let Phase::Started { attempts } = *phase
        {
            return Ok(attempts);
        }
        let (phase, store, job, update, refused) = (
            self.phase.clone(),
            self.store.clone(),
            self.job,
            self.update.clone(),
            self.refused.clone(),
        );
        // In a task of its own: a caller dropped mid-write must not leave a write that happened
        // unknown here, or the outcome would be fenced to the wrong attempt.
        let written = tokio::spawn(async move {
            let mut phase = phase.lock_owned().await;
            match *phase {
                Phase::Pending => match store.update_job(job, update).await {
                    Ok(record) => {
                        *phase = Phase::Started {
                            attempts: record.attempts,
                        };
                        Ok(record.attempts)
                    }
                    Err(err) if err.kind() == ErrorKind::Unavailable => Err(err),
                    Err(err) => {
                        *phase = Phase::Refused(err.kind());
                        refused.cancel();
                        Err(err)
                    }
                },
                Phase::Started { attempts } => Ok(attempts),
                Phase::Refused(kind) => Err(Error::new(
                    kind,
                    "the job's record refused this delivery's start",
                )),
                Phase::Folded => Err(Error::internal("the job's outcome is already written")),
            }
        });
        written.await.map_err(|err| {
            Error::internal("the write of a job's start did not finish").with_source(err)
        })?
    }

    /// Whether the start was written (or tried and refused) already.
    pub(crate) async fn settled(&self) -> bool {
        *self.phase.lock().await != Phase::Pending
    }

    /// Why the record refused the start, if it did (after any write of it under way).
    pub(crate) async fn refusal(&self) -> Option<ErrorKind> {
        match *self.phase.lock().await {
            Phase::Refused(kind) => Some(kind),
            _ => None,
        }
    }

    /// Fires once the record refused the start.
    pub(crate) fn refused(&self) -> &CancellationToken {
        &self.refused
    }

    /// `update` fenced to this delivery, for the outcome: to the attempts the start recorded, or,
    /// while the start is not written, carrying the start itself (a new attempt, fenced to the
    /// attempts read), after which the start is never written. After a refusal it is fenced the
    /// same way, and the record refuses it again.
    pub(crate) async fn fence(&self, mut update: JobUpdate) -> JobUpdate {
        let mut phase = self.phase.lock().await;
        match *phase {
            Phase::Started { attempts } => update.for_attempt(attempts),
            Phase::Refused(_) | Phase::Pending | Phase::Folded => {
                if *phase == Phase::Pending {
                    *phase = Phase::Folded;
                }
                update.new_attempt = true;
                update.for_attempt(self.before)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use hivesync_core::adapters::SqliteStore;
    use hivesync_core::domain::{JobState, NewJob};

    use super::*;

    async fn store_with_job() -> (tempfile::TempDir, Arc<dyn Store>, JobId) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
        let store = SqliteStore::connect_sqlite(&url).await.unwrap();
        store.migrate().await.unwrap();
        let job = store
            .create_job(NewJob {
                id: JobId::new(),
                kind: "ping".into(),
                queue: "system_events".into(),
                project_id: None,
                user_id: None,
                payload: serde_json::json!({}),
                dedup_key: None,
            })
            .await
            .unwrap()
            .id;
        (dir, Arc::new(store), job)
    }

    fn start_of(store: &Arc<dyn Store>, job: JobId, before: u32) -> RecordStart {
        RecordStart::new(
            store.clone(),
            job,
            before,
            JobUpdate::progress(JobState::Running, 0.0, "started"),
        )
    }

    #[tokio::test]
    async fn a_folded_outcome_starts_and_finishes_in_one_write() {
        let (_dir, store, job) = store_with_job().await;
        let start = start_of(&store, job, 0);
        let update = start.fence(JobUpdate::success(None)).await;
        let record = store.update_job(job, update).await.unwrap();
        assert_eq!(record.state, JobState::Success);
        assert_eq!(record.attempts, 1);
        assert!(record.started_at.is_some() && record.finished_at.is_some());
        // Folded: the start is never written after the outcome.
        assert!(start.ensure().await.is_err());
        assert_eq!(store.get_job(job).await.unwrap().unwrap().attempts, 1);
    }

    /// Two deliveries of one job that both read it before either started it: whichever writes
    /// second is refused, folded or not, so only one outcome is ever recorded.
    #[tokio::test]
    async fn a_delivery_overtaken_by_another_records_nothing() {
        let (_dir, store, job) = store_with_job().await;
        let stale = start_of(&store, job, 0);
        let current = start_of(&store, job, 0);
        assert_eq!(current.ensure().await.unwrap(), 1);

        let folded = stale.fence(JobUpdate::success(None)).await;
        let refused = store.update_job(job, folded).await.unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Conflict);

        // The stale one's own start is refused too, and says so.
        let stale = start_of(&store, job, 0);
        assert_eq!(
            stale.ensure().await.unwrap_err().kind(),
            ErrorKind::Conflict
        );
        assert!(stale.refused().is_cancelled());
        assert_eq!(stale.refusal().await, Some(ErrorKind::Conflict));

        let finished = current.fence(JobUpdate::success(None)).await;
        let record = store.update_job(job, finished).await.unwrap();
        assert_eq!((record.state, record.attempts), (JobState::Success, 1));
    }

    /// A start written while the outcome is decided: the outcome waits for it and is fenced to
    /// the attempt it recorded.
    #[tokio::test]
    async fn an_outcome_after_the_start_is_fenced_to_its_attempt() {
        let (_dir, store, job) = store_with_job().await;
        let start = start_of(&store, job, 0);
        let writing = tokio::spawn({
            let start = Arc::new(start);
            let again = start.clone();
            async move { (again.ensure().await.unwrap(), start) }
        });
        let (attempts, start) = writing.await.unwrap();
        assert_eq!(attempts, 1);
        let update = start.fence(JobUpdate::success(None)).await;
        assert!(!update.new_attempt);
        assert_eq!(update.expected_attempts, Some(1));
        let record = store.update_job(job, update).await.unwrap();
        assert_eq!((record.state, record.attempts), (JobState::Success, 1));
    }
}
