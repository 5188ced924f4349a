//! How long each page and endpoint of `sweep serve` takes on a big database:
//! one sweep of 10,000 jobs × 14 epochs (written through the store's API,
//! under /dev/shm when there is one), each URL fetched 5 times after one
//! warm-up, the median reported. The goal (issue #14) is under 300 ms each.
//!
//! `cargo bench --workspace --locked --bench serve [-- JOBS EPOCHS]`

#[path = "../tests/fixture/mod.rs"]
mod fixture;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use sweep_serve::{Config, Server};

fn get(addr: SocketAddr, path: &str) -> (u16, usize) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let status = String::from_utf8_lossy(&raw[..12]).split(' ').nth(1).unwrap().parse().unwrap();
    (status, raw.len())
}

/// A server of `db` on a free loopback port, on its own runtime thread.
fn start(db: &std::path::Path) -> (SocketAddr, tokio::sync::oneshot::Sender<()>, std::thread::JoinHandle<()>) {
    let config = Config { db: db.into(), speed_only: vec!["workers".into()] };
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let server = Server::bind("127.0.0.1:0".parse().unwrap(), config).await.unwrap();
            tx.send(server.local_addr()).unwrap();
            server
                .run(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
    });
    (rx.recv().unwrap(), stop, thread)
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let jobs: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let epochs: i64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(14);
    // SWEEP_BENCH_DB keeps the database between runs (writing it takes minutes).
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.unwrap();
    let db = std::env::var_os("SWEEP_BENCH_DB").map_or_else(|| dir.path().join("sweep.db"), Into::into);
    if !db.exists() {
        let start = Instant::now();
        let mut store = fixture::open(&db);
        fixture::add_sweep(&mut store, "big0", "big", &fixture::grid(jobs, epochs));
        eprintln!(
            "wrote {jobs} jobs x {epochs} epochs in {:.1} s ({:.1} MiB)",
            start.elapsed().as_secs_f64(),
            std::fs::metadata(&db).unwrap().len() as f64 / 1048576.0
        );
    }
    let job = sweep_store::Store::open_read_only(&db).unwrap().jobs("big0").unwrap()[jobs / 2].id.clone();
    let paths = [
        "/".to_owned(),
        "/sweeps/big0".to_owned(),
        format!("/jobs/{job}"),
        "/assets/app.js".to_owned(),
        "/api/sweeps".to_owned(),
        "/api/sweeps/big0".to_owned(),
        "/api/sweeps/big0/jobs?offset=0&limit=500".to_owned(),
        "/api/sweeps/big0/jobs?offset=5000&limit=500&sort=lr&order=desc&status=done".to_owned(),
        "/api/sweeps/big0/curves".to_owned(),
        "/api/sweeps/big0/importance".to_owned(),
        "/api/sweeps/big0/search".to_owned(),
        format!("/api/jobs/{job}"),
    ];
    let mut out = std::io::stdout().lock();
    writeln!(out, "| URL | cold ms (median, min of 5) | warm ms (median, min of 5) | bytes |").unwrap();
    writeln!(out, "|---|---|---|---|").unwrap();
    for path in &paths {
        // Cold: a new server (nothing read yet) for each request; warm: the
        // same URL again on it (nothing committed since).
        let (mut cold, mut warm, mut bytes) = (Vec::new(), Vec::new(), 0);
        for _ in 0..5 {
            let (addr, stop, thread) = start(&db);
            let t = Instant::now();
            let (status, n) = get(addr, path);
            cold.push(ms(t));
            assert_eq!(status, 200, "{path}");
            let t = Instant::now();
            bytes = get(addr, path).1.max(n);
            warm.push(ms(t));
            let _ = stop.send(());
            thread.join().unwrap();
        }
        cold.sort_by(f64::total_cmp);
        warm.sort_by(f64::total_cmp);
        let shown = path.replace(&job, "JOB");
        writeln!(out, "| `{shown}` | {:.1}, {:.1} | {:.1}, {:.1} | {bytes} |", cold[2], cold[0], warm[2], warm[0])
            .unwrap();
    }
}
