//! The library's layers point one way: each folder of `host/src` may use
//! only the layers below it, so the structure draws without cycles.

use std::collections::BTreeSet;
use std::path::Path;

/// Each layer and the layers it may use (`Disposition` is `disposition`).
const ALLOWED: [(&str, &[&str]); 8] = [
    ("telemetry", &[]),
    ("journal", &["disposition", "telemetry"]),
    ("config", &["journal"]),
    ("wasm", &["config", "journal", "telemetry"]),
    ("run", &["disposition", "config", "journal", "telemetry", "wasm"]),
    ("operate", &["disposition", "config", "journal", "run"]),
    ("worker", &["disposition", "config", "journal", "operate", "run", "telemetry", "wasm"]),
    ("server", &["disposition", "config", "journal", "operate", "run", "telemetry", "wasm", "worker"]),
];

/// The layers named by `crate::…` paths in every `.rs` file under `dir`.
fn used_layers(dir: &Path, found: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).expect("a layer folder") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            used_layers(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let source = std::fs::read_to_string(&path).expect("a source file");
            for (index, _) in source.match_indices("crate::") {
                let name: String =
                    source[index + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                let name = if name == "Disposition" { "disposition".to_string() } else { name };
                found.insert(name);
            }
        }
    }
}

#[test]
fn every_layer_uses_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layers: BTreeSet<&str> = ALLOWED.iter().map(|(layer, _)| *layer).collect();
    for (layer, allowed) in ALLOWED {
        let mut used = BTreeSet::new();
        used_layers(&src.join(layer), &mut used);
        let upward: Vec<&String> = used
            .iter()
            .filter(|name| name.as_str() != layer && (layers.contains(name.as_str()) || *name == "disposition"))
            .filter(|name| !allowed.contains(&name.as_str()))
            .collect();
        assert!(upward.is_empty(), "{layer} uses {upward:?}, which may not be used from it (allowed: {allowed:?})");
    }
    // The checker sees what it should: `server` uses `operate`.
    let mut used = BTreeSet::new();
    used_layers(&src.join("server"), &mut used);
    assert!(used.contains("operate"), "{used:?}");
}
