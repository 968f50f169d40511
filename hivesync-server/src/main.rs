use hivesync_server::cli::{parse_args, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(parse_args()).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            if err.kind() == hivesync_core::ErrorKind::Config {
                std::process::ExitCode::from(2)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}
