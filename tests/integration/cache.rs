//! The on-disk compile cache: a second run of the same file does not recompile.

use crate::support::{Scratch, artifacts, host_with_env};

#[test]
fn the_second_run_loads_the_compiled_component_from_the_cache() {
    let scratch = Scratch::new();
    let cache = scratch.path().join("cache");
    let journal = scratch.journal();
    let args =
        [artifacts::RETRY_DEMO, "--step", artifacts::FLAKY, "--invoke", "reject", r#""no""#, "--journal", &journal];
    let env = [("STEPBOX_CACHE_DIR", cache.to_str().unwrap()), ("RUST_LOG", "stepbox=debug")];

    let cold = host_with_env(scratch.path(), &args, &env);
    cold.success();
    assert_eq!(cold.count("(host) compiled "), 2, "both components compiled on the cold run:\n{}", cold.stderr);
    let entries = std::fs::read_dir(&cache).unwrap().count();
    assert_eq!(entries, 2, "one cache entry per component");

    let warm = host_with_env(scratch.path(), &args, &env);
    warm.success();
    assert_eq!(warm.count("(host) compiled "), 0, "nothing recompiled:\n{}", warm.stderr);
    assert_eq!(warm.count("from the compile cache"), 2);
}
