//! Binding sweeps and jobs to the data they train on.

use super::*;

#[test]
fn binding_keeps_the_first_key_and_the_manifest() {
    let mut store = Store::open_in_memory().unwrap();
    store.register_sweep(&sweep("s1"), &[job("a"), job("b")]).unwrap();
    assert_eq!(store.sweep_data_key("s1").unwrap(), None, "not bound yet");
    assert_eq!(store.job_data_keys(&["a", "b", "zz"]).unwrap().len(), 0);

    store.bind_data("s1", &["a"], "d1", &Fake("{\"m\":1}", 3)).unwrap();
    assert_eq!(store.sweep_data_key("s1").unwrap().as_deref(), Some("d1"));
    // A bound sweep or job keeps its key; an unbound one takes the new one.
    store.bind_data("s1", &["a", "b"], "d2", &Fake("{\"m\":2}", 0)).unwrap();
    assert_eq!(store.sweep_data_key("s1").unwrap().as_deref(), Some("d1"));
    let keys = store.job_data_keys(&["a", "b", "zz"]).unwrap();
    assert_eq!((keys["a"].as_str(), keys["b"].as_str(), keys.get("zz")), ("d1", "d2", None));
    assert_eq!(store.data_manifest("d1").unwrap().as_deref(), Some(r#"{"m":1}"#));
    assert_eq!(store.data_manifest_part("d1", 0).unwrap().as_deref(), Some("[0,1,2]"));
    assert_eq!(store.data_manifest_part("d1", 1).unwrap(), None);
    assert_eq!(store.data_manifest_part("d2", 0).unwrap(), None, "no images, no part");
    // A recorded manifest is not made again.
    store.bind_data("s1", &["b"], "d1", &Unreachable).unwrap();
    assert_eq!(store.data_manifest("d1").unwrap().as_deref(), Some(r#"{"m":1}"#));
    assert_eq!(store.data_manifest("d3").unwrap(), None);
    assert!(store.has_sweep("s1").unwrap() && !store.has_sweep("s2").unwrap());
    assert_eq!(store.sweep_data_key("s2").unwrap(), None, "unknown");
}

/// A manifest whose images are their positions.
struct Fake(&'static str, usize);

impl ManifestJson for Fake {
    fn header(&self) -> String {
        self.0.to_owned()
    }

    fn images(&self) -> usize {
        self.1
    }

    fn items(&self, range: std::ops::Range<usize>) -> String {
        format!("{:?}", range.collect::<Vec<_>>()).replace(' ', "")
    }
}

/// A manifest that must not be asked for its JSON.
struct Unreachable;

impl ManifestJson for Unreachable {
    fn header(&self) -> String {
        unreachable!("the manifest is recorded")
    }

    fn images(&self) -> usize {
        unreachable!("the manifest is recorded")
    }

    fn items(&self, _: std::ops::Range<usize>) -> String {
        unreachable!("the manifest is recorded")
    }
}

#[test]
fn a_manifest_is_recorded_in_parts_in_order() {
    let mut store = Store::open_in_memory().unwrap();
    store.register_sweep(&sweep("s1"), &[job("a")]).unwrap();
    let images = 2 * MANIFEST_PART + 5;
    store.bind_data("s1", &["a"], "d1", &Fake("{}", images)).unwrap();
    let mut got = Vec::new();
    for part in 0.. {
        let Some(json) = store.data_manifest_part("d1", part).unwrap() else { break };
        let items: Vec<usize> = serde_json::from_str(&json).unwrap();
        assert!(items.len() <= MANIFEST_PART);
        got.extend(items);
    }
    assert_eq!(got, (0..images).collect::<Vec<_>>());
}
