//! `sweep serve` (issue #14): the dashboard in a real headless Chromium,
//! driven through the DevTools protocol (`cdp.rs`), and `sweep importance`.
//! Without Chromium the browser test says it is skipped, but never when
//! CI=true: then it fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cdp::{chromium, Browser};
use crate::{json, stderr, stdout, Env};

const GRID: &str = r#"
name = "demo grid"

[data]
layout = "synthetic"
classes = 3
images = 60
width = 40
height = 32
valid_fraction = 0.25

[model]
backbone = "resnet18"
weights = "random"
image_size = 32

[train]
batch_size = 8
epochs = 6

[grid]
lr = [0.001, 0.01, 0.1]
momentum = [0.0, 0.9]
"#;

/// A sweep whose name would run script if it were put into HTML.
const HOSTILE: &str = r#"
name = "<img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=2</script>"

[data]
layout = "synthetic"
classes = 2
images = 24
width = 32
height = 32

[model]
backbone = "resnet18"
weights = "random"
image_size = 32

[train]
epochs = 1
"#;

/// A sweep slow enough to watch: one epoch is many small batches, recorded
/// one by one.
const SLOW: &str = r#"
name = "slow"

[data]
layout = "synthetic"
classes = 3
images = 240
width = 32
height = 32

[model]
backbone = "resnet18"
weights = "random"
image_size = 32

[train]
batch_size = 1
epochs = 5000
"#;

/// A random search that prunes (issue #14 after #12): 12 trials over a
/// log-uniform learning rate and a choice of momentum, the median rule
/// stopping the trials behind (as in `prune.rs`).
const PRUNED_SEARCH: &str = r#"
[search]
method = "random"
trials = 12
seed = 4

[space]
lr = { log_uniform = [1e-4, 0.1] }
momentum = { choice = [0.0, 0.9] }
batch_size = 8
epochs = 6

[prune]
method = "median"
startup_trials = 3
warmup_epochs = 1
"#;

fn pruned() -> String {
    format!("name = \"pruned search\"\n{}{PRUNED_SEARCH}", crate::prune::TRIAL_HEAD)
}

/// `sweep serve --bind 127.0.0.1:0`, killed when dropped, and the URL it printed.
pub(crate) struct Serving {
    child: Child,
    pub(crate) url: String,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn serve(env: &Env, extra: &[&str], vars: &[(&str, &str)]) -> Serving {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sweep-under-test"))
        .args(["serve", "--bind", "127.0.0.1:0"])
        .args(extra)
        .env("SWEEP_DB", env.path("sweep.db"))
        .envs(vars.iter().copied())
        .current_dir(env.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sweep serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().to_owned();
    assert!(url.starts_with("http://127.0.0.1:") && url.ends_with('/'), "printed {url:?}");
    Serving { child, url }
}

/// `GET url` (http://host:port/path), its status and body.
fn http_get(url: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut s = TcpStream::connect(host).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    (status, text.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_owned()))
}

pub(crate) fn api(url: &str, path: &str) -> serde_json::Value {
    let (status, body) = http_get(&format!("{url}{}", path.trim_start_matches('/')));
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn serve_prints_its_address_serves_read_only_and_open_is_harmless_without_a_browser() {
    let env = Env::new();
    let file = env.write("grid.toml", GRID);
    let out = env.sweep(&["run", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = std::fs::read(env.path("sweep.db")).unwrap();
    // --open with no xdg-open on PATH: a warning, and it serves.
    let server = serve(&env, &["--open"], &[("PATH", "/nonexistent")]);
    let sweeps = api(&server.url, "/api/sweeps");
    assert_eq!(sweeps[0]["name"], "demo grid");
    assert_eq!(sweeps[0]["counts"]["done"], 6);
    let (status, _) = http_get(&format!("{}nope", server.url));
    assert_eq!(status, 404);
    drop(server);
    assert!(std::fs::read(env.path("sweep.db")).unwrap() == before, "serving changed the database");

    // A bad address is one line naming it, before anything is served.
    let out = env.sweep(&["serve", "--bind", "nonsense"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn importance_ranks_the_keys_that_vary() {
    let env = Env::new();
    let file = env.write("grid.toml", GRID);
    assert!(env.sweep(&["run", file.to_str().unwrap()]).status.success());
    let out = env.sweep(&["importance", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["jobs"], 6);
    assert_eq!(doc["objective"], "best_valid_acc");
    let keys = doc["keys"].as_array().unwrap();
    let names: std::collections::BTreeSet<&str> = keys.iter().map(|k| k["key"].as_str().unwrap()).collect();
    assert_eq!(names, ["lr", "momentum"].into_iter().collect());
    let scores: Vec<f64> = keys.iter().map(|k| k["importance"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "most important first: {scores:?}");
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
    let unexplained = doc["unexplained"].as_f64().unwrap();
    assert!((scores.iter().sum::<f64>() + unexplained - 1.0).abs() < 1e-9);

    let out = env.sweep(&["importance", "demo grid", "--format", "csv"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("key,importance,levels\n"), "{}", stdout(&out));
    let out = env.sweep(&["importance"]);
    assert!(stdout(&out).contains("over 6 done jobs"), "{}", stdout(&out));
    let out = env.sweep(&["importance", "no-such-sweep"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no-such-sweep"), "{}", stderr(&out));
}

#[test]
fn serve_dashboard_in_a_real_browser() {
    let Some(binary) = chromium() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("chromium is required when CI=true (.ci/run installs it)");
        }
        eprintln!("SKIPPED serve_dashboard_in_a_real_browser: no chromium on PATH (apt-get install chromium)");
        return;
    };
    let env = Env::new();
    for (name, text) in [("grid.toml", GRID), ("hostile.toml", HOSTILE)] {
        let file = env.write(name, text);
        let out = env.sweep(&["run", file.to_str().unwrap()]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
    }
    let server = serve(&env, &[], &[]);
    let sweeps = api(&server.url, "/api/sweeps");
    let grid_id = sweeps[0]["id"].as_str().unwrap().to_owned();
    let hostile_name = sweeps[1]["name"].as_str().unwrap().to_owned();
    let grid = api(&server.url, &format!("/api/sweeps/{grid_id}"));
    let best = grid["best"]["id"].as_str().unwrap().to_owned();

    let mut browser = Browser::launch(&binary);
    let page = browser.page(1400, 1000);

    // The sweeps: one row each, the hostile name as text, no script run.
    browser.navigate(&page, &server.url);
    browser.wait_for(&page, "document.querySelectorAll('#sweeps tbody tr').length === 2", 20);
    let names = browser
        .eval(&page, "[...document.querySelectorAll('#sweeps tbody tr td:first-child a')].map(a => a.textContent)");
    assert_eq!(names, serde_json::json!([hostile_name, "demo grid"]), "newest first, names as text");
    assert_eq!(browser.eval(&page, "document.querySelectorAll('#sweeps img, #sweeps script').length"), 0);
    assert_eq!(browser.eval(&page, "typeof window.__pwned"), "undefined", "a name ran as script");
    let counts = browser.eval(&page, "document.querySelector('#sweeps tbody tr:last-child').textContent");
    assert!(counts.as_str().unwrap().contains("demo grid"), "{counts}");

    // One sweep: its rows, the best job marked and linked, the curves.
    browser.navigate(&page, &format!("{}sweeps/{grid_id}", server.url));
    browser.wait_for(&page, "document.querySelectorAll('#jobs tbody tr').length === 6", 20);
    assert_eq!(browser.eval(&page, "document.getElementById('title').textContent"), "demo grid");
    let best_row = browser.eval(&page, "document.querySelector('#jobs tbody tr.best').dataset.key");
    assert_eq!(best_row, serde_json::json!(best), "the best job's row is marked");
    assert_eq!(browser.eval(&page, "document.getElementById('best-job').dataset.job"), serde_json::json!(best));
    let headings = browser.eval(&page, "[...document.querySelectorAll('#jobs thead th')].map(th => th.textContent)");
    assert_eq!(headings[1], "lr");
    assert_eq!(headings[2], "momentum");
    browser.wait_for(&page, "document.querySelectorAll('#curves-acc path.series').length === 12", 20);
    assert_eq!(browser.eval(&page, "document.querySelectorAll('#curves-acc path.series.train').length"), 6);
    assert_eq!(
        browser.eval(&page, "[...document.querySelectorAll('#curves-acc path.series.best')].map(p => p.dataset.job)"),
        serde_json::json!([best, best]),
        "the best job's two curves are bold"
    );
    assert_eq!(browser.eval(&page, "document.querySelector('#curves-loss path.series.valid').dataset.points"), "6");
    // Hovering the best valid curve's last point shows its values.
    let tip = browser.eval(
        &page,
        "(() => { const p = document.querySelector('#curves-acc path.series.valid.best'); \
         const pt = p.getPointAtLength(p.getTotalLength()); const m = p.getScreenCTM(); \
         p.ownerSVGElement.dispatchEvent(new MouseEvent('mousemove', \
           { clientX: pt.x * m.a + m.e, clientY: pt.y * m.d + m.f, bubbles: true })); \
         const t = document.getElementById('tip'); return t.hidden ? null : t.textContent; })()",
    );
    let tip = tip.as_str().unwrap_or_else(|| panic!("no tooltip: {tip}"));
    assert!(tip.contains("valid acc") && tip.contains("epoch 6"), "{tip}");
    // Sorting by a header (both ways), and filtering by status: the server
    // sorts and filters, the page shows what it answers.
    let lr_column =
        "JSON.stringify([...document.querySelectorAll('#jobs tbody tr td:nth-child(2)')].map(td => td.textContent))";
    browser.eval(&page, "document.querySelector('#jobs thead th[data-key=\"param:lr\"]').click()");
    let ascending = r#"["0.001","0.001","0.01","0.01","0.1","0.1"]"#;
    browser.wait_for(&page, &format!("{lr_column} === '{ascending}'"), 20);
    assert_eq!(browser.eval(&page, "document.getElementById('count').textContent"), "6 jobs");
    browser.eval(&page, "document.querySelector('#jobs thead th[data-key=\"param:lr\"]').click()");
    let descending = r#"["0.1","0.1","0.01","0.01","0.001","0.001"]"#;
    browser.wait_for(&page, &format!("{lr_column} === '{descending}'"), 20);
    assert_eq!(
        browser.eval(&page, "document.querySelector('#jobs thead th[data-key=\"param:lr\"]').className"),
        "num sortable sorted-desc"
    );
    browser.eval(&page, "(() => { const s = document.getElementById('status-filter'); s.value = 'failed'; s.dispatchEvent(new Event('change')); })()");
    browser.wait_for(&page, "document.querySelectorAll('#jobs tbody tr').length === 0", 20);
    browser.eval(&page, "(() => { const s = document.getElementById('status-filter'); s.value = ''; s.dispatchEvent(new Event('change')); })()");
    browser.wait_for(&page, "document.querySelectorAll('#jobs tbody tr').length === 6", 20);
    assert_eq!(browser.eval(&page, "document.getElementById('jobs-next').disabled"), true, "one page");
    // Importance bars and search views.
    browser.wait_for(&page, "document.querySelectorAll('#importance-chart rect.bar').length === 2", 20);
    assert_eq!(browser.eval(&page, "document.querySelectorAll('#search svg').length"), 3, "lr, momentum, best so far");
    assert_eq!(browser.eval(&page, "document.querySelectorAll('#search circle.dot').length"), 18, "6 jobs on each");
    assert_eq!(browser.eval(&page, "document.querySelectorAll('#search circle.dot.best').length"), 2);
    assert_eq!(
        browser.eval(&page, "document.querySelectorAll('#search circle.dot.pruned, #search g.legend').length"),
        0
    );
    // Parallel coordinates: an axis per varying key and the objective, a
    // path per trial through all three, the best one bold.
    browser.wait_for(&page, "document.querySelectorAll('#parallel path.trial').length === 6", 20);
    let axes = browser.eval(
        &page,
        "[...document.querySelectorAll('#parallel g.pc-axis')].map(g => [g.dataset.key, g.dataset.scale])",
    );
    assert_eq!(axes, serde_json::json!([["lr", "log"], ["momentum", "linear"], ["best valid acc", "linear"]]));
    let segments = browser.eval(
        &page,
        "[...document.querySelectorAll('#parallel path.trial')].map(p => p.getAttribute('d').split('L').length)",
    );
    assert_eq!(segments, serde_json::json!([3, 3, 3, 3, 3, 3]), "each trial crosses every axis");
    assert_eq!(
        browser.eval(&page, "[...document.querySelectorAll('#parallel path.trial.best')].map(p => p.dataset.job)"),
        serde_json::json!([best])
    );
    assert_eq!(browser.eval(&page, "document.querySelectorAll('#parallel path.trial.pruned').length"), 0);
    let shot = browser.screenshot(&page, 2400);
    check_png(&shot);
    std::fs::write(env.path("dashboard.png"), &shot).unwrap();
    if let Some(path) = std::env::var_os("SWEEP_SCREENSHOT") {
        std::fs::write(path, &shot).unwrap();
    }

    // Paging (`?rows=4`): the server sends four rows, then the last two.
    browser.navigate(&page, &format!("{}sweeps/{grid_id}?rows=4", server.url));
    let keys = "[...document.querySelectorAll('#jobs tbody tr')].map(tr => tr.dataset.key)";
    browser.wait_for(&page, "document.querySelectorAll('#jobs tbody tr').length === 4", 20);
    assert_eq!(browser.eval(&page, "document.getElementById('count').textContent"), "showing 1–4 of 6 jobs");
    assert_eq!(browser.eval(&page, "document.getElementById('jobs-prev').disabled"), true);
    let first = browser.eval(&page, keys);
    assert_eq!(first[0], serde_json::json!(best), "the best first");
    browser.eval(&page, "document.getElementById('jobs-next').click()");
    browser.wait_for(&page, "document.querySelectorAll('#jobs tbody tr').length === 2", 20);
    assert_eq!(browser.eval(&page, "document.getElementById('count').textContent"), "showing 5–6 of 6 jobs");
    assert_eq!(browser.eval(&page, "document.getElementById('jobs-next').disabled"), true);
    let mut all: Vec<String> = first
        .as_array()
        .unwrap()
        .iter()
        .chain(browser.eval(&page, keys).as_array().unwrap())
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 6, "two pages, every job once");
    browser.eval(&page, "document.getElementById('jobs-prev').click()");
    browser.wait_for(&page, "document.querySelectorAll('#jobs tbody tr').length === 4", 20);

    // A job: its settings, every epoch, its checkpoints.
    browser.navigate(&page, &format!("{}jobs/{best}", server.url));
    browser.wait_for(&page, "document.querySelectorAll('#epochs tbody tr').length === 6", 20);
    let kinds = browser.eval(
        &page,
        "[...document.querySelectorAll('#checkpoints tbody tr td:first-child')].map(td => td.textContent)",
    );
    assert_eq!(kinds, serde_json::json!(["best", "last"]));
    let config = browser.eval(&page, "JSON.parse(document.getElementById('config').textContent)");
    assert_eq!(config["batch_size"], 8);

    // Live: a running sweep's new epochs appear without a reload.
    let slow = env.write("slow.toml", SLOW);
    let mut run = Command::new(env!("CARGO_BIN_EXE_sweep-under-test"))
        .args(["run", slow.to_str().unwrap()])
        .env("SWEEP_DB", env.path("sweep.db"))
        .current_dir(env.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let slow_id = loop {
        let sweeps = api(&server.url, "/api/sweeps");
        let found = sweeps
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "slow" && s["progress"]["epochs_done"].as_i64() > Some(0));
        if let Some(s) = found {
            break s["id"].as_str().unwrap().to_owned();
        }
        assert!(start.elapsed() < Duration::from_secs(120), "the slow sweep recorded no epoch in 120 s");
        std::thread::sleep(Duration::from_millis(200));
    };
    browser.navigate(&page, &format!("{}sweeps/{slow_id}", server.url));
    let first = browser.wait_for(&page, "(() => { const p = document.querySelector('#curves-acc path.series.valid'); return p && Number(p.dataset.points); })()", 20);
    browser.eval(&page, "window.__same_page = true");
    let grown = browser.wait_for(
        &page,
        &format!("(() => {{ const n = Number(document.querySelector('#curves-acc path.series.valid').dataset.points); return n > {first} && n; }})()"),
        30,
    );
    assert_eq!(browser.eval(&page, "window.__same_page"), true, "the page was reloaded");
    assert!(grown.as_i64() > first.as_i64());
    let _ = Command::new("kill").args(["-INT", &run.id().to_string()]).status();
    let _ = run.wait();
}

#[test]
fn serve_marks_pruned_trials_in_the_parallel_coordinates_and_the_search_charts() {
    let Some(binary) = chromium() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("chromium is required when CI=true (.ci/run installs it)");
        }
        eprintln!("SKIPPED serve_marks_pruned_trials…: no chromium on PATH (apt-get install chromium)");
        return;
    };
    let env = Env::new();
    let file = env.write("pruned.toml", &pruned());
    let out = env.sweep(&["run", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let server = serve(&env, &[], &[]);
    let id = api(&server.url, "/api/sweeps")[0]["id"].as_str().unwrap().to_owned();
    let search = api(&server.url, &format!("/api/sweeps/{id}/search"));
    let jobs: Vec<&str> = search["jobs"].as_array().unwrap().iter().map(|j| j.as_str().unwrap()).collect();
    let flags: Vec<bool> = search["pruned"].as_array().unwrap().iter().map(|p| p.as_bool().unwrap()).collect();
    let mut pruned: Vec<&str> = jobs.iter().zip(&flags).filter(|(_, p)| **p).map(|(j, _)| *j).collect();
    pruned.sort();
    assert_eq!(jobs.len(), 12, "every trial, done or pruned");
    assert!(!pruned.is_empty() && pruned.len() < 12, "{flags:?}");
    let summary = api(&server.url, &format!("/api/sweeps/{id}"));
    assert_eq!(summary["sweep"]["counts"]["pruned"], pruned.len());
    let scales: Vec<(&str, &str)> = search["axes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["key"].as_str().unwrap(), a["scale"].as_str().unwrap()))
        .collect();
    assert_eq!(scales, [("lr", "log"), ("momentum", "choice")], "as the sweep samples them");
    let trials_pruned = search["best_so_far"]["pruned"].as_array().unwrap().iter().filter(|p| **p == true).count();
    assert_eq!(trials_pruned, pruned.len());
    let best = summary["best"]["id"].as_str().unwrap().to_owned();

    let mut browser = Browser::launch(&binary);
    let page = browser.page(1400, 1000);
    browser.navigate(&page, &format!("{}sweeps/{id}", server.url));
    browser.wait_for(&page, "document.querySelectorAll('#parallel path.trial').length === 12", 30);
    // The axes: log lr, momentum's two choices as categories, the objective.
    let axes = browser.eval(
        &page,
        "[...document.querySelectorAll('#parallel g.pc-axis')].map(g => [g.dataset.key, g.dataset.scale])",
    );
    assert_eq!(axes, serde_json::json!([["lr", "log"], ["momentum", "choice"], ["best valid acc", "linear"]]));
    let choices = browser.eval(
        &page,
        "[...document.querySelectorAll('#parallel g.pc-axis[data-key=\"momentum\"] text')].map(t => t.textContent)",
    );
    assert_eq!(choices, serde_json::json!(["0", "0.9", "momentum"]));
    // One path per trial; the pruned ones grey and dashed, the others coloured.
    let marked = browser
        .eval(&page, "[...document.querySelectorAll('#parallel path.trial.pruned')].map(p => p.dataset.job).sort()");
    assert_eq!(marked, serde_json::json!(pruned));
    let styles = browser.eval(
        &page,
        "[...document.querySelectorAll('#parallel path.trial')].map(p => { const s = getComputedStyle(p);          return [p.classList.contains('pruned'), s.strokeDasharray !== 'none', s.stroke]; })",
    );
    for style in styles.as_array().unwrap() {
        let (is_pruned, dashed, stroke) = (style[0] == true, style[1] == true, style[2].as_str().unwrap());
        assert_eq!(is_pruned, dashed, "{style}");
        assert_eq!(is_pruned, stroke == "rgb(154, 161, 176)", "pruned grey, the others by objective: {style}");
    }
    assert_eq!(
        browser.eval(&page, "[...document.querySelectorAll('#parallel path.trial.best')].map(p => p.dataset.job)"),
        serde_json::json!([best])
    );
    assert!(!pruned.contains(&best.as_str()), "a pruned trial is never the best here");
    let legend = browser.eval(&page, "document.querySelector('#parallel g.legend').textContent");
    assert!(legend.as_str().unwrap().contains("pruned"), "{legend}");
    // The search charts: pruned trials as grey rings on each, with a legend.
    browser.wait_for(&page, "document.querySelectorAll('#search svg').length === 3", 20);
    let per_chart = browser.eval(
        &page,
        "[...document.querySelectorAll('#search svg')].map(s => [ \
         s.querySelectorAll('circle.dot[data-job]:not(.pruned)').length, \
         s.querySelectorAll('circle.dot.pruned[data-job]').length, s.querySelector('g.legend').textContent])",
    );
    let n = pruned.len();
    assert_eq!(
        per_chart,
        serde_json::json!([[12 - n, n, "donepruned"], [12 - n, n, "donepruned"], [12 - n, n, "doneprunedbest so far"]]),
        "each chart: the done trials, the pruned ones, a legend"
    );
    let ring = browser.eval(
        &page,
        "(() => { const s = getComputedStyle(document.querySelector('#search circle.dot.pruned')); return [s.fill, s.strokeDasharray]; })()",
    );
    assert_eq!(ring[0], "none", "hollow: {ring}");
    // The jobs table filters pruned jobs on the server.
    browser.eval(&page, "(() => { const s = document.getElementById('status-filter'); s.value = 'pruned'; s.dispatchEvent(new Event('change')); })()");
    let rows = browser.wait_for(
        &page,
        &format!("document.querySelectorAll('#jobs tbody tr').length === {n} && [...document.querySelectorAll('#jobs tbody tr')].map(tr => tr.dataset.key).sort()"),
        20,
    );
    assert_eq!(rows, serde_json::json!(pruned));
}

/// A PNG of a real page: the right size, not blank.
fn check_png(png: &[u8]) {
    let img = image::load_from_memory(png).expect("a PNG").to_rgb8();
    assert_eq!(img.width(), 1400);
    assert!(img.height() >= 1800, "the whole page: {}", img.height());
    let inked = img.pixels().filter(|p| p.0.iter().any(|c| *c < 200)).count();
    let share = inked as f64 / (img.width() * img.height()) as f64;
    assert!(share > 0.01 && share < 0.6, "ink {share}");
}
