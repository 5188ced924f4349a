//! The schema against the committed file, the real sweep files, and the
//! checker: they must agree on every key, type and range.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{json_schema, schema_value, SweepFile};
use crate::spec::{Format, SweepSpec, TrainKey, TrainParams};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A real JSON Schema validator (boon, draft 2020-12) compiled from the schema.
struct Validator {
    schemas: boon::Schemas,
    index: boon::SchemaIndex,
}

impl Validator {
    fn new() -> Validator {
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        let url = "https://sweep.invalid/sweep.schema.json";
        compiler.add_resource(url, schema_value()).unwrap();
        let index = compiler.compile(url, &mut schemas).unwrap_or_else(|e| panic!("{e:#}"));
        Validator { schemas, index }
    }

    fn check(&self, doc: &Value) -> Result<(), String> {
        self.schemas.validate(doc, self.index).map_err(|e| format!("{e}"))
    }
}

/// A sweep file's text as a JSON value, as an editor's schema check sees it.
fn as_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        _ => serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    }
}

fn sweep_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in [repo().join("sweeps"), Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden-ids")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap();
            if (name.ends_with(".toml") || name.ends_with(".json")) && !name.ends_with(".schema.json") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn the_committed_schema_is_current() {
    let path = repo().join("sweeps/sweep.schema.json");
    let schema = json_schema();
    if std::env::var_os("SWEEP_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &schema).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == schema,
        "{} is not what `json_schema()` generates: regenerate it with \
         `sweep schema > sweeps/sweep.schema.json` or `SWEEP_BLESS=1 cargo test -p sweep-scheduler schema`",
        path.display()
    );
    assert!(schema.ends_with("}\n"));
}

#[test]
fn every_sweep_file_is_valid_for_the_schema_and_the_wire_types() {
    let validator = Validator::new();
    let files = sweep_files();
    assert!(files.len() >= 10, "sweeps/ and the golden fixtures: {files:?}");
    for path in files {
        let doc = as_json(&path);
        if let Err(e) = validator.check(&doc) {
            panic!("{}: {e}", path.display());
        }
        // The wire types themselves (serde, deny_unknown_fields) take the file too.
        let text = std::fs::read_to_string(&path).unwrap();
        let wire: Result<SweepFile, String> = if path.extension().is_some_and(|e| e == "toml") {
            toml::from_str(&text).map_err(|e| e.to_string())
        } else {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        };
        if let Err(e) = wire {
            panic!("{}: {e}", path.display());
        }
        SweepSpec::load(&path).unwrap_or_else(|e| panic!("{e}"));
    }
}

const MINIMAL: &str = r#"{"name": "t", "data": {"layout": "synthetic"}, "model": {"weights": "random"}}"#;

#[test]
fn the_schema_rejects_unknown_keys_and_wrong_types() {
    let validator = Validator::new();
    let minimal: Value = serde_json::from_str(MINIMAL).unwrap();
    validator.check(&minimal).unwrap();
    let with_schema = json!({"$schema": "./sweep.schema.json", "name": "t", "data": {"layout": "synthetic"}, "model": {"weights": "random"}});
    validator.check(&with_schema).unwrap();
    let bad = [
        json!({"name": "t", "data": {"layout": "synthetic"}, "model": {"weights": "random"}, "nmae": "t"}),
        json!({"data": {"layout": "synthetic"}, "model": {"weights": "random"}}),
        json!({"name": "t", "data": {"layout": "synthetic", "vaild_fraction": 0.2}, "model": {"weights": "random"}}),
        json!({"name": "t", "data": {"layout": "synthetic", "root": "x"}, "model": {"weights": "random"}}),
        json!({"name": "t", "data": {"layout": "kaggle"}, "model": {"weights": "random"}}),
        json!({"name": "t", "data": {"layout": "synthetic"}, "model": {"weights": "w.bin2"}}),
        json!({"name": "t", "data": {"layout": "synthetic"}, "model": {"weights": "random"}, "train": {"lr": "0.1"}}),
        json!({"name": "t", "data": {"layout": "synthetic"}, "model": {"weights": "random"}, "train": {"batch_size": 0}}),
        json!({"name": "t", "data": {"layout": "synthetic"}, "model": {"weights": "random"}, "grid": {"lr": []}}),
        json!({"name": "t", "data": {"layout": "synthetic"}, "model": {"weights": "random"}, "grid": {"lr": [0.1, 0.1]}}),
        json!({"name": "t", "data": {"layout": "synthetic"}, "model": {"weights": "random"}, "grid": {"learning_rate": [0.1]}}),
        json!({"name": "t", "data": {"layout": "synthetic"}, "model": {"weights": "random"}, "configs": [{"epoch": 3}]}),
        json!({"name": "t", "data": {"layout": "synthetic"}, "model": {"weights": "random"}, "configs": []}),
    ];
    for doc in bad {
        assert!(validator.check(&doc).is_err(), "the schema takes {doc}");
        let text = doc.to_string();
        assert!(
            SweepSpec::parse(&text, Format::Json, Path::new("s.json"), Path::new("/")).is_err(),
            "the checker takes {doc}"
        );
    }
}

/// Values to try on every key: each side of every range, each type.
fn probes() -> Vec<Value> {
    let mut values: Vec<Value> = [
        -1i64,
        0,
        1,
        2,
        3,
        4,
        7,
        8,
        31,
        32,
        200,
        1000,
        1001,
        1024,
        1025,
        4096,
        4097,
        8192,
        8193,
        10_000,
        10_001,
        100_000,
        100_001,
        1_048_576,
        1_048_577,
        10_000_000,
        10_000_001,
        i64::MAX,
    ]
    .into_iter()
    .map(Value::from)
    .collect();
    values.push(json!(u64::MAX));
    // Floats with a fraction: JSON Schema counts 1.0 as an integer, while a
    // sweep file's `16.0` is a float (TOML tells them apart), so whole floats
    // are not probed.
    values.extend([-0.5, 1e-9, 0.001, 0.5, 0.999, 1.5, 1e30].map(Value::from));
    let strings = [
        "",
        " ",
        "x",
        "sgd",
        "adam",
        "cross_entropy",
        "multi_margin",
        "kaggle",
        "folder",
        "synthetic",
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet50-v1",
        "resnet51",
        "rgb",
        "bgr",
        "RGB",
        "caffe",
        "torchvision",
        "f32",
        "f16",
        "bf16",
        "f64",
        "random",
        "random:3",
        "random:x",
        "random ",
        "hub:a/b",
        "hub:ab",
        "hub:",
        "w.pth",
        "w.pt",
        "w.bin",
        "w.safetensors",
        "w.bin2",
        "w",
        ".pth",
    ];
    values.extend(strings.map(Value::from));
    values.extend([
        json!(true),
        json!(null),
        json!([]),
        json!({}),
        json!([0.5, 0.5, 0.5]),
        json!([1, 2, 3]),
        json!([0.5, 0.5]),
        json!([1, 0, 1]),
        json!([0.2, 0.3, 0.1, 0.1]),
        json!(["a", "b", "c"]),
    ]);
    values
}

/// `doc` with `value` at `path` (object keys; created as needed).
fn with(doc: &Value, path: &[&str], value: Value) -> Value {
    let mut doc = doc.clone();
    let mut at = &mut doc;
    for key in &path[..path.len() - 1] {
        at = at.as_object_mut().unwrap().entry(key.to_string()).or_insert_with(|| json!({}));
    }
    at.as_object_mut().unwrap().insert(path[path.len() - 1].to_owned(), value);
    doc
}

/// The properties the schema declares for the object at `pointer`.
fn properties(schema: &Value, pointer: &str) -> Vec<String> {
    let object = schema.pointer(pointer).unwrap_or_else(|| panic!("no {pointer}"));
    object["properties"].as_object().unwrap().keys().cloned().collect()
}

#[test]
fn the_schema_and_the_checker_agree_on_every_key_and_value() {
    let validator = Validator::new();
    let schema = schema_value();
    let synthetic: Value = serde_json::from_str(MINIMAL).unwrap();
    let kaggle = with(&synthetic, &["data"], json!({"layout": "kaggle", "root": "imgs"}));
    let checker = |doc: &Value| SweepSpec::parse(&doc.to_string(), Format::Json, Path::new("s.json"), Path::new("/"));

    // Every key of every section, plus keys that are not.
    let mut cases: Vec<(Value, Vec<&str>)> = Vec::new();
    let top = properties(&schema, "");
    let model = properties(&schema, "/$defs/Model");
    let train = properties(&schema, "/$defs/Train");
    let variants = schema.pointer("/$defs/Data/oneOf").unwrap().as_array().unwrap();
    let mut data_keys: Vec<(String, Vec<String>)> = Vec::new();
    for variant in variants {
        let layout = variant.pointer("/properties/layout/const").unwrap().as_str().unwrap().to_owned();
        data_keys.push((layout, variant["properties"].as_object().unwrap().keys().cloned().collect()));
    }
    let owned: Vec<(Value, Vec<String>)> = {
        let mut v = Vec::new();
        for key in top.iter().chain(["nmae".to_owned()].iter()) {
            if !["data", "model"].contains(&key.as_str()) {
                v.push((synthetic.clone(), vec![key.clone()]));
            }
        }
        for key in model.iter().chain(["weight".to_owned()].iter()) {
            v.push((synthetic.clone(), vec!["model".to_owned(), key.clone()]));
        }
        for (layout, keys) in &data_keys {
            let base = if layout == "synthetic" {
                // `images` at its most, so that any `classes` fits.
                with(&synthetic, &["data", "images"], json!(10_000_000))
            } else {
                with(&kaggle, &["data", "layout"], json!(layout))
            };
            for key in keys.iter().chain(["root".to_owned(), "classes".to_owned(), "folds_".to_owned()].iter()) {
                let base = if key == "images" { synthetic.clone() } else { base.clone() };
                v.push((base, vec!["data".to_owned(), key.clone()]));
            }
        }
        for key in train.iter().chain(["learning_rate".to_owned()].iter()) {
            v.push((synthetic.clone(), vec!["train".to_owned(), key.clone()]));
            v.push((synthetic.clone(), vec!["grid".to_owned(), key.clone()]));
        }
        v
    };
    for (doc, path) in &owned {
        cases.push((doc.clone(), path.iter().map(String::as_str).collect()));
    }

    let mut tried = 0;
    let mut disagreements = Vec::new();
    for (base, path) in &cases {
        for value in probes() {
            let mut docs = vec![with(base, path, value.clone())];
            match path[..] {
                // A grid value as a list, and a config holding the key.
                ["grid", _] => docs.push(with(base, path, json!([value.clone()]))),
                ["train", key] => {
                    let mut config = serde_json::Map::new();
                    config.insert(key.to_owned(), value.clone());
                    docs.push(with(base, &["configs"], json!([config])));
                }
                _ => {}
            }
            for doc in docs {
                tried += 1;
                let by_schema = validator.check(&doc);
                let by_checker = checker(&doc);
                if by_schema.is_ok() != by_checker.is_ok() {
                    let checker_says = by_checker.err().map(|e| e.to_string()).unwrap_or_else(|| "accepted".into());
                    let schema_says = by_schema.err().unwrap_or_else(|| "accepted".into());
                    disagreements.push(format!("{doc}\n  checker: {checker_says}\n  schema: {schema_says}"));
                }
            }
        }
    }
    assert!(tried > 5000, "{tried}");
    assert!(disagreements.is_empty(), "{} disagreements:\n{}", disagreements.len(), disagreements.join("\n"));
}

#[test]
fn train_grid_and_configs_take_the_train_keys_with_their_types_and_defaults() {
    let schema = schema_value();
    let names: Vec<&str> = TrainKey::ALL.iter().map(|k| k.name()).collect();
    let mut train = properties(&schema, "/$defs/Train");
    let mut grid = properties(&schema, "/$defs/Grid");
    let mut sorted_names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    sorted_names.sort();
    train.sort();
    grid.sort();
    assert_eq!(train, sorted_names);
    assert_eq!(grid, sorted_names);
    assert_eq!(schema.pointer("/properties/train/$ref"), Some(&json!("#/$defs/Train")));
    assert_eq!(schema.pointer("/properties/configs/items/$ref"), Some(&json!("#/$defs/Train")));
    assert_eq!(schema.pointer("/properties/grid/$ref"), Some(&json!("#/$defs/Grid")));
    let defaults = TrainParams::default().to_json();
    for key in TrainKey::ALL {
        let name = key.name();
        let one = &schema["$defs"]["Train"]["properties"][name];
        let axis = &schema["$defs"]["Grid"]["properties"][name]["anyOf"];
        // A grid key is one value of the train key's type, or a list of them.
        assert_eq!(axis[0]["$ref"], one["$ref"], "{name}");
        assert_eq!(axis[1]["items"]["$ref"], one["$ref"], "{name}");
        assert_eq!(axis[1]["type"], "array", "{name}");
        assert_eq!(one["default"], defaults[name], "{name}");
    }
}

#[test]
fn data_and_model_defaults_are_the_checkers() {
    let schema = schema_value();
    let spec = SweepSpec::parse(MINIMAL, Format::Json, Path::new("s.json"), Path::new("/")).unwrap();
    let env = spec.environment_json();
    let synthetic = schema
        .pointer("/$defs/Data/oneOf")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v.pointer("/properties/layout/const") == Some(&json!("synthetic")))
        .unwrap();
    for (key, property) in synthetic["properties"].as_object().unwrap() {
        if let Some(default) = property.get("default") {
            assert_eq!(&env["data"][key], default, "data.{key}");
        }
    }
    let mut seen = 0;
    for (key, property) in schema["$defs"]["Model"]["properties"].as_object().unwrap() {
        if let Some(default) = property.get("default") {
            assert_eq!(&env["model"][key], default, "model.{key}");
            seen += 1;
        }
    }
    assert_eq!(seen, 5, "every model key but weights has a default");
    let backbones: Vec<&str> = sweep_worker::Arch::ALL.iter().map(|a| a.name()).collect();
    let in_schema: Vec<&str> =
        schema["$defs"]["Backbone"]["oneOf"].as_array().unwrap().iter().map(|v| v["const"].as_str().unwrap()).collect();
    assert_eq!(in_schema, backbones);
}

#[test]
fn every_object_refuses_unknown_keys() {
    fn walk(value: &Value, at: &str, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                // An `if` is a condition on an object declared around it
                // (`[search]`'s method), not an object of its own.
                let condition = at.ends_with("/if");
                if map.contains_key("properties")
                    && map.get("additionalProperties") != Some(&json!(false))
                    && !condition
                {
                    out.push(at.to_owned());
                }
                for (k, v) in map {
                    walk(v, &format!("{at}/{k}"), out);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, &format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut open = Vec::new();
    walk(&schema_value(), "", &mut open);
    assert!(open.is_empty(), "objects taking any key: {open:?}");
}
