//! How long each page and endpoint of `sweep serve` takes on a big database:
//! one sweep of 10,000 jobs × 14 epochs (written through the store's API,
//! under /dev/shm when there is one), each URL fetched 5 times after one
//! warm-up, the median reported. The goal (issue #14) is under 300 ms each.
//!
//! `cargo bench -p sweep-serve --bench serve [-- JOBS EPOCHS]`

#[path = "../tests/fixture.rs"]
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

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let jobs: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let epochs: i64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(14);
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.unwrap();
    let db = dir.path().join("sweep.db");
    let start = Instant::now();
    let ids = {
        let mut store = fixture::open(&db);
        fixture::add_sweep(&mut store, "big0", "big", &fixture::grid(jobs, epochs))
    };
    eprintln!(
        "wrote {jobs} jobs x {epochs} epochs in {:.1} s ({:.1} MiB)",
        start.elapsed().as_secs_f64(),
        std::fs::metadata(&db).unwrap().len() as f64 / 1048576.0
    );

    let config = Config { db: db.clone(), speed_only: vec!["workers".into()] };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let server = Server::bind("127.0.0.1:0".parse().unwrap(), config).await.unwrap();
            tx.send(server.local_addr()).unwrap();
            server.run(std::future::pending()).await.unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    let job = &ids[ids.len() / 2];
    let paths = [
        "/".to_owned(),
        "/sweeps/big0".to_owned(),
        format!("/jobs/{job}"),
        "/assets/app.js".to_owned(),
        "/api/sweeps".to_owned(),
        "/api/sweeps/big0".to_owned(),
        "/api/sweeps/big0?sort=lr&status=done".to_owned(),
        "/api/sweeps/big0/curves".to_owned(),
        "/api/sweeps/big0/importance".to_owned(),
        "/api/sweeps/big0/search".to_owned(),
        format!("/api/jobs/{job}"),
    ];
    println!("| URL | median ms (5 runs) | min ms | bytes |");
    println!("|---|---|---|---|");
    for path in &paths {
        let (status, _) = get(addr, path);
        assert_eq!(status, 200, "{path}");
        let mut times: Vec<f64> = Vec::new();
        let mut bytes = 0;
        for _ in 0..5 {
            let t = Instant::now();
            bytes = get(addr, path).1;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        let shown = if path.starts_with("/jobs/") || path.starts_with("/api/jobs/") {
            path.replace(job, "JOB")
        } else {
            path.clone()
        };
        println!("| `{shown}` | {:.1} | {:.1} | {bytes} |", times[2], times[0]);
    }
}
