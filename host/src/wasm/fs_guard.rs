//! What granted directories must not become: a way out. cap-std already
//! keeps a step's file operations inside its grants, but a symbolic link a
//! step creates stays on the host after the attempt, where the next program
//! that reads the step's output would follow it. So a step may only create
//! links whose target stays below the link: relative, without `..`.

use std::path::{Component, Path};

use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::WasiFilesystemView as _;
use wasmtime_wasi::p2::bindings::filesystem::types::{Descriptor, ErrorCode, HostDescriptor as _};

use super::sandbox::GuestState;

/// The filesystem interface whose `symlink-at` is guarded (what wasmtime-wasi defines).
const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// Whether a link to `target` can only reach what lies below the link itself.
pub fn stays_below(target: &str) -> bool {
    !target.is_empty()
        && Path::new(target).components().all(|part| matches!(part, Component::Normal(_) | Component::CurDir))
}

/// Replaces `descriptor.symlink-at` in `linker` (which must already have WASI)
/// with one that refuses targets leaving the link's directory.
pub fn add_to_linker<C: Send + 'static>(linker: &mut Linker<GuestState<C>>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.instance(FILESYSTEM_TYPES)?.func_wrap_async(
        "[method]descriptor.symlink-at",
        |mut store, (descriptor, target, link): (Resource<Descriptor>, String, String)| {
            Box::new(async move {
                if !stays_below(&target) {
                    tracing::debug!(source = "host", "refused a symbolic link {link:?} -> {target:?}");
                    return Ok((Err(ErrorCode::NotPermitted),));
                }
                let result = store.data_mut().filesystem().symlink_at(descriptor, target, link).await;
                match result {
                    Ok(()) => Ok((Ok(()),)),
                    Err(error) => error.downcast().map(|code| (Err(code),)),
                }
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::stays_below;

    #[test]
    fn only_targets_below_the_link_are_allowed() {
        for fine in ["file", "sub/file", "./sub/file"] {
            assert!(stays_below(fine), "{fine}");
        }
        for escape in ["../secret", "sub/../../x", "/etc/passwd", "", "a/.."] {
            assert!(!stays_below(escape), "{escape}");
        }
    }
}
