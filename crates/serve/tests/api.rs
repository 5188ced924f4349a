//! The JSON API and pages over HTTP, as the page (and anyone) reads them: a
//! server on 127.0.0.1:0 in the test, a plain HTTP/1.1 client on a socket.

mod fixture;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;

use fixture::{add_sweep, grid, open, Plan};
use serde_json::Value;
use sweep_serve::{Config, Server};

/// A server of `db` on a free loopback port, stopped when dropped.
struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(db: &Path) -> Running {
        let config = Config { db: db.into(), speed_only: vec!["workers".into()] };
        let (tx_addr, rx_addr) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let server = Server::bind("127.0.0.1:0".parse().unwrap(), config).await.unwrap();
                tx_addr.send(server.local_addr()).unwrap();
                server
                    .run(async move {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let addr = rx_addr.recv().expect("the server's address");
        Running { addr, stop: Some(stop), thread: Some(thread) }
    }

    fn get(&self, path: &str) -> Response {
        get(self.addr, path)
    }

    fn json(&self, path: &str) -> Value {
        let r = self.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert!(r.header("content-type").starts_with("application/json"), "{path}");
        serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {}", r.body))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> &str {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map_or("", |(_, v)| v.as_str())
    }
}

/// `GET path` over HTTP/1.1 with `Connection: close`.
fn get(addr: SocketAddr, path: &str) -> Response {
    get_as(addr, &addr.to_string(), path)
}

/// `GET path` with this `Host` header.
fn get_as(addr: SocketAddr, host: &str, path: &str) -> Response {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let mut lines = head.lines();
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect();
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    Response { status, headers, body }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

const NAME: &str = "<script>alert('x')</script> & \"friends\"";

/// A database with one finished sweep (a grid of four, one failed job) and
/// one being written (a running job), named to need escaping.
fn database(dir: &Path) -> std::path::PathBuf {
    let db = dir.join("sweep.db");
    let mut store = open(&db);
    let mut plans = grid(4, 3);
    plans.push(Plan {
        lr: 0.5,
        momentum: 0.0,
        batch_size: 8,
        epochs: 3,
        record: 1,
        fail: Some("diverged: <b>NaN</b>"),
    });
    add_sweep(&mut store, "aaaa", NAME, &plans);
    add_sweep(
        &mut store,
        "bbbb",
        "live",
        &[Plan { lr: 0.01, momentum: 0.9, batch_size: 8, epochs: 5, record: 2, fail: None }],
    );
    db
}

#[test]
fn every_endpoint_answers_with_what_the_page_shows() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    let server = Running::start(&db);

    let sweeps = server.json("/api/sweeps");
    let sweeps = sweeps.as_array().unwrap();
    assert_eq!(sweeps.len(), 2);
    let s = &sweeps[0];
    assert_eq!(s["name"], NAME, "names travel exactly");
    assert_eq!(s["jobs"], 5);
    assert_eq!(s["counts"]["done"], 4);
    assert_eq!(s["counts"]["failed"], 1);
    assert_eq!(s["progress"]["epochs_done"], 13);
    assert_eq!(s["progress"]["epochs_total"], 13, "a failed job is done recording");
    assert_eq!(s["progress"]["remaining_seconds"], 0.0);
    let live = &sweeps[1];
    assert_eq!(live["counts"]["running"], 1);
    assert_eq!(live["progress"]["epochs_done"], 2);
    assert_eq!(live["progress"]["remaining_seconds"], 1.5, "3 epochs left at 0.5 s");

    let sweep = server.json("/api/sweeps/aaaa");
    assert_eq!(sweep["keys"], serde_json::json!(["lr"]));
    assert_eq!(sweep["sweep"]["name"], NAME);
    assert!(sweep.get("jobs").is_none(), "the jobs come a page at a time: {sweep}");
    let table = server.json("/api/sweeps/aaaa/jobs");
    assert_eq!(
        (table["total"].as_u64(), table["offset"].as_u64(), table["limit"].as_u64()),
        (Some(5), Some(0), Some(100))
    );
    assert_eq!(table["keys"], serde_json::json!(["lr"]));
    let jobs = table["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 5);
    // lr = 0.001 is nearest the fixture's best lr (0.01) of the grid 1e-4, 3e-4, 1e-3, 3e-3.
    let best = sweep["best"]["id"].as_str().unwrap();
    assert_eq!(table["best"], best);
    assert_eq!(jobs[0]["id"], best, "by best valid accuracy, highest first, unless asked");
    assert_eq!(jobs[4]["status"], "failed", "the lowest accuracy: last");
    assert_eq!(jobs[0]["params"]["lr"], 0.003);
    assert_eq!(sweep["best"]["config"]["lr"], 0.003);
    // Only the table's columns.
    let mut columns: Vec<&str> = jobs[0].as_object().unwrap().keys().map(String::as_str).collect();
    columns.sort();
    assert_eq!(
        columns,
        [
            "best_epoch",
            "best_valid_acc",
            "epochs",
            "epochs_done",
            "id",
            "params",
            "same_as",
            "seconds",
            "status",
            "status_text"
        ]
    );
    let done = server.json("/api/sweeps/aaaa/jobs?status=done");
    assert_eq!((done["total"].as_u64(), done["jobs"].as_array().unwrap().len()), (Some(4), 4));
    let failed = server.json("/api/sweeps/aaaa/jobs?status=failed");
    assert_eq!(failed["total"], 1);
    assert_eq!(failed["jobs"][0]["status"], "failed");
    assert_eq!(server.json("/api/sweeps/aaaa/jobs?status=all")["total"], 5);
    // Sorted on the server, either way, then paged.
    let lrs = |path: &str| -> Vec<f64> {
        server.json(path)["jobs"].as_array().unwrap().iter().map(|j| j["params"]["lr"].as_f64().unwrap()).collect()
    };
    assert_eq!(lrs("/api/sweeps/aaaa/jobs?sort=lr"), [0.0001, 0.0003, 0.001, 0.003, 0.5]);
    assert_eq!(lrs("/api/sweeps/aaaa/jobs?sort=lr&order=desc"), [0.5, 0.003, 0.001, 0.0003, 0.0001]);
    assert_eq!(lrs("/api/sweeps/aaaa/jobs?sort=lr&offset=1&limit=2"), [0.0003, 0.001]);
    assert_eq!(lrs("/api/sweeps/aaaa/jobs?sort=lr&status=done&order=desc&offset=3&limit=2"), [0.0001]);
    let past = server.json("/api/sweeps/aaaa/jobs?offset=10");
    assert_eq!((past["total"].as_u64(), past["jobs"].as_array().unwrap().len()), (Some(5), 0));
    let by_acc = server.json("/api/sweeps/aaaa/jobs?sort=best_valid_acc&order=asc&limit=1");
    assert_eq!(by_acc["jobs"][0]["status"], "failed", "its one epoch is the lowest accuracy");
    let ids: Vec<String> = server.json("/api/sweeps/aaaa/jobs?sort=id")["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    let curves = server.json("/api/sweeps/aaaa/curves");
    assert_eq!(curves["best"], best);
    let series = curves["jobs"].as_array().unwrap();
    assert_eq!(series.len(), 5, "every job with an epoch, within the default limit");
    assert_eq!(series[0]["id"], best, "the best first");
    assert_eq!(series[0]["best"], true);
    assert_eq!(series[0]["valid_acc"].as_array().unwrap().len(), 3);
    assert_eq!(series[0]["epoch"], serde_json::json!([1, 2, 3]));
    let one = server.json("/api/sweeps/aaaa/curves?limit=1");
    assert_eq!(one["jobs"].as_array().unwrap().len(), 1);

    let imp = server.json("/api/sweeps/aaaa/importance");
    assert_eq!(imp["jobs"], 4);
    assert_eq!(imp["keys"][0]["key"], "lr");
    assert_eq!(imp["keys"][0]["levels"], 4);
    assert!((imp["keys"][0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-9, "lr alone varies: it explains all");

    let search = server.json("/api/sweeps/aaaa/search");
    assert_eq!(search["axes"][0]["key"], "lr");
    assert_eq!(search["axes"][0]["log"], true, "1e-4 to 3e-3 spans a factor of 30");
    assert_eq!(search["axes"][0]["values"], serde_json::json!([0.0001, 0.0003, 0.001, 0.003]));
    assert_eq!(search["axes"][0]["scale"], "log");
    assert_eq!(search["jobs"].as_array().unwrap().len(), 4, "the done jobs");
    assert_eq!(search["pruned"], serde_json::json!([false, false, false, false]));
    assert_eq!(search["best_so_far"]["pruned"].as_array().unwrap().len(), 5);
    let at_best = search["jobs"].as_array().unwrap().iter().position(|j| j == best).unwrap();
    assert_eq!(search["axes"][0]["values"][at_best], 0.003);
    let trials = &search["best_so_far"];
    assert_eq!(trials["number"], serde_json::json!([1, 2, 3, 4, 5]));
    let bests: Vec<f64> = trials["best_so_far"].as_array().unwrap().iter().map(|t| t.as_f64().unwrap()).collect();
    assert!(bests.windows(2).all(|w| w[0] <= w[1]), "best so far never falls: {bests:?}");

    let job = server.json(&format!("/api/jobs/{best}"));
    assert_eq!(job["config"]["lr"], 0.003);
    assert_eq!(job["epoch_rows"].as_array().unwrap().len(), 3);
    assert_eq!(job["sweeps"][0]["name"], NAME);
    let kinds: Vec<&str> = job["checkpoints"].as_array().unwrap().iter().map(|c| c["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["best", "last"]);
    assert!(job["checkpoints"][0]["bytes"].as_i64().unwrap() > 0);
    let failed_id = failed["jobs"][0]["id"].as_str().unwrap();
    let failed_job = server.json(&format!("/api/jobs/{failed_id}"));
    assert_eq!(failed_job["error"], "diverged: <b>NaN</b>");
    assert_eq!(failed_job["status"], "failed");
}

#[test]
fn pages_and_files_are_served_and_everything_else_is_404() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    let server = Running::start(&db);
    let job = server.json("/api/sweeps/aaaa/jobs")["jobs"][0]["id"].as_str().unwrap().to_owned();
    for path in ["/".to_owned(), "/sweeps/aaaa".to_owned(), format!("/jobs/{job}")] {
        let r = server.get(&path);
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("content-type").starts_with("text/html"), "{path}");
        assert!(r.body.contains("/assets/app.js"));
        assert!(!r.body.contains("<script>alert"), "{path}: names are never put into the HTML");
        assert!(r.header("content-security-policy").contains("script-src 'self'"), "{path}");
    }
    let js = server.get("/assets/app.js");
    assert_eq!(js.status, 200);
    assert!(js.header("content-type").starts_with("text/javascript"));
    for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("] {
        assert!(!js.body.contains(sink), "app.js builds the DOM with textContent, never {sink}");
    }
    assert_eq!(server.get("/assets/app.css").status, 200);

    for path in [
        "/nope",
        "/assets/nope.js",
        "/api",
        "/api/nope",
        "/api/sweeps/nope",
        "/api/sweeps/aaa",
        "/api/sweeps/nope/curves",
        "/api/sweeps/nope/importance",
        "/api/sweeps/nope/search",
        "/api/sweeps/nope/jobs",
        "/api/jobs/nope",
        "/sweeps/nope",
        "/sweeps/live",
        "/jobs/nope",
        "/sweeps/aaaa/extra",
    ] {
        let r = server.get(path);
        assert_eq!(r.status, 404, "{path}: {}", r.body);
        if path.starts_with("/api/sweeps/") || path.starts_with("/api/jobs/") {
            let v: Value = serde_json::from_str(&r.body).unwrap();
            assert!(v["error"].as_str().unwrap().contains("nope") || path.contains("aaa"), "{path}: {v}");
        }
    }
}

#[test]
fn a_bad_query_parameter_is_a_400_that_says_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    let server = Running::start(&db);
    for (path, says) in [
        ("/api/sweeps/aaaa/jobs?status=bogus", "status: no such status `bogus` (one of all, pending"),
        (
            "/api/sweeps/aaaa/jobs?sort=colour",
            "sort: no such column `colour` (one of id, best_valid_acc, best_epoch, epochs_done, status, seconds, same_as, lr)",
        ),
        ("/api/sweeps/aaaa/jobs?sort=momentum", "sort: no such column `momentum`"),
        ("/api/sweeps/aaaa/jobs?order=up", "order: `up` is neither `asc` nor `desc`"),
        ("/api/sweeps/aaaa/jobs?offset=-1", "offset: `-1` is not a whole number"),
        ("/api/sweeps/aaaa/jobs?offset=1.5", "offset: `1.5` is not a whole number"),
        ("/api/sweeps/aaaa/jobs?limit=0", "limit: `0` is not a whole number from 1 to 1000"),
        ("/api/sweeps/aaaa/jobs?limit=1001", "limit: `1001` is not a whole number from 1 to 1000"),
        ("/api/sweeps/aaaa/jobs?limit=", "limit: `` is not a whole number"),
        ("/api/sweeps/aaaa/jobs?page=2", "unknown query parameter `page` (one of offset, limit, sort, order, status)"),
        ("/api/sweeps/aaaa?status=done", "unknown query parameter `status` (none is taken)"),
        ("/api/sweeps/aaaa/curves?limit=0", "limit: `0` is not a whole number from 1 to 200"),
        ("/api/sweeps/aaaa/curves?limit=abc", "limit: `abc`"),
        ("/api/sweeps/aaaa/curves?limit=100000", "limit"),
        ("/api/sweeps?page=2", "unknown query parameter `page`"),
        ("/api/sweeps/aaaa/importance?x=1", "unknown query parameter `x`"),
        ("/api/sweeps/aaaa/search?limit=3", "unknown query parameter `limit` (none is taken)"),
    ] {
        let r = server.get(path);
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        let message = v["error"].as_str().unwrap();
        assert!(message.contains(says), "{path}: {message}");
    }
}

#[test]
fn serving_leaves_the_database_byte_identical_and_sees_a_writer_at_work() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    let before = std::fs::read(&db).unwrap();
    {
        let server = Running::start(&db);
        let job = server.json("/api/sweeps/aaaa/jobs")["jobs"][0]["id"].as_str().unwrap().to_owned();
        for path in [
            "/".to_owned(),
            "/sweeps/aaaa".to_owned(),
            format!("/jobs/{job}"),
            "/api/sweeps".to_owned(),
            "/api/sweeps/aaaa".to_owned(),
            "/api/sweeps/aaaa/jobs?sort=lr&status=done&offset=1&limit=2".to_owned(),
            "/api/sweeps/aaaa/curves".to_owned(),
            "/api/sweeps/aaaa/importance".to_owned(),
            "/api/sweeps/aaaa/search".to_owned(),
            format!("/api/jobs/{job}"),
        ] {
            assert_eq!(server.get(&path).status, 200, "{path}");
        }
    }
    assert!(std::fs::read(&db).unwrap() == before, "the database file changed while being served");

    // A writer at work (WAL): the server reads beside it and sees its epochs.
    let mut writer = open(&db);
    let server = Running::start(&db);
    let seen = |server: &Running| server.json("/api/sweeps/bbbb/curves")["jobs"][0]["epoch"].as_array().unwrap().len();
    assert_eq!(seen(&server), 2);
    let claimed_id = server.json("/api/sweeps/bbbb/jobs")["jobs"][0]["id"].as_str().unwrap().to_owned();
    // The fixture's runner still holds the job's lease; record as it.
    let row = sweep_store::EpochRow {
        epoch: 3,
        train_loss: 0.5,
        train_acc: 0.8,
        valid_loss: 0.6,
        valid_acc: 0.75,
        lr: 0.01,
        seconds: 0.5,
    };
    writer.record_epoch(&claimed_id, "fixture", &row, &[1u8; 16], true, std::time::Duration::from_secs(60)).unwrap();
    assert_eq!(seen(&server), 3, "a new epoch shows without restarting the server");
    assert_eq!(server.json("/api/sweeps/bbbb/jobs")["jobs"][0]["status_text"], "running (3/5)");
}

#[test]
fn a_missing_database_serves_no_sweeps_and_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("none.db");
    let server = Running::start(&db);
    assert_eq!(server.json("/api/sweeps"), serde_json::json!([]));
    assert_eq!(server.get("/api/sweeps/x").status, 404);
    assert!(!db.exists());
    // A database that appears later is read.
    drop(database(dir.path()));
    std::fs::rename(dir.path().join("sweep.db"), &db).unwrap();
    assert_eq!(server.json("/api/sweeps").as_array().unwrap().len(), 2);
}

#[test]
fn on_loopback_only_requests_to_a_loopback_name_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let db = database(dir.path());
    let server = Running::start(&db);
    let port = server.addr.port();
    for host in
        [format!("127.0.0.1:{port}"), format!("localhost:{port}"), "LOCALHOST".to_owned(), format!("[::1]:{port}")]
    {
        assert_eq!(get_as(server.addr, &host, "/api/sweeps").status, 200, "{host}");
    }
    // DNS rebinding: another site's name pointed at 127.0.0.1.
    for host in [format!("evil.example:{port}"), "127.0.0.1.evil.example".to_owned(), String::new()] {
        let r = get_as(server.addr, &host, "/api/sweeps");
        assert_eq!(r.status, 403, "{host:?}: {}", r.body);
    }
}
