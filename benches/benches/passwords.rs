//! One argon2id password hash at the OWASP parameters (19 MiB, t=2, p=1), through the async API
//! the server uses, against the same hash computed directly on this thread.
//!
//! `cargo bench -p hivesync-benches --bench passwords`. The ratio is the cost of running the hash
//! off the async worker threads (a blocking-pool hop and a semaphore).

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use hivesync_benches::print_ratio;
use hivesync_core::auth::PasswordHasher;

fn main() {
    let mut criterion = Criterion::default()
        .output_directory(&hivesync_benches::criterion_dir())
        .sample_size(20)
        .measurement_time(Duration::from_secs(10))
        .configure_from_args();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let hasher = PasswordHasher::owasp();
    let password = "correct horse battery staple";

    let mut group = criterion.benchmark_group("password");
    group.bench_function("direct_argon2id", |b| {
        b.iter(|| black_box(hasher.hash_blocking(black_box(password)).unwrap()))
    });
    group.bench_function("hash", |b| {
        b.iter(|| black_box(runtime.block_on(hasher.hash(black_box(password))).unwrap()))
    });
    let stored = runtime.block_on(hasher.hash(password)).unwrap();
    group.bench_function("verify", |b| {
        b.iter(|| {
            black_box(
                runtime
                    .block_on(hasher.verify(black_box(password), &stored))
                    .unwrap(),
            )
        })
    });
    group.finish();
    criterion.final_summary();

    print_ratio(
        "password hash (OWASP argon2id)",
        "password",
        "hash",
        "direct_argon2id",
    );
    print_ratio(
        "password verify (OWASP argon2id)",
        "password",
        "verify",
        "direct_argon2id",
    );
}
