//! Starts and awaits child workflows for the tests (see wit/family.wit).

wit_bindgen::generate!({
    world: "guests:family/family",
    path: ["../../../wit", "../../wit/hostile.wit", "../../wit/family.wit"],
    generate_all,
});

use guests::hostile::steps;
use stepbox::runtime::workflow_context::{self as workflow, ChildFailure, ChildOptions};

struct Family;

/// "STATUS: MESSAGE" of a child that did not succeed.
fn failed(failure: ChildFailure) -> String {
    format!("{}: {}", failure.status, failure.message)
}

impl Guest for Family {
    fn child(index: u32, ms: u64) -> u32 {
        match steps::nap(ms) {
            Ok(_) => index * 10,
            Err(error) => panic!("the nap failed: {error:?}"),
        }
    }

    fn parent(count: u32, ms: u64) -> Result<u32, String> {
        let options = ChildOptions { component: None, id: None, queue: None, detached: false };
        let ids = (0..count)
            .map(|index| workflow::start_child("child", &format!("[{index}, {ms}]"), &options))
            .collect::<Result<Vec<_>, _>>()?;
        let mut sum = 0;
        for id in ids {
            let output = workflow::await_child(&id).map_err(failed)?;
            sum += output.parse::<u32>().map_err(|error| format!("child {id} returned {output}: {error}"))?;
        }
        Ok(sum)
    }

    fn try_child(entry: String, arguments: String, id: String, detached: bool) -> Result<String, String> {
        let id = Some(id).filter(|id| !id.is_empty());
        let options = ChildOptions { component: None, id, queue: None, detached };
        let child = workflow::start_child(&entry, &arguments, &options)?;
        if detached {
            return Ok(child);
        }
        workflow::await_child(&child).map_err(failed)
    }

    fn adopt(component: String, entry: String, arguments: String) -> Result<String, String> {
        let options = ChildOptions { component: Some(component), id: None, queue: None, detached: false };
        let child = workflow::start_child(&entry, &arguments, &options)?;
        workflow::await_child(&child).map_err(failed)
    }
}

export!(Family);
