//! The `Store` conformance suite.

use std::sync::Arc;

use crate::domain::{
    Email, JobFilter, JobId, JobState, JobUpdate, NewJob, NewNotification, NewProject, NewUser,
    Page, ProjectId, ProjectPatch, RefUpdate, RepoObject, RepoRef, Role, User, UserId, UserPatch,
};
use crate::error::ErrorKind;
use crate::ports::Store;

/// Runs every point of [`Store`]'s `# Behavior` list against `store`, which must be migrated and
/// may hold data from other runs (every record made here is new).
pub async fn run(store: Arc<dyn Store>) {
    migrate_is_idempotent(&*store).await;
    users(&*store).await;
    projects(&*store).await;
    members(&*store).await;
    last_owner_is_kept_under_concurrency(store.clone()).await;
    jobs(&*store).await;
    notifications(&*store).await;
    repo_refs(store.clone()).await;
}

async fn new_user(store: &dyn Store, name: &str) -> User {
    let email = Email::parse(&format!("{name}-{}@example.org", super::unique_suffix())).unwrap();
    store
        .create_user(NewUser {
            email,
            display_name: name.to_owned(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
        })
        .await
        .expect("create_user")
}

async fn new_project(store: &dyn Store, owner: UserId, name: &str) -> ProjectId {
    store
        .create_project(NewProject {
            name: name.to_owned(),
            description: String::new(),
            owner,
        })
        .await
        .expect("create_project")
        .id
}

async fn migrate_is_idempotent(store: &dyn Store) {
    store.migrate().await.expect("migrate (again) must succeed");
    store.ping().await.expect("ping");
}

async fn users(store: &dyn Store) {
    let ada = new_user(store, "ada").await;
    assert_eq!(ada.display_name, "ada");
    assert_eq!(ada.preferences, serde_json::json!({}));
    assert!(!ada.is_admin);

    assert_eq!(
        store.get_user(ada.id).await.unwrap().as_ref(),
        Some(&ada),
        "get_user"
    );
    let upper = Email::parse(&ada.email.as_str().to_uppercase()).unwrap();
    assert_eq!(
        store.get_user_by_email(&upper).await.unwrap().map(|u| u.id),
        Some(ada.id),
        "lookup by e-mail ignores case"
    );
    assert_eq!(
        store.get_user(UserId::new()).await.unwrap(),
        None,
        "unknown id gives None"
    );

    let duplicate = store
        .create_user(NewUser {
            email: upper,
            display_name: "other".to_owned(),
            password_hash: "x".to_owned(),
        })
        .await
        .expect_err("a taken e-mail must be refused");
    assert_eq!(duplicate.kind(), ErrorKind::Conflict);

    let credentials = store
        .get_credentials(&ada.email)
        .await
        .unwrap()
        .expect("credentials");
    assert_eq!(credentials.user_id, ada.id);
    assert!(credentials.password_hash.starts_with("$argon2id$"));
    let nobody = Email::parse(&format!("nobody-{}@example.org", super::unique_suffix())).unwrap();
    assert!(store.get_credentials(&nobody).await.unwrap().is_none());

    let renamed = store
        .update_user(
            ada.id,
            UserPatch {
                display_name: Some("Ada L.".to_owned()),
                preferences: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(renamed.display_name, "Ada L.");
    assert_eq!(
        renamed.preferences,
        serde_json::json!({}),
        "an absent field is left alone"
    );
    assert!(renamed.updated_at >= ada.updated_at);
    let prefs = serde_json::json!({"theme": "dark", "editor": {"tabs": 4}});
    let with_prefs = store
        .update_user(
            ada.id,
            UserPatch {
                display_name: None,
                preferences: Some(prefs.clone()),
            },
        )
        .await
        .unwrap();
    assert_eq!(with_prefs.preferences, prefs);
    assert_eq!(with_prefs.display_name, "Ada L.");
    let err = store
        .update_user(UserId::new(), UserPatch::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "update of an unknown user");

    store.set_admin(ada.id, true).await.unwrap();
    assert!(store.get_user(ada.id).await.unwrap().unwrap().is_admin);
    assert_eq!(
        store
            .set_admin(UserId::new(), true)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}

async fn projects(store: &dyn Store) {
    let owner = new_user(store, "owner").await;
    let project = store
        .create_project(NewProject {
            name: "Hive".to_owned(),
            description: "the first".to_owned(),
            owner: owner.id,
        })
        .await
        .unwrap();
    assert_eq!(project.created_by, owner.id);
    assert_eq!(
        store.get_role(project.id, owner.id).await.unwrap(),
        Some(Role::Owner),
        "creator owns"
    );
    assert_eq!(
        store.get_project(project.id).await.unwrap().as_ref(),
        Some(&project)
    );
    assert_eq!(store.get_project(ProjectId::new()).await.unwrap(), None);

    let err = store
        .create_project(NewProject {
            name: "x".to_owned(),
            description: String::new(),
            owner: UserId::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::NotFound,
        "a project needs an existing owner"
    );

    // Paging: ordered by id, continuing after the last one seen.
    let mut ids = vec![project.id];
    for i in 0..4 {
        ids.push(new_project(store, owner.id, &format!("p{i}")).await);
    }
    let first = store
        .list_projects_for_user(owner.id, Page::first(3))
        .await
        .unwrap();
    assert_eq!(
        first.iter().map(|p| p.project.id).collect::<Vec<_>>(),
        ids[..3]
    );
    assert!(first.iter().all(|p| p.role == Role::Owner));
    let rest = store
        .list_projects_for_user(owner.id, Page::after(3, Some(ids[2])))
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|p| p.project.id).collect::<Vec<_>>(),
        ids[3..]
    );
    let stranger = new_user(store, "stranger").await;
    assert!(
        store
            .list_projects_for_user(stranger.id, Page::first(10))
            .await
            .unwrap()
            .is_empty()
    );

    let updated = store
        .update_project(
            project.id,
            ProjectPatch {
                name: Some("Hive 2".to_owned()),
                description: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (updated.name.as_str(), updated.description.as_str()),
        ("Hive 2", "the first")
    );
    assert_eq!(
        store
            .update_project(ProjectId::new(), ProjectPatch::default())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );

    // Deleting removes the project and its memberships but keeps its jobs.
    let job = store
        .create_job(NewJob {
            id: JobId::new(),
            kind: "test".to_owned(),
            queue: "system_events".to_owned(),
            project_id: Some(project.id),
            user_id: Some(owner.id),
            payload: serde_json::json!({}),
            dedup_key: None,
        })
        .await
        .unwrap();
    store.delete_project(project.id).await.unwrap();
    assert_eq!(store.get_project(project.id).await.unwrap(), None);
    assert_eq!(store.get_role(project.id, owner.id).await.unwrap(), None);
    assert!(store.list_members(project.id).await.unwrap().is_empty());
    let kept = store
        .get_job(job.id)
        .await
        .unwrap()
        .expect("jobs outlive their project");
    assert_eq!(kept.project_id, None);
    assert_eq!(
        store.delete_project(project.id).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

async fn members(store: &dyn Store) {
    let owner = new_user(store, "owner").await;
    let editor = new_user(store, "editor").await;
    let viewer = new_user(store, "viewer").await;
    let project = new_project(store, owner.id, "team").await;

    let added = store
        .add_member(project, editor.id, Role::Editor)
        .await
        .unwrap();
    assert_eq!((added.user_id, added.role), (editor.id, Role::Editor));
    assert_eq!(added.email, editor.email);
    store
        .add_member(project, viewer.id, Role::Viewer)
        .await
        .unwrap();

    let err = store
        .add_member(project, editor.id, Role::Viewer)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "adding a member twice");
    assert_eq!(
        store.get_role(project, editor.id).await.unwrap(),
        Some(Role::Editor),
        "unchanged"
    );
    let err = store
        .add_member(project, UserId::new(), Role::Viewer)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "adding an unknown user");
    let err = store
        .add_member(ProjectId::new(), editor.id, Role::Viewer)
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::NotFound,
        "adding to an unknown project"
    );

    let listed = store.list_members(project).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|m| (m.user_id, m.role))
            .collect::<Vec<_>>(),
        [
            (owner.id, Role::Owner),
            (editor.id, Role::Editor),
            (viewer.id, Role::Viewer)
        ],
        "members in the order they joined"
    );

    // The last owner can be neither demoted nor removed, and a refused change changes nothing.
    let err = store
        .set_member_role(project, owner.id, Role::Editor)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "demoting the last owner");
    let err = store.remove_member(project, owner.id).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "removing the last owner");
    assert_eq!(
        store.get_role(project, owner.id).await.unwrap(),
        Some(Role::Owner)
    );

    // With a second owner, the first may step down.
    let promoted = store
        .set_member_role(project, editor.id, Role::Owner)
        .await
        .unwrap();
    assert_eq!(promoted.role, Role::Owner);
    store
        .set_member_role(project, owner.id, Role::Viewer)
        .await
        .unwrap();
    assert_eq!(
        store.get_role(project, owner.id).await.unwrap(),
        Some(Role::Viewer)
    );
    store.remove_member(project, owner.id).await.unwrap();
    assert_eq!(store.get_role(project, owner.id).await.unwrap(), None);

    assert_eq!(
        store
            .remove_member(project, owner.id)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound,
        "removing a non-member"
    );
    assert_eq!(
        store
            .set_member_role(project, owner.id, Role::Editor)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound,
        "changing a non-member's role"
    );
    // Setting the role a member already has is a no-op, not an error.
    assert_eq!(
        store
            .set_member_role(project, viewer.id, Role::Viewer)
            .await
            .unwrap()
            .role,
        Role::Viewer
    );
}

async fn last_owner_is_kept_under_concurrency(store: Arc<dyn Store>) {
    for round in 0..5 {
        let a = new_user(&*store, "a").await;
        let b = new_user(&*store, "b").await;
        let project = new_project(&*store, a.id, &format!("race-{round}")).await;
        store.add_member(project, b.id, Role::Owner).await.unwrap();
        // Both owners try to step down at once: exactly one may succeed.
        let (first, second) = tokio::join!(
            tokio::spawn({
                let store = store.clone();
                async move {
                    store
                        .set_member_role(project, a.id, Role::Editor)
                        .await
                        .map(|_| ())
                }
            }),
            tokio::spawn({
                let store = store.clone();
                async move { store.remove_member(project, b.id).await }
            }),
        );
        let outcomes = [first.unwrap(), second.unwrap()];
        let succeeded = outcomes.iter().filter(|r| r.is_ok()).count();
        assert_eq!(
            succeeded, 1,
            "round {round}: exactly one change may win: {outcomes:?}"
        );
        let refused = outcomes.iter().find_map(|r| r.as_ref().err()).unwrap();
        assert_eq!(refused.kind(), ErrorKind::Conflict);
        let owners = store
            .list_members(project)
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.role == Role::Owner)
            .count();
        assert_eq!(owners, 1, "round {round}: one owner must remain");
    }
}

async fn jobs(store: &dyn Store) {
    let user = new_user(store, "jobs").await;
    let project = new_project(store, user.id, "jobs").await;
    let queue = format!("queue-{}", super::unique_suffix());
    let new_job = |kind: &str| NewJob {
        id: JobId::new(),
        kind: kind.to_owned(),
        queue: queue.clone(),
        project_id: Some(project),
        user_id: Some(user.id),
        payload: serde_json::json!({"platform": "ios", "n": 1}),
        dedup_key: None,
    };

    let job = store.create_job(new_job("preview_build")).await.unwrap();
    assert_eq!(job.state, JobState::Queued);
    // Members see their projects' jobs in one read; nobody else does.
    assert_eq!(
        store.get_member_job(job.id, user.id).await.unwrap(),
        Some(job.clone())
    );
    let stranger = new_user(store, "jobs-stranger").await;
    assert_eq!(
        store.get_member_job(job.id, stranger.id).await.unwrap(),
        None
    );
    assert_eq!(
        store.get_member_job(JobId::new(), user.id).await.unwrap(),
        None
    );
    let unowned = store
        .create_job(NewJob {
            project_id: None,
            queue: format!("{queue}-system"),
            ..new_job("system")
        })
        .await
        .unwrap();
    assert_eq!(
        store.get_member_job(unowned.id, user.id).await.unwrap(),
        None
    );
    assert_eq!((job.progress, job.attempts), (0.0, 0));
    assert_eq!(job.payload["platform"], "ios");
    assert!(job.started_at.is_none() && job.finished_at.is_none());
    assert_eq!(store.get_job(job.id).await.unwrap().as_ref(), Some(&job));
    assert_eq!(store.get_job(JobId::new()).await.unwrap(), None);

    let mut building = JobUpdate::progress(JobState::Building, 0.1, "checkout");
    building.new_attempt = true;
    let running = store.update_job(job.id, building).await.unwrap();
    assert_eq!(
        (running.state, running.progress, running.attempts),
        (JobState::Building, 0.1, 1)
    );
    assert_eq!(running.phase.as_deref(), Some("checkout"));
    let started_at = running.started_at.expect("leaving queued sets started_at");
    let bundling = store
        .update_job(
            job.id,
            JobUpdate::progress(JobState::Bundling, 0.5, "bundle"),
        )
        .await
        .unwrap();
    assert_eq!(
        bundling.started_at,
        Some(started_at),
        "started_at is set once"
    );
    assert_eq!(bundling.attempts, 1);

    let err = store
        .update_job(job.id, JobUpdate::progress(JobState::Bundling, 1.5, "x"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Validation, "progress above 1");

    // An update fenced to an older attempt is refused and changes nothing.
    let stale = JobUpdate::progress(JobState::Uploading, 0.8, "upload").for_attempt(0);
    assert_eq!(
        store.update_job(job.id, stale).await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    assert_eq!(
        store.get_job(job.id).await.unwrap().unwrap().state,
        JobState::Bundling
    );
    let current = JobUpdate::progress(JobState::Uploading, 0.8, "upload").for_attempt(1);
    assert_eq!(
        store.update_job(job.id, current).await.unwrap().state,
        JobState::Uploading
    );

    let done = store
        .update_job(
            job.id,
            JobUpdate::success(Some(serde_json::json!({"key": "previews/x"}))),
        )
        .await
        .unwrap();
    assert_eq!((done.state, done.progress), (JobState::Success, 1.0));
    assert!(done.finished_at.is_some());
    assert_eq!(done.result, Some(serde_json::json!({"key": "previews/x"})));
    let err = store
        .update_job(job.id, JobUpdate::failed("PREVIEW_BUILD_FAILED", "late"))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Conflict,
        "a finished job stays finished"
    );
    assert_eq!(
        store.get_job(job.id).await.unwrap().unwrap().state,
        JobState::Success
    );
    let err = store
        .update_job(JobId::new(), JobUpdate::success(None))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);

    let failed = store.create_job(new_job("ai_summary")).await.unwrap();
    let failed = store
        .update_job(
            failed.id,
            JobUpdate::failed("AI_PROVIDER_UNAVAILABLE", "all providers down"),
        )
        .await
        .unwrap();
    assert_eq!(
        failed.error_code.as_deref(),
        Some("AI_PROVIDER_UNAVAILABLE")
    );
    let queued = store.create_job(new_job("preview_build")).await.unwrap();

    // A failed job can be reset for another run; an unfinished or successful one cannot.
    assert_eq!(
        store.reset_job(queued.id).await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    assert_eq!(
        store.reset_job(job.id).await.unwrap_err().kind(),
        ErrorKind::Conflict,
        "success stays"
    );
    assert_eq!(
        store.reset_job(JobId::new()).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let reset = store.reset_job(failed.id).await.unwrap();
    assert_eq!(
        (reset.state, reset.progress, reset.error_code.clone()),
        (JobState::Queued, 0.0, None)
    );
    assert!(reset.finished_at.is_none());
    let failed = store
        .update_job(
            failed.id,
            JobUpdate::failed("AI_PROVIDER_UNAVAILABLE", "all providers down"),
        )
        .await
        .unwrap();

    // Newest first, filtered, paged.
    let all = JobFilter {
        queue: Some(queue.clone()),
        ..JobFilter::default()
    };
    let listed = store.list_jobs(&all, Page::first(10)).await.unwrap();
    assert_eq!(
        listed.iter().map(|j| j.id).collect::<Vec<_>>(),
        [queued.id, failed.id, job.id]
    );
    let only_failed = JobFilter {
        state: Some(JobState::Failed),
        ..all.clone()
    };
    let listed = store
        .list_jobs(&only_failed, Page::first(10))
        .await
        .unwrap();
    assert_eq!(listed.iter().map(|j| j.id).collect::<Vec<_>>(), [failed.id]);
    let previews = JobFilter {
        kind: Some("preview_build".to_owned()),
        project_id: Some(project),
        ..all.clone()
    };
    let listed = store.list_jobs(&previews, Page::first(10)).await.unwrap();
    assert_eq!(
        listed.iter().map(|j| j.id).collect::<Vec<_>>(),
        [queued.id, job.id]
    );
    let second_page = store
        .list_jobs(&all, Page::after(10, Some(failed.id)))
        .await
        .unwrap();
    assert_eq!(
        second_page.iter().map(|j| j.id).collect::<Vec<_>>(),
        [job.id]
    );

    // A dedup key holds while its job is unfinished; afterwards the finished job is still found by
    // its key, and a new job may take the key.
    // Keys unique to this run: a PostgreSQL test database keeps earlier runs' jobs.
    let (key_a, key_b) = (format!("{queue}-a"), format!("{queue}-b"));
    let keyed = |key: &str| NewJob {
        dedup_key: Some(key.to_owned()),
        ..new_job("preview_build")
    };
    let first = store.create_job(keyed(&key_a)).await.unwrap();
    assert_eq!(store.create_job(keyed(&key_a)).await.unwrap().id, first.id);
    let other = store.create_job(keyed(&key_b)).await.unwrap();
    assert_ne!(other.id, first.id);
    let done_a = JobFilter {
        dedup_key: Some(key_a.clone()),
        state: Some(JobState::Success),
        ..JobFilter::default()
    };
    assert!(
        store
            .list_jobs(&done_a, Page::first(1))
            .await
            .unwrap()
            .is_empty()
    );
    store
        .update_job(first.id, JobUpdate::success(None))
        .await
        .unwrap();
    let second = store.create_job(keyed(&key_a)).await.unwrap();
    assert_ne!(second.id, first.id, "a finished job frees its key");
    let found = store.list_jobs(&done_a, Page::first(1)).await.unwrap();
    assert_eq!(found.iter().map(|j| j.id).collect::<Vec<_>>(), [first.id]);
    let any_a = JobFilter {
        dedup_key: Some(key_a.clone()),
        ..JobFilter::default()
    };
    let found = store.list_jobs(&any_a, Page::first(10)).await.unwrap();
    assert_eq!(
        found.iter().map(|j| j.id).collect::<Vec<_>>(),
        [second.id, first.id]
    );
}

async fn notifications(store: &dyn Store) {
    let ada = new_user(store, "ada").await;
    let bob = new_user(store, "bob").await;
    let mut made = Vec::new();
    for i in 0..3 {
        let n = store
            .create_notification(NewNotification {
                user_id: ada.id,
                kind: "preview_ready".to_owned(),
                title: format!("Preview {i} ready"),
                body: "tap to open".to_owned(),
                data: serde_json::json!({"i": i}),
            })
            .await
            .unwrap();
        assert!(n.read_at.is_none());
        made.push(n.id);
    }
    let listed = store
        .list_notifications(ada.id, false, Page::first(10))
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|n| n.id).collect::<Vec<_>>(),
        made.iter().rev().copied().collect::<Vec<_>>(),
        "newest first"
    );
    assert_eq!(listed[0].data, serde_json::json!({"i": 2}));

    // Bob cannot mark Ada's notifications.
    assert_eq!(
        store.mark_notifications_read(bob.id, &made).await.unwrap(),
        0
    );
    assert_eq!(
        store
            .mark_notifications_read(ada.id, &made[..2])
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .mark_notifications_read(ada.id, &made[..2])
            .await
            .unwrap(),
        0,
        "already read"
    );
    let unread = store
        .list_notifications(ada.id, true, Page::first(10))
        .await
        .unwrap();
    assert_eq!(unread.iter().map(|n| n.id).collect::<Vec<_>>(), [made[2]]);
    let page = store
        .list_notifications(ada.id, false, Page::after(10, Some(made[2])))
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|n| n.id).collect::<Vec<_>>(),
        [made[1], made[0]]
    );
    assert!(page.iter().all(|n| n.read_at.is_some()));
    assert!(
        store
            .list_notifications(bob.id, false, Page::first(10))
            .await
            .unwrap()
            .is_empty()
    );

    let err = store
        .create_notification(NewNotification {
            user_id: UserId::new(),
            kind: "x".to_owned(),
            title: "x".to_owned(),
            body: "x".to_owned(),
            data: serde_json::json!({}),
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::NotFound,
        "a notification for an unknown user"
    );
}

async fn repo_refs(store: Arc<dyn Store>) {
    const MAIN: &str = "refs/heads/main";
    let (a, b, c) = ("a".repeat(40), "b".repeat(40), "c".repeat(40));
    let owner = new_user(&*store, "refs").await;
    let project = new_project(&*store, owner.id, "refs").await;
    assert_eq!(store.list_repo_refs(project).await.unwrap(), vec![]);
    assert_eq!(store.get_repo_ref(project, MAIN).await.unwrap(), None);

    // Created only where absent.
    let created = store.swap_repo_ref(project, MAIN, None, &a).await.unwrap();
    assert_eq!(created, RefUpdate::Updated);
    assert_eq!(
        store.swap_repo_ref(project, MAIN, None, &b).await.unwrap(),
        RefUpdate::Moved {
            current: Some(a.clone())
        }
    );
    // Moved only from where it is.
    assert_eq!(
        store
            .swap_repo_ref(project, MAIN, Some(&b), &c)
            .await
            .unwrap(),
        RefUpdate::Moved {
            current: Some(a.clone())
        }
    );
    assert_eq!(
        store
            .swap_repo_ref(project, "refs/heads/none", Some(&a), &c)
            .await
            .unwrap(),
        RefUpdate::Moved { current: None }
    );
    assert_eq!(
        store
            .swap_repo_ref(project, MAIN, Some(&a), &b)
            .await
            .unwrap(),
        RefUpdate::Updated
    );
    assert_eq!(
        store.get_repo_ref(project, MAIN).await.unwrap(),
        Some(b.clone())
    );

    // Racing swaps from one value: exactly one wins, the others see the winner.
    let racers: Vec<String> = (0..8).map(|i| format!("{i:0>40}")).collect();
    let swaps = racers.iter().map(|target| {
        let store = store.clone();
        let (b, target) = (b.clone(), target.clone());
        tokio::spawn(async move {
            let update = store
                .swap_repo_ref(project, MAIN, Some(&b), &target)
                .await
                .unwrap();
            (target, update)
        })
    });
    let results: Vec<_> = futures::future::join_all(swaps)
        .await
        .into_iter()
        .map(|joined| joined.unwrap())
        .collect();
    let winners: Vec<&String> = results
        .iter()
        .filter(|(_, update)| *update == RefUpdate::Updated)
        .map(|(target, _)| target)
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    let winner = winners[0].clone();
    for (target, update) in &results {
        if *target != winner {
            assert_eq!(
                *update,
                RefUpdate::Moved {
                    current: Some(winner.clone())
                }
            );
        }
    }

    store
        .swap_repo_ref(project, "refs/heads/dev", None, &c)
        .await
        .unwrap();
    assert_eq!(
        store.list_repo_refs(project).await.unwrap(),
        vec![
            RepoRef {
                name: "refs/heads/dev".to_owned(),
                target: c.clone()
            },
            RepoRef {
                name: MAIN.to_owned(),
                target: winner
            },
        ]
    );

    // Objects: stored once, read back by any set of ids, more than one statement's worth.
    let objects: Vec<RepoObject> = (0..450)
        .map(|i| RepoObject {
            id: format!("{i:0>40x}"),
            data: format!("object {i}").into_bytes(),
            links: Vec::new(),
        })
        .collect();
    store.put_repo_objects(project, &objects).await.unwrap();
    let again = RepoObject {
        id: objects[0].id.clone(),
        data: b"other bytes".to_vec(),
        links: Vec::new(),
    };
    store.put_repo_objects(project, &[again]).await.unwrap();
    let mut asked: Vec<String> = objects.iter().map(|o| o.id.clone()).collect();
    asked.push("f".repeat(40));
    let mut found = store.get_repo_objects(project, &asked).await.unwrap();
    found.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        found, objects,
        "every stored object, first bytes kept, unknown ids skipped"
    );
    assert_eq!(store.get_repo_objects(project, &[]).await.unwrap(), vec![]);

    // A branch read at once: its target and what links reach from it, in this project only.
    let object = |id: &str, links: &[&str]| RepoObject {
        id: id.repeat(40),
        data: format!("object {id}").into_bytes(),
        links: links.iter().map(|l| l.repeat(40)).collect(),
    };
    // commit 1 → tree 2 → trees 3 and 4; tree 4 names 5, which is not stored; 6 (stored
    // without links) and 7 (another project's) are reached by nothing.
    let reached = vec![
        object("1", &["2"]),
        object("2", &["3", "4"]),
        object("3", &[]),
        object("4", &["5"]),
    ];
    let mut stored = reached.clone();
    stored.push(object("6", &[]));
    store.put_repo_objects(project, &stored).await.unwrap();
    let other = new_project(&*store, owner.id, "refs-other").await;
    store
        .put_repo_objects(other, &[object("7", &[]), object("3", &["7"])])
        .await
        .unwrap();
    const BRANCH: &str = "refs/heads/linked";
    store
        .swap_repo_ref(project, BRANCH, None, &"1".repeat(40))
        .await
        .unwrap();
    let mut branch = store
        .get_repo_branch(project, BRANCH)
        .await
        .unwrap()
        .expect("the branch exists");
    branch.objects.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(branch.target, "1".repeat(40));
    assert_eq!(
        branch.objects, reached,
        "the target and what its links reach, once each, links read back"
    );
    // A target that is not stored: the target alone.
    store
        .swap_repo_ref(project, "refs/heads/bare", None, &"9".repeat(40))
        .await
        .unwrap();
    let bare = store
        .get_repo_branch(project, "refs/heads/bare")
        .await
        .unwrap()
        .expect("the branch exists");
    assert_eq!((bare.target, bare.objects), ("9".repeat(40), vec![]));
    assert_eq!(
        store
            .get_repo_branch(project, "refs/heads/none")
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.get_repo_branch(other, BRANCH).await.unwrap(), None);

    // References and objects go with their project; an unknown project takes none.
    store.delete_project(project).await.unwrap();
    assert_eq!(store.list_repo_refs(project).await.unwrap(), vec![]);
    assert_eq!(
        store.get_repo_objects(project, &asked[..3]).await.unwrap(),
        vec![]
    );
    let err = store
        .swap_repo_ref(project, MAIN, None, &a)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Validation, "{err}");
}
