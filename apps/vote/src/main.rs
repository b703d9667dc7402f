//! `vote`: the CATS v DOGS server. Listens on `PORT` (default 8080); see the crate docs and
//! `docs/vote.md` for the environment it reads.

use std::collections::HashMap;

use gatehouse_vote::{App, Settings, logging};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let env: HashMap<String, String> = std::env::vars().collect();
    let port: u16 = env.get("PORT").and_then(|p| p.parse().ok()).unwrap_or(8080);
    let settings = match Settings::from_env(env).await {
        Ok(s) => s,
        Err(e) => {
            logging::error(&format!("vote: {e}"));
            return std::process::ExitCode::FAILURE;
        }
    };
    let app = App::new(settings);
    if let Err(e) = app.votes().await {
        // As the sample: keep serving; each request retries and answers 500 meanwhile.
        logging::error(&format!(
            "Error while connecting to the Cloud SQL database. Check that your username and password are correct, that the Cloud SQL proxy is running (locally), and that the PostgreSQL instance/database exists and is ready for use: {e}"
        ));
    }
    let listener = match tokio::net::TcpListener::bind(("0.0.0.0", port)).await {
        Ok(l) => l,
        Err(e) => {
            logging::error(&format!("vote: cannot listen on port {port}: {e}"));
            return std::process::ExitCode::FAILURE;
        }
    };
    logging::info(&format!("vote: listening on port {port}"));
    let served = axum::serve(listener, app.router())
        .with_graceful_shutdown(async {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return std::future::pending().await,
                };
            tokio::select! {
                _ = term.recv() => logging::info("vote: received SIGTERM"),
                _ = tokio::signal::ctrl_c() => logging::info("vote: received SIGINT"),
            }
        })
        .await;
    // In-flight requests have their answers; now the pool.
    app.close().await;
    logging::info("DB connection closed.");
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            logging::error(&format!("vote: {e}"));
            std::process::ExitCode::FAILURE
        }
    }
}
