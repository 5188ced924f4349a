//! `sweep serve`: the dashboard of `sweep-serve` on this process's runtime,
//! until Ctrl-C (or SIGTERM), which is its normal end (exit 0).

use std::io::Write;

use anyhow::Context;
use sweep_serve::{Config, Server};

use crate::args::{GlobalArgs, ServeArgs};
use crate::commands::table::speed_only_keys;
use crate::Outcome;

pub fn serve(global: &GlobalArgs, args: &ServeArgs) -> anyhow::Result<Outcome> {
    let config =
        Config { db: global.db.clone(), speed_only: speed_only_keys().into_iter().map(String::from).collect() };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let server = Server::bind(args.bind, config).await?;
        let url = format!("http://{}/", server.local_addr());
        // The address on stdout (a port 0 bind says which port it got), the rest on stderr.
        writeln!(std::io::stdout().lock(), "{url}")?;
        if !global.quiet {
            eprintln!("sweep serve: {} read-only at {url} (Ctrl-C stops)", global.db);
        }
        if !args.bind.ip().is_loopback() {
            tracing::warn!("listening on {}: other machines can read this database's results", args.bind);
        }
        if args.open {
            open_browser(&url);
        }
        server.run(stop_signal()).await?;
        anyhow::Ok(())
    })?;
    Ok(Outcome::Success)
}

/// Ctrl-C, or SIGTERM where there is one.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Asks the desktop to open `url`; without `xdg-open` (a server, a container)
/// it says so and serves anyway.
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
    match std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(_) => {}
        Err(e) => tracing::warn!("--open: cannot run {opener} ({e}); open {url} yourself"),
    }
}
