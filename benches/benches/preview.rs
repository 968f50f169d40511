//! Preview builds, for each example app and platform, against the bare bundler command run by
//! hand in a fresh copy of the app with its dependencies installed (the baseline), in one run:
//!
//! - `cold`: HiveSync's build with the dependency store warm and Metro's cache empty;
//! - `one-line`: a rebuild after a one-line change to `src/App.js` (`app/index.tsx` for Expo
//!   Router);
//! - `identical`: the same request again (the whole-build cache);
//! - `restore`: restoring the dependencies into a new checkout from the store.
//!
//! Builds run through the server's own parts: the build request (`Previews::request`) and a CPU
//! worker with the real `preview_build` handler, on the embedded defaults. A build's time runs from
//! the request until its record says `success` (polled every 20 ms).
//!
//! Goals (issue #5): cold ≤ 1.10× baseline; one-line ≤ 0.15× (Metro) / 0.40× (Expo); restore ≤ 1 s;
//! identical ≤ 100 ms. `PREVIEW_BENCH_APPS` (default `rn-app,expo-app`; `expo-router-app` too) and
//! `PREVIEW_BENCH_PLATFORMS` (default `ios,android`) narrow the run.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hivesync_core::config::Config;
use hivesync_core::domain::{
    Email, JobId, JobState, NewProject, NewUser, Platform, ProjectId, Role, UserId,
};
use hivesync_core::ports::WorkerRole;
use hivesync_core::repo::{ArchiveKind, Author, BranchName, CommitRequest, ExpectedParent};
use hivesync_core::testkit::examples::{example_app, tar_of_sources};
use hivesync_preview::log::BuildLog;
use hivesync_preview::request::BuildOrder;
use hivesync_preview::toolchain::toolchain;
use hivesync_queue::worker::WorkerConfig;
use hivesync_server::state::AppState;
use tokio_util::sync::CancellationToken;

fn run(command: &mut Command) {
    let output = command.output().expect("spawn");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

struct Bench {
    state: Arc<AppState>,
    user: UserId,
    work: PathBuf,
}

/// The file a one-line change edits: the home screen.
fn edited_file(app: &str) -> &'static str {
    if app == "expo-router-app" {
        "app/index.tsx"
    } else {
        "src/App.js"
    }
}

impl Bench {
    fn sync(&self, project: ProjectId, app: &str, edit: &dyn Fn(Vec<u8>) -> Vec<u8>) {
        let file = self.work.join("sync.tar");
        let edited = edited_file(app);
        let tar = tar_of_sources(&example_app(app), &|path, bytes| {
            Some(if path == edited { edit(bytes) } else { bytes })
        });
        std::fs::write(&file, tar).unwrap();
        self.state
            .repos
            .sync_archive(
                project,
                ArchiveKind::Tar,
                &file,
                &CommitRequest {
                    branch: BranchName::parse("main").unwrap(),
                    message: "bench".into(),
                    expected_parent: ExpectedParent::Current,
                    force: true,
                    author: Author {
                        name: "bench".into(),
                        email: "bench@example.com".into(),
                    },
                },
            )
            .unwrap();
    }

    /// Requests a build and waits for its record to be finished; the time from request to
    /// `success`.
    async fn build(&self, project: ProjectId, platform: Platform) -> (Duration, serde_json::Value) {
        let order = BuildOrder {
            project_id: project,
            user_id: self.user,
            platform,
            git_ref: "main".to_owned(),
            app_dir: None,
            env: BTreeMap::new(),
            token_version: 1,
            token_id: None,
        };
        let started = Instant::now();
        let previews = &self.state.previews;
        let prepared = previews.prepare(order).await.unwrap();
        let requested = previews.request(prepared, toolchain()).await.unwrap();
        let id: JobId = requested.job.id;
        let mut job = requested.job;
        while !job.state.is_terminal() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            job = self.state.store.get_job(id).await.unwrap().unwrap();
        }
        let took = started.elapsed();
        assert_eq!(
            job.state,
            JobState::Success,
            "{:?}: {:?}",
            job.error_code,
            job.error_message
        );
        (took, job.result.unwrap_or_default())
    }
}

/// The bare bundler command in a fresh copy of the app with installed dependencies and an empty
/// Metro cache (its own TMPDIR).
fn baseline(app: &str, platform: Platform, node_modules: &Path, work: &Path) -> Duration {
    let copy = work.join(format!("baseline-{app}-{platform}"));
    let _ = std::fs::remove_dir_all(&copy);
    std::fs::create_dir_all(&copy).unwrap();
    let source = example_app(app);
    for entry in std::fs::read_dir(&source).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if ["node_modules", "dist", ".expo"].contains(&name.to_string_lossy().as_ref()) {
            continue;
        }
        run(Command::new("cp").arg("-a").arg(entry.path()).arg(&copy));
    }
    run(Command::new("cp")
        .arg("-a")
        .arg(node_modules)
        .arg(copy.join("node_modules")));
    let tmp = copy.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = copy.join("out");
    std::fs::create_dir_all(out.join("assets")).unwrap();
    let bin = copy.join("node_modules/.bin");
    let mut command = if app.starts_with("expo") {
        let mut c = Command::new(bin.join("expo"));
        c.args(["export", "--platform", platform.as_str(), "--output-dir"])
            .arg(&out)
            .env("EXPO_NO_TELEMETRY", "1");
        c
    } else {
        let mut c = Command::new(bin.join("react-native"));
        c.args(["bundle", "--platform", platform.as_str(), "--dev", "false"])
            .args(["--entry-file", "index.js", "--bundle-output"])
            .arg(out.join("main.jsbundle"))
            .arg("--assets-dest")
            .arg(out.join("assets"));
        c
    };
    command
        .current_dir(&copy)
        .env("CI", "1")
        .env("NODE_ENV", "production")
        .env("TMPDIR", &tmp);
    let started = Instant::now();
    run(&mut command);
    started.elapsed()
}

fn main() {
    if !toolchain().is_complete() {
        println!("SKIP preview: node and npm are needed ({})", toolchain());
        return;
    }
    let apps: Vec<String> = std::env::var("PREVIEW_BENCH_APPS")
        .unwrap_or_else(|_| "rn-app,expo-app".to_owned())
        .split(',')
        .map(str::to_owned)
        .collect();
    let platforms: Vec<Platform> = std::env::var("PREVIEW_BENCH_PLATFORMS")
        .unwrap_or_else(|_| "ios,android".to_owned())
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let vars: HashMap<&str, String> = HashMap::from([
        ("DATA_DIR", data.display().to_string()),
        ("PREVIEW_BUILDER_CONCURRENCY", "1".to_owned()),
        ("PREVIEW_MAX_TIMEOUT_MS", "600000".to_owned()),
        ("LOG_LEVEL", "warn".to_owned()),
    ]);
    let config = Config::from_lookup(|name| vars.get(name).cloned()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let state = runtime.block_on(AppState::open(config)).unwrap();
    let shutdown = CancellationToken::new();
    let _guard = runtime.enter();
    let mut worker = WorkerConfig::new(WorkerRole::Cpu, 1);
    worker.poll_interval = Duration::from_millis(20);
    let _workers = hivesync_server::runtime::spawn_worker(&state, worker, &shutdown);
    let user = runtime
        .block_on(state.store.create_user(NewUser {
            email: Email::parse("bench@example.com").unwrap(),
            display_name: "bench".into(),
            password_hash: "x".into(),
        }))
        .unwrap();
    let bench = Bench {
        state: state.clone(),
        user: user.id,
        work: dir.path().to_path_buf(),
    };
    let mut results = Vec::new();
    for app in &apps {
        let project = runtime
            .block_on(state.store.create_project(NewProject {
                name: app.clone(),
                description: String::new(),
                owner: user.id,
            }))
            .unwrap();
        assert_eq!(
            runtime
                .block_on(state.store.get_role(project.id, user.id))
                .unwrap(),
            Some(Role::Owner)
        );
        state.repos.create(project.id).unwrap();
        bench.sync(project.id, app, &|b| b);

        // Fill the dependency store (not timed), then time a restore from it.
        let deps = state.preview_builder().deps;
        let restore_into = |name: &str| {
            let checkout = dir.path().join(name);
            state.repos.checkout(project.id, "main", &checkout).unwrap();
            let log = BuildLog::create(&dir.path().join(format!("{name}.log"))).unwrap();
            let started = Instant::now();
            let restored = runtime
                .block_on(deps.restore(
                    &checkout,
                    &log,
                    Instant::now() + Duration::from_secs(900),
                    &CancellationToken::new(),
                ))
                .unwrap_or_else(|err| panic!("restore: {err:?}"));
            let found = started.elapsed();
            // Without a sandbox the checkout gets hard links (with one, a mount: no work here).
            restored.place(&checkout, None, false).unwrap();
            (found, started.elapsed(), restored)
        };
        let (install, _, restored) = restore_into(&format!("{app}-install"));
        let (restore, linked, _) = restore_into(&format!("{app}-restore"));
        println!(
            "{app}: npm install into the store {:.1} s; restore from the store {:.1} ms ({:.0} ms with hard-linked node_modules, as unconfined builds place it)",
            install.as_secs_f64(),
            restore.as_secs_f64() * 1000.0,
            linked.as_secs_f64() * 1000.0
        );

        for platform in &platforms {
            let base = baseline(app, *platform, &restored.node_modules, dir.path());
            let _ = std::fs::remove_dir_all(data.join("cache/metro"));
            let (cold, _) = runtime.block_on(bench.build(project.id, *platform));
            bench.sync(project.id, app, &|bytes| {
                let mut text = String::from_utf8(bytes).unwrap();
                text.push_str(&format!("\n// edited for {platform}\n"));
                text.into_bytes()
            });
            let (one_line, result) = runtime.block_on(bench.build(project.id, *platform));
            assert_eq!(result["cache"]["metro_warm"], true);
            let (identical, result) = runtime.block_on(bench.build(project.id, *platform));
            assert_eq!(result["cache"]["build"], "hit");
            bench.sync(project.id, app, &|b| b);
            let ratio = |d: Duration| d.as_secs_f64() / base.as_secs_f64();
            println!(
                "{app} {platform}: baseline {:.2} s | cold {:.2} s ({:.2}×) | one-line {:.2} s ({:.2}×) | identical {:.1} ms ({:.4}×)",
                base.as_secs_f64(),
                cold.as_secs_f64(),
                ratio(cold),
                one_line.as_secs_f64(),
                ratio(one_line),
                identical.as_secs_f64() * 1000.0,
                ratio(identical)
            );
            results.push(format!(
                "RESULT preview app={app} platform={platform} baseline_s={:.2} cold_s={:.2} cold_ratio={:.2} \
                 one_line_s={:.2} one_line_ratio={:.2} identical_ms={:.1} restore_ms={:.1}",
                base.as_secs_f64(),
                cold.as_secs_f64(),
                ratio(cold),
                one_line.as_secs_f64(),
                ratio(one_line),
                identical.as_secs_f64() * 1000.0,
                restore.as_secs_f64() * 1000.0
            ));
        }
    }
    for line in results {
        println!("{line}");
    }
    shutdown.cancel();
}
