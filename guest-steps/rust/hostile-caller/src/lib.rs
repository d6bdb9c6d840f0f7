//! Calls one `guests:hostile` step and hands back what the host returned, so
//! tests see the exact variant a workflow gets (`huge-result` returns the
//! length only, so the workflow's own output stays small).

wit_bindgen::generate!({
    world: "guests:hostile-caller/hostile-caller",
    path: ["../../../wit", "../../wit/hostile.wit", "wit"],
    generate_all,
});

use guests::hostile::steps;

struct Caller;

impl Guest for Caller {
    fn spin() -> Result<u64, StepError> {
        steps::spin()
    }

    fn hog_memory() -> Result<u64, StepError> {
        steps::hog_memory()
    }

    fn recurse(depth: u64) -> Result<u64, StepError> {
        steps::recurse(depth)
    }

    fn huge_result(bytes: u64) -> Result<u64, StepError> {
        steps::huge_result(bytes).map(|text| text.len() as u64)
    }

    fn shout(bytes: u64) -> Result<u64, StepError> {
        steps::shout(bytes)
    }

    fn read_file(path: String) -> Result<String, StepError> {
        steps::read_file(&path)
    }

    fn write_file(path: String, contents: String) -> Result<u64, StepError> {
        steps::write_file(&path, &contents)
    }

    fn write_then_panic(path: String) -> Result<u64, StepError> {
        steps::write_then_panic(&path)
    }

    fn list_env() -> Result<Vec<String>, StepError> {
        steps::list_env()
    }

    fn connect(address: String) -> Result<String, StepError> {
        steps::connect(&address)
    }

    fn fetch(url: String) -> Result<String, StepError> {
        steps::fetch(&url)
    }

    fn huge_bytes(bytes: u64) -> Result<u64, StepError> {
        steps::huge_bytes(bytes).map(|list| list.len() as u64)
    }

    fn log_flood(bytes: u64, times: u32) -> Result<u64, StepError> {
        steps::log_flood(bytes, times)
    }

    fn make_link(target: String, link: String) -> Result<u64, StepError> {
        steps::make_link(&target, &link)
    }

    fn nap(ms: u64) -> Result<u64, StepError> {
        steps::nap(ms)
    }
}

export!(Caller);
