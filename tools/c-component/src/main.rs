//! `stepbox-c-component --wit DIR --world WORLD --out FILE SOURCE.c…`: builds
//! a C step component (bindings from wit-bindgen's C generator, clang for
//! wasm32-wasi, the preview1 reactor adapter), as the test build does.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Builds a C step component.
#[derive(Parser)]
#[command(name = "stepbox-c-component", version, about)]
struct Args {
    /// The WIT folder (the step's WIT, with the runtime package under deps/: `host wit` writes it).
    #[arg(long, value_name = "DIR")]
    wit: PathBuf,
    /// The world to build, e.g. hello:steps/step.
    #[arg(long)]
    world: String,
    /// The component to write.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// The C sources implementing the world's exports.
    #[arg(required = true)]
    sources: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let work = match tempfile::tempdir() {
        Ok(work) => work,
        Err(error) => {
            eprintln!("error: cannot make a scratch folder: {error}");
            return ExitCode::from(2);
        }
    };
    let spec = stepbox_c_component::CComponent {
        wit: &args.wit,
        world: &args.world,
        sources: &args.sources,
        work_dir: work.path(),
        output: &args.out,
    };
    match stepbox_c_component::build(&spec) {
        Ok(()) => {
            println!("wrote {}", args.out.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
