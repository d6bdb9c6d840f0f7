//! Builds a C step component without the wit-bindgen and wasm-tools CLIs:
//! C bindings from `wit-bindgen-c`, a core module from clang for
//! `wasm32-wasi` (reactor), then a component with `wit-component` and the
//! WASI preview1 reactor adapter matching the host's wasmtime.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use wit_bindgen_core::Files;
use wit_bindgen_core::wit_parser::Resolve;
use wit_component::ComponentEncoder;

/// What to build.
pub struct CComponent<'a> {
    /// A WIT folder (the step's WIT, with the runtime package under `deps/`).
    pub wit: &'a Path,
    /// The world, e.g. `guests:flaky/flaky`.
    pub world: &'a str,
    /// The C sources implementing the world's exports.
    pub sources: &'a [PathBuf],
    /// Scratch folder for bindings and the core module.
    pub work_dir: &'a Path,
    /// The component to write.
    pub output: &'a Path,
}

/// The clang to use: `$CC_WASM` or Debian's `clang-16`.
pub fn clang() -> String {
    std::env::var("CC_WASM").unwrap_or_else(|_| "clang-16".into())
}

/// Builds the component; errors say which tool failed and what to install.
pub fn build(spec: &CComponent<'_>) -> anyhow::Result<()> {
    let bindings = spec.work_dir.join("bindings");
    fs::create_dir_all(&bindings)?;
    let mut resolve = Resolve::default();
    let (package, _) =
        resolve.push_path(spec.wit).with_context(|| format!("reading WIT from {}", spec.wit.display()))?;
    let world = resolve.select_world(&[package], Some(spec.world))?;
    let mut files = Files::default();
    wit_bindgen_c::Opts::default().build().generate(&mut resolve, world, &mut files)?;
    let mut inputs = Vec::new();
    for (name, contents) in files.iter() {
        let path = bindings.join(name);
        fs::write(&path, contents)?;
        if name.ends_with(".c") || name.ends_with(".o") {
            inputs.push(path);
        }
    }

    let core = spec.work_dir.join("core.wasm");
    let status = Command::new(clang())
        .args(["--target=wasm32-wasi", "-mexec-model=reactor", "-O2", "-Wall", "-Werror", "-I"])
        .arg(&bindings)
        .args(spec.sources)
        .args(&inputs)
        .arg("-o")
        .arg(&core)
        .status()
        .with_context(|| {
            format!(
                "cannot run {}; install Debian's clang-16 lld-16 wasi-libc libclang-rt-16-dev-wasm32 \
                 (or point CC_WASM at a clang with a wasm32-wasi sysroot)",
                clang()
            )
        })?;
    if !status.success() {
        bail!("{} failed to compile {:?} (see its output above)", clang(), spec.sources);
    }

    let module = fs::read(&core)?;
    let component = ComponentEncoder::default()
        .validate(true)
        .module(&module)?
        .adapter(
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )?
        .encode()
        .context("turning the core module into a component")?;
    fs::write(spec.output, component)?;
    Ok(())
}
