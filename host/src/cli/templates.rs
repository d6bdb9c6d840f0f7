//! Authoring from nothing: `host wit` writes the `stepbox:runtime` WIT
//! package where WIT tools find it, and `host new` creates step projects (in
//! Rust, Python, JavaScript or C) and workflow projects (in Rust, Python or
//! JavaScript) that build with the one command their README shows and run
//! through `host run`.

use std::fs;
use std::path::{Component, Path, PathBuf};

use clap::{Subcommand, ValueEnum};
use stepbox::wasm::RUNTIME_WIT;

use crate::exit;
use crate::output;

/// Where WIT tools (wit-bindgen, componentize-py, componentize-js) find the runtime package.
const RUNTIME_DEP: &str = "deps/stepbox-runtime/runtime.wit";

/// `host new …`.
#[derive(Subcommand)]
pub enum NewCommand {
    /// A step component: a WIT interface following the step convention and its implementation.
    Step {
        /// The step's name (lower-case, dashes allowed); also its WIT package (NAME:steps).
        name: String,
        /// The language to write it in.
        #[arg(long, value_enum)]
        lang: Lang,
        /// Where to create it [default: ./NAME].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// A workflow component that sleeps, waits for a message, calls a step and falls back when its attempts run out.
    Workflow {
        /// The workflow's name (lower-case, dashes allowed).
        name: String,
        /// The language to write it in (rust, python or js).
        #[arg(long, value_enum, default_value = "rust")]
        lang: Lang,
        /// A step project (from `host new step`) to call; without it, a Rust workflow implements its step itself.
        #[arg(long, value_name = "STEP_DIR")]
        step: Option<PathBuf>,
        /// Where to create it [default: ./NAME].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// The languages steps (all four) and workflows (Rust, Python, JavaScript) can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
    C,
}

impl Lang {
    fn name(self) -> &'static str {
        match self {
            Self::Rust => "Rust",
            Self::Python => "Python",
            Self::Js => "JavaScript",
            Self::C => "C",
        }
    }
}

/// `host wit --out DIR`. Refuses a folder whose own WIT files already
/// define the package (stepbox's source tree): a second copy in its deps
/// makes every WIT tool see the package twice.
pub fn wit(out: &Path) -> u8 {
    if let Some(defining) = defines_runtime(out) {
        return fail(&format!(
            "{} already defines package stepbox:runtime; a copy in {} would define it twice. Give --out the WIT \
             folder of your own project",
            defining.display(),
            out.join(RUNTIME_DEP).display()
        ));
    }
    let path = out.join(RUNTIME_DEP);
    match write(&path, RUNTIME_WIT) {
        Ok(()) => {
            output::line(&format!("wrote {} (package stepbox:runtime@0.1.0)", path.display()));
            0
        }
        Err(message) => fail(&message),
    }
}

/// The WIT file directly in `folder` that declares `package stepbox:runtime`, if any.
fn defines_runtime(folder: &Path) -> Option<std::path::PathBuf> {
    let entries = std::fs::read_dir(folder).ok()?;
    entries.filter_map(Result::ok).map(|entry| entry.path()).find(|path| {
        path.extension().is_some_and(|extension| extension == "wit")
            && std::fs::read_to_string(path)
                .is_ok_and(|text| text.lines().any(|line| line.trim_start().starts_with("package stepbox:runtime")))
    })
}

/// `host new step|workflow`.
pub fn new(command: &NewCommand) -> u8 {
    let result = match command {
        NewCommand::Step { name, lang, dir } => new_step(name, *lang, dir.as_deref()),
        NewCommand::Workflow { name, lang, step, dir } => new_workflow(name, *lang, step.as_deref(), dir.as_deref()),
    };
    match result {
        Ok(()) => 0,
        Err(message) => fail(&message),
    }
}

fn fail(message: &str) -> u8 {
    output::error(message);
    exit::USAGE
}

/// The names a template's placeholders take.
struct Names {
    name: String,
    snake: String,
    upper: String,
    step: String,
    step_snake: String,
    step_arg: String,
}

impl Names {
    fn render(&self, template: &str) -> String {
        template
            .replace("__STEP_SNAKE__", &self.step_snake)
            .replace("__STEP_ARG__", &self.step_arg)
            .replace("__STEP__", &self.step)
            .replace("__SNAKE__", &self.snake)
            .replace("__UPPER__", &self.upper)
            .replace("__NAME__", &self.name)
    }
}

fn names(name: &str, step: &str, step_arg: String) -> Result<Names, String> {
    let valid = |name: &str| {
        let mut chars = name.chars();
        matches!(chars.next(), Some('a'..='z'))
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.ends_with('-')
            && !name.contains("--")
    };
    if !valid(name) {
        return Err(format!(
            "{name:?} cannot name a component: use lower-case letters, digits and single dashes, starting with a \
             letter (it becomes a WIT package name, e.g. `hello-world`)"
        ));
    }
    let snake = |name: &str| name.replace('-', "_");
    Ok(Names {
        name: name.to_string(),
        snake: snake(name),
        upper: snake(name).to_uppercase(),
        step: step.to_string(),
        step_snake: snake(step),
        step_arg,
    })
}

fn write(path: &Path, contents: &str) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|error| format!("cannot create {}: {error}", parent.display()))?;
    }
    fs::write(path, contents).map_err(|error| format!("cannot write {}: {error}", path.display()))
}

/// The project folder: `dir` or `./NAME`, which must not hold anything yet.
fn project_dir(name: &str, dir: Option<&Path>) -> Result<PathBuf, String> {
    let dir = dir.map_or_else(|| PathBuf::from(name), Path::to_path_buf);
    if dir.exists() && fs::read_dir(&dir).map(|mut entries| entries.next().is_some()).unwrap_or(true) {
        return Err(format!("{} exists and is not empty; pick another name or --dir", dir.display()));
    }
    Ok(dir)
}

/// Keeps or drops the lines between `local-step:start` and `local-step:end` markers (the markers always go).
fn local_step(text: &str, keep: bool) -> String {
    let mut inside = false;
    let mut kept = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("// local-step:start") {
            inside = true;
        } else if line.trim_start().starts_with("// local-step:end") {
            inside = false;
        } else if keep || !inside {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    kept
}

/// The command between `<!-- build -->` markers of a generated README, for the closing message.
fn build_command(readme: &str) -> String {
    readme
        .split("<!-- build -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- /build -->").next())
        .map(|block| block.lines().filter(|line| !line.starts_with("```") && !line.trim().is_empty()).collect())
        .unwrap_or_default()
}

const STEP_WIT: &str = include_str!("../../templates/step.wit");
const GITIGNORE: &str = "target/\nnode_modules/\n*.wasm\nstepbox.db*\n";

fn new_step(name: &str, lang: Lang, dir: Option<&Path>) -> Result<(), String> {
    let names = names(name, name, String::new())?;
    let dir = project_dir(name, dir)?;
    let files: Vec<(String, &str)> = match lang {
        Lang::Rust => vec![
            ("Cargo.toml".into(), include_str!("../../templates/rust-step/Cargo.toml")),
            ("src/lib.rs".into(), include_str!("../../templates/rust-step/src/lib.rs")),
            ("README.md".into(), include_str!("../../templates/rust-step/README.md")),
        ],
        Lang::Python => vec![
            ("app.py".into(), include_str!("../../templates/python-step/app.py")),
            ("README.md".into(), include_str!("../../templates/python-step/README.md")),
        ],
        Lang::Js => vec![
            ("package.json".into(), include_str!("../../templates/js-step/package.json")),
            (format!("{name}.js"), include_str!("../../templates/js-step/step.js")),
            ("README.md".into(), include_str!("../../templates/js-step/README.md")),
        ],
        Lang::C => vec![
            (format!("{name}.c"), include_str!("../../templates/c-step/step.c")),
            ("README.md".into(), include_str!("../../templates/c-step/README.md")),
        ],
    };
    write(&dir.join("wit").join(format!("{name}.wit")), &names.render(STEP_WIT))?;
    write(&dir.join("wit").join(RUNTIME_DEP), RUNTIME_WIT)?;
    write(&dir.join(".gitignore"), GITIGNORE)?;
    let mut readme = String::new();
    for (file, template) in files {
        let text = names.render(template);
        if file == "README.md" {
            readme.clone_from(&text);
        }
        write(&dir.join(file), &text)?;
    }
    output::line(&format!(
        "created the step {name} ({}:steps/steps.greet) in {}; build it with:\n  cd {} && {}",
        name,
        dir.display(),
        dir.display(),
        build_command(&readme)
    ));
    Ok(())
}

fn new_workflow(name: &str, lang: Lang, step_dir: Option<&Path>, dir: Option<&Path>) -> Result<(), String> {
    if step_dir.is_none() && matches!(lang, Lang::Python | Lang::Js | Lang::C) {
        return Err(format!(
            "a workflow in {} calls a step of another component: create one with `host new step greet --lang \
             python` (or rust, js, c) and pass it with --step greet",
            lang.name()
        ));
    }
    if lang == Lang::C {
        return Err("workflows are written in Rust, Python or JavaScript (steps in C too)".into());
    }
    let dir = project_dir(name, dir)?;
    let (step, step_wit, step_arg) = match step_dir {
        Some(step_dir) => {
            let (package, wit) = step_package(step_dir)?;
            let wasm = relative(&dir, &step_dir.join(format!("{package}.wasm")));
            (package, wit, format!(" --step {}", wasm.display()))
        }
        None => (name.to_string(), names(name, name, String::new())?.render(STEP_WIT), String::new()),
    };
    let names = names(name, &step, step_arg)?;
    let keep = step_dir.is_none();
    write(
        &dir.join("wit/workflow.wit"),
        &local_step(&names.render(include_str!("../../templates/workflow/workflow.wit")), keep),
    )?;
    write(&dir.join("wit").join(format!("deps/{step}-steps/steps.wit")), &step_wit)?;
    write(&dir.join("wit").join(RUNTIME_DEP), RUNTIME_WIT)?;
    let files: Vec<(&str, &str)> = match lang {
        Lang::Python => vec![
            ("app.py", include_str!("../../templates/python-workflow/app.py")),
            ("README.md", include_str!("../../templates/python-workflow/README.md")),
        ],
        Lang::Js => vec![
            ("workflow.js", include_str!("../../templates/js-workflow/workflow.js")),
            ("package.json", include_str!("../../templates/js-workflow/package.json")),
            ("README.md", include_str!("../../templates/js-workflow/README.md")),
        ],
        Lang::Rust | Lang::C => vec![
            ("Cargo.toml", include_str!("../../templates/workflow/Cargo.toml")),
            ("src/lib.rs", include_str!("../../templates/workflow/src/lib.rs")),
            ("README.md", include_str!("../../templates/workflow/README.md")),
        ],
    };
    let mut readme = String::new();
    for (file, template) in files {
        let text = local_step(&names.render(template), keep);
        if file == "README.md" {
            readme.clone_from(&text);
        }
        write(&dir.join(file), &text)?;
    }
    write(&dir.join(".gitignore"), GITIGNORE)?;
    output::line(&format!(
        "created the {} workflow {name} (calling {step}:steps/steps.greet) in {}; build it with:\n  cd {} && {}",
        lang.name(),
        dir.display(),
        dir.display(),
        build_command(&readme)
    ));
    Ok(())
}

/// The WIT package a step project declares (`NAME` of `package NAME:steps;`) and its WIT text.
fn step_package(step_dir: &Path) -> Result<(String, String), String> {
    let wit_dir = step_dir.join("wit");
    let entries = fs::read_dir(&wit_dir)
        .map_err(|error| format!("{} is not a step project from `host new step` ({error})", step_dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|extension| extension == "wit") {
            let text = fs::read_to_string(&path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
            let package = text.lines().find_map(|line| line.trim().strip_prefix("package ")?.strip_suffix(":steps;"));
            if let Some(package) = package {
                return Ok((package.to_string(), text));
            }
        }
    }
    Err(format!(
        "{} declares no `package NAME:steps;` WIT package; create steps with `host new step`",
        wit_dir.display()
    ))
}

/// `to` as seen from `from` (both relative to the current directory, or absolute).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let absolute = |path: &Path| {
        let path = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir().unwrap_or_default().join(path)
        };
        path.components().fold(PathBuf::new(), |mut normal, part| {
            match part {
                Component::ParentDir => {
                    normal.pop();
                }
                Component::CurDir => {}
                other => normal.push(other),
            }
            normal
        })
    };
    let (from, to) = (absolute(from), absolute(to));
    let common = from.components().zip(to.components()).take_while(|(a, b)| a == b).count();
    let mut path: PathBuf = from.components().skip(common).map(|_| Component::ParentDir).collect();
    path.extend(to.components().skip(common));
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_packages_identifiers_and_constants() {
        let names = names("hello-world", "hello-world", String::new()).unwrap();
        assert_eq!(
            names.render("__NAME__:steps __SNAKE__ __UPPER__ exports___SNAKE___steps"),
            "hello-world:steps hello_world HELLO_WORLD exports_hello_world_steps"
        );
        for bad in ["Hello", "1st", "a--b", "trailing-", "under_score", ""] {
            assert!(super::names(bad, bad, String::new()).is_err(), "{bad}");
        }
    }

    #[test]
    fn local_step_blocks_are_kept_or_dropped() {
        let text = "a\n// local-step:start\nb\n// local-step:end\nc\n";
        assert_eq!(local_step(text, true), "a\nb\nc\n");
        assert_eq!(local_step(text, false), "a\nc\n");
    }

    #[test]
    fn relative_paths_between_sibling_projects() {
        assert_eq!(relative(Path::new("greeter"), Path::new("hello/hello.wasm")), PathBuf::from("../hello/hello.wasm"));
        assert_eq!(relative(Path::new("a/b"), Path::new("a/c/x.wasm")), PathBuf::from("../c/x.wasm"));
    }
}
