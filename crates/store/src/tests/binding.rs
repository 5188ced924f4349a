//! Binding sweeps and jobs to the data they train on.

use super::*;

#[test]
fn binding_keeps_the_first_key_and_the_manifest() {
    let mut store = Store::open_in_memory().unwrap();
    store.register_sweep(&sweep("s1"), &[job("a"), job("b")]).unwrap();
    assert_eq!(store.sweep_data_key("s1").unwrap(), None, "not bound yet");
    assert_eq!(store.job_data_keys(&["a", "b", "zz"]).unwrap().len(), 0);

    store.bind_data("s1", &["a"], "d1", &|| r#"{"m":1}"#.to_owned()).unwrap();
    assert_eq!(store.sweep_data_key("s1").unwrap().as_deref(), Some("d1"));
    // A bound sweep or job keeps its key; an unbound one takes the new one.
    store.bind_data("s1", &["a", "b"], "d2", &|| r#"{"m":2}"#.to_owned()).unwrap();
    assert_eq!(store.sweep_data_key("s1").unwrap().as_deref(), Some("d1"));
    let keys = store.job_data_keys(&["a", "b", "zz"]).unwrap();
    assert_eq!((keys["a"].as_str(), keys["b"].as_str(), keys.get("zz")), ("d1", "d2", None));
    assert_eq!(store.data_manifest("d1").unwrap().as_deref(), Some(r#"{"m":1}"#));
    // A recorded manifest is not made again.
    store.bind_data("s1", &["b"], "d1", &|| unreachable!("d1's manifest is recorded")).unwrap();
    assert_eq!(store.data_manifest("d1").unwrap().as_deref(), Some(r#"{"m":1}"#));
    assert_eq!(store.data_manifest("d3").unwrap(), None);
    assert!(store.has_sweep("s1").unwrap() && !store.has_sweep("s2").unwrap());
    assert_eq!(store.sweep_data_key("s2").unwrap(), None, "unknown");
}
