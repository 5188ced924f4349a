//! The backbone pass on several devices and on a device short of memory
//! (issue 17), through the CLI: `--device cpu,cpu` splits the pass into one
//! run of whole batches a backbone, and `SWEEP_DEVICE_MEMORY_MB` (a forced
//! limit: on a CPU, a batch whose activations would need more is refused as
//! out of memory) makes the pass halve its batch and go on. Either way the
//! sweep's results are those of a plain run.

use serde_json::Value;

use crate::prune::TRIAL_HEAD;
use crate::resume::results;
use crate::{stderr, Env};

/// Losses may differ in float32 rounding where the CPU's matrix product
/// depends on a batch's size (Candle's, on CPUs without AVX-512); sweep's
/// own AVX-512 kernel gives the same bits.
const LOSS_TOLERANCE: f64 = 1e-5;

/// Four grid jobs on 120 generated images: four backbone batches of 32.
fn sweep_file(env: &Env) -> String {
    let text = format!(
        "name = \"devices\"\n{TRIAL_HEAD}\n[train]\nbatch_size = 8\nmomentum = 0.9\nepochs = 3\n\n[grid]\nlr = [0.001, 0.01, 0.03, 0.1]\n"
    );
    env.write("devices.toml", &text).to_str().unwrap().to_owned()
}

/// `sweep -v run FILE FLAGS` into database `db` (with a feature cache of
/// its own: every run makes its pass) with `vars`: its stderr and results.
fn run(env: &Env, file: &str, db: &str, flags: &[&str], vars: &[(&str, &str)]) -> (String, Value) {
    let cache = env.path(&format!("{db}.cache"));
    let db = env.path(db);
    let mut args = vec!["--db", db.to_str().unwrap(), "-v", "run", file, "--cache-dir", cache.to_str().unwrap()];
    args.extend_from_slice(flags);
    let out = env.sweep_with(&args, vars);
    assert!(out.status.success(), "{}", stderr(&out));
    (stderr(&out), results(env, &db))
}

/// `a` and `b` agree: equal but for losses, which agree to [`LOSS_TOLERANCE`].
fn same(path: &str, a: &Value, b: &Value) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>(), "{path}");
            for (key, value) in x {
                let path = format!("{path}.{key}");
                match (key.ends_with("loss"), value.as_f64(), y[key].as_f64()) {
                    (true, Some(p), Some(q)) => {
                        assert!((p - q).abs() <= LOSS_TOLERANCE * q.abs().max(1e-12), "{path}: {p} against {q}")
                    }
                    _ => same(&path, value, &y[key]),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}");
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                same(&format!("{path}[{i}]"), p, q);
            }
        }
        _ => assert_eq!(a, b, "{path}"),
    }
}

#[test]
fn a_pass_split_across_devices_gives_the_results_of_one() {
    let env = Env::new();
    let file = sweep_file(&env);
    let (log, one) = run(&env, &file, "one.db", &["--device", "cpu"], &[]);
    assert!(!log.contains("split across devices"), "{log}");
    let (log, two) = run(&env, &file, "two.db", &["--device", "cpu,cpu"], &[]);
    let split = log.lines().find(|l| l.contains("the backbone pass is split across devices"));
    assert!(split.is_some_and(|l| l.contains("devices=2") && l.contains("images=120")), "{log}");
    assert_eq!(one["table"].as_array().map(Vec::len), Some(4));
    same("results", &two, &one);
}

#[test]
fn a_device_out_of_memory_halves_the_backbone_batch_and_goes_on() {
    let env = Env::new();
    let file = sweep_file(&env);
    let (_, plain) = run(&env, &file, "plain.db", &[], &[]);
    // 1 MiB holds the activations of 5 of these 32-pixel images: 32 -> 16 -> 8 -> 4.
    // A pass in two shards (of 64 images) halves once: the device keeps what it learnt.
    for (db, flags) in [("short.db", &[][..]), ("sharded.db", &["--shard-images", "64"][..])] {
        let (log, short) = run(&env, &file, db, flags, &[("SWEEP_DEVICE_MEMORY_MB", "1")]);
        let halvings: Vec<&str> = log.lines().filter(|l| l.contains("out of memory with a backbone batch")).collect();
        let expected = [(32, 16), (16, 8), (8, 4)];
        assert_eq!(halvings.len(), expected.len(), "{db}: {log}");
        for (line, (from, to)) in halvings.iter().zip(expected) {
            let want = format!("cpu: out of memory with a backbone batch of {from} images: going on with {to}");
            assert!(line.contains(&want), "{db}: {line}");
        }
        if !flags.is_empty() {
            assert!(log.contains("feature shards joined into the cache entry"), "{log}");
        }
        same(db, &short, &plain);
    }

    // A limit that is not a number is refused before anything is registered.
    let db = env.path("bad.db");
    let out = env.sweep_with(&["--db", db.to_str().unwrap(), "run", &file], &[("SWEEP_DEVICE_MEMORY_MB", "lots")]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("SWEEP_DEVICE_MEMORY_MB=lots: expected a whole number of MiB above 0"), "{err}");
    assert!(!db.exists() || results(&env, &db)["table"].as_array().is_none_or(Vec::is_empty));
}
