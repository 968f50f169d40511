//! A read-through cache of [`Store::get_member_job`] for build-status polling, kept correct by the
//! database's change feed.
//!
//! Phones poll a build's status every second or so, and many may poll one build; each poll is a
//! token check and one read. The cache answers repeated polls from memory and drops an entry as
//! soon as the database reports a change to its job or to any membership:
//!
//! - It serves nothing unless a change feed is live ([`MemberJobCache::set_live`]): on PostgreSQL,
//!   `LISTEN` on the notifications that triggers send for every job update and membership change
//!   (migration `0004`), proven to deliver by a ping every 5 s. Without one (SQLite), every
//!   call reads the `Store`.
//! - A read that overlapped a change is not cached: each invalidation bumps an epoch, and a read
//!   stores its result only if the epoch did not move while it ran. So an entry can be stale only
//!   for the time a notification takes to arrive (milliseconds).
//! - When the feed is lost (the listening connection dropped, or a ping did not come back within
//!   5 s), everything is dropped and the cache stays off until the feed is back.
//! - Entries also expire after `max_age`, and the cache empties itself at `max_entries`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::{Job, JobId, UserId};
use crate::error::Result;
use crate::ports::Store;

/// What the change feed reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A job was updated or deleted.
    Job(JobId),
    /// A membership changed or ended (or a project was deleted).
    Members,
    /// Notifications may have been missed: forget everything.
    Lost,
}

struct Entry {
    job: Arc<Job>,
    /// The users seen to be members of the job's project.
    members: Vec<UserId>,
    cached_at: Instant,
}

/// See the module documentation.
pub struct MemberJobCache {
    live: AtomicBool,
    /// How many times the cache was switched on: each time a feed (re)connected and proved itself.
    switched_on: AtomicU64,
    epoch: AtomicU64,
    entries: Mutex<HashMap<JobId, Entry>>,
    max_age: Duration,
    max_entries: usize,
    /// The epoch after every change and every switch on or off, for whoever waits on the cache.
    announced: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for MemberJobCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberJobCache")
            .field("live", &self.is_live())
            .field("epoch", &self.epoch.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl MemberJobCache {
    pub fn new(max_age: Duration, max_entries: usize) -> Self {
        MemberJobCache {
            live: AtomicBool::new(false),
            switched_on: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            entries: Mutex::new(HashMap::new()),
            max_age,
            max_entries,
            announced: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Wakes on every change applied and every switch on or off (see [`Self::apply`]).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.announced.subscribe()
    }

    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// How many times the cache was switched on (a feed connected and proved itself).
    pub fn times_switched_on(&self) -> u64 {
        self.switched_on.load(Ordering::Acquire)
    }

    /// Turns serving from memory on (a change feed is listening) or off (it is not).
    pub fn set_live(&self, live: bool) {
        self.apply(Change::Lost);
        if live {
            self.switched_on.fetch_add(1, Ordering::AcqRel);
        }
        self.live.store(live, Ordering::Release);
        self.announced
            .send_replace(self.epoch.load(Ordering::Acquire));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a change from the feed.
    pub fn apply(&self, change: Change) {
        let epoch = {
            let mut entries = self.lock();
            let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
            match change {
                Change::Job(id) => {
                    entries.remove(&id);
                }
                Change::Members | Change::Lost => entries.clear(),
            }
            epoch
        };
        self.announced.send_replace(epoch);
    }

    /// [`Store::get_member_job`], from memory when it can be.
    pub async fn get(
        &self,
        store: &dyn Store,
        id: JobId,
        user: UserId,
    ) -> Result<Option<Arc<Job>>> {
        self.read_through(id, user, store.get_member_job(id, user))
            .await
    }

    async fn read_through(
        &self,
        id: JobId,
        user: UserId,
        read: impl std::future::Future<Output = Result<Option<Job>>>,
    ) -> Result<Option<Arc<Job>>> {
        if !self.is_live() {
            return Ok(read.await?.map(Arc::new));
        }
        if let Some(entry) = self.lock().get(&id)
            && entry.members.contains(&user)
            && entry.cached_at.elapsed() < self.max_age
        {
            return Ok(Some(entry.job.clone()));
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let Some(job) = read.await?.map(Arc::new) else {
            return Ok(None);
        };
        let mut entries = self.lock();
        // Only a read that no change overlapped may be kept.
        if self.is_live() && self.epoch.load(Ordering::Acquire) == epoch {
            if entries.len() >= self.max_entries {
                entries.clear();
            }
            let fresh = || Entry {
                job: job.clone(),
                members: Vec::new(),
                cached_at: Instant::now(),
            };
            let entry = entries.entry(id).or_insert_with(fresh);
            if entry.cached_at.elapsed() >= self.max_age {
                *entry = fresh();
            }
            if !entry.members.contains(&user) && entry.members.len() < 64 {
                entry.members.push(user);
            }
        }
        Ok(Some(job))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::SqliteStore;
    use crate::domain::{Email, JobState, JobUpdate, NewJob, NewProject, NewUser};

    struct Fixture {
        _dir: tempfile::TempDir,
        store: SqliteStore,
        member: UserId,
        stranger: UserId,
        job: JobId,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("cache.db").display()
        );
        let store = SqliteStore::connect_sqlite(&url).await.unwrap();
        store.migrate().await.unwrap();
        let user = |name: &str| NewUser {
            email: Email::parse(&format!("{name}@example.com")).unwrap(),
            display_name: name.to_owned(),
            password_hash: "x".to_owned(),
        };
        let member = store.create_user(user("member")).await.unwrap().id;
        let stranger = store.create_user(user("stranger")).await.unwrap().id;
        let project = store
            .create_project(NewProject {
                name: "p".into(),
                description: String::new(),
                owner: member,
            })
            .await
            .unwrap()
            .id;
        let job = store
            .create_job(NewJob {
                id: JobId::new(),
                kind: "preview_build".into(),
                queue: "preview_build".into(),
                project_id: Some(project),
                user_id: Some(member),
                payload: serde_json::json!({}),
                dedup_key: None,
            })
            .await
            .unwrap()
            .id;
        Fixture {
            _dir: dir,
            store,
            member,
            stranger,
            job,
        }
    }

    impl Fixture {
        /// Changes the job in the database without telling the cache.
        async fn move_to(&self, state: JobState) {
            self.store
                .update_job(self.job, JobUpdate::progress(state, 0.5, "x"))
                .await
                .unwrap();
        }

        async fn state_seen(&self, cache: &MemberJobCache) -> JobState {
            cache
                .get(&self.store, self.job, self.member)
                .await
                .unwrap()
                .unwrap()
                .state
        }
    }

    #[tokio::test]
    async fn serves_from_memory_only_while_live_and_until_a_change() {
        let f = fixture().await;
        let cache = MemberJobCache::new(Duration::from_secs(60), 100);

        // Not live: every call reads the store.
        assert_eq!(f.state_seen(&cache).await, JobState::Queued);
        f.move_to(JobState::Building).await;
        assert_eq!(f.state_seen(&cache).await, JobState::Building);

        cache.set_live(true);
        assert_eq!(f.state_seen(&cache).await, JobState::Building);
        f.move_to(JobState::Bundling).await;
        assert_eq!(
            f.state_seen(&cache).await,
            JobState::Building,
            "served from memory: the feed has not reported the change yet"
        );
        cache.apply(Change::Job(f.job));
        assert_eq!(f.state_seen(&cache).await, JobState::Bundling);

        // A non-member is never served from a member's entry.
        assert!(
            cache
                .get(&f.store, f.job, f.stranger)
                .await
                .unwrap()
                .is_none()
        );

        // A membership change drops everything.
        f.move_to(JobState::Uploading).await;
        cache.apply(Change::Members);
        assert_eq!(f.state_seen(&cache).await, JobState::Uploading);

        // Losing the feed turns the cache off.
        cache.set_live(false);
        f.move_to(JobState::Building).await;
        assert_eq!(f.state_seen(&cache).await, JobState::Building);
    }

    #[tokio::test]
    async fn a_read_that_overlapped_a_change_is_not_kept() {
        let f = fixture().await;
        let cache = MemberJobCache::new(Duration::from_secs(60), 100);
        cache.set_live(true);
        // The job changes while a read is under way; that read's answer must not be kept.
        let read = async {
            let seen = f.store.get_member_job(f.job, f.member).await;
            f.move_to(JobState::Bundling).await;
            cache.apply(Change::Job(f.job));
            seen
        };
        let first = cache.read_through(f.job, f.member, read).await.unwrap();
        assert_eq!(first.unwrap().state, JobState::Queued);
        assert_eq!(f.state_seen(&cache).await, JobState::Bundling);
    }

    #[tokio::test]
    async fn entries_expire_and_the_cache_is_bounded() {
        let f = fixture().await;
        let expiring = MemberJobCache::new(Duration::ZERO, 100);
        expiring.set_live(true);
        assert_eq!(f.state_seen(&expiring).await, JobState::Queued);
        f.move_to(JobState::Building).await;
        assert_eq!(f.state_seen(&expiring).await, JobState::Building);

        let tiny = MemberJobCache::new(Duration::from_secs(60), 1);
        tiny.set_live(true);
        assert_eq!(f.state_seen(&tiny).await, JobState::Building);
        assert_eq!(tiny.lock().len(), 1);
        let other = JobId::new();
        assert!(tiny.get(&f.store, other, f.member).await.unwrap().is_none());
        assert_eq!(tiny.lock().len(), 1, "misses are not cached");
    }
}
