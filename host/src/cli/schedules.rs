//! `host schedule set|list|pause|resume|delete`: workflows started on every
//! tick of a cron expression, fired by whichever worker is there.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use stepbox::config::parse_duration;
use stepbox::journal::{CatchUp, DEFAULT_QUEUE, Journal};
use stepbox::operate::{self, ScheduleList};
use stepbox::worker::{Client, ScheduleRequest};

use crate::PolicyArgs;
use crate::exit::{fail, refuse};
use crate::output::{self, Format};

/// `host schedule`.
#[derive(Subcommand)]
pub enum ScheduleCommand {
    /// Start WORKFLOW on every tick of a cron expression (replaces a schedule of the same name).
    Set(Box<SetArgs>),
    /// List schedules: expression, next tick, paused.
    List,
    /// Fire nothing until resumed.
    Pause {
        /// The schedule.
        name: String,
    },
    /// Fire again, from the next tick after now.
    Resume {
        /// The schedule.
        name: String,
    },
    /// Delete a schedule (the workflows it started stay).
    Delete {
        /// The schedule.
        name: String,
    },
}

/// `host schedule set`'s arguments.
#[derive(Args)]
pub struct SetArgs {
    /// The schedule's name: each tick's workflow is NAME@TICK.
    name: String,
    /// The workflow component (.wasm).
    workflow: PathBuf,
    /// Arguments of the entry function, one WAVE value each, for every tick.
    #[arg(allow_negative_numbers = true)]
    args: Vec<String>,
    /// When: 5 cron fields (minute hour day-of-month month day-of-week), or 6 with seconds first.
    #[arg(long, value_name = "EXPR")]
    cron: String,
    /// The IANA time zone the expression is read in.
    #[arg(long, default_value = "UTC", value_name = "TZ")]
    timezone: String,
    /// Ticks missed while no worker ran: skip them (fire none more than a minute late), fire the latest once, or fire all.
    #[arg(long, default_value = "latest", value_parser = parse_catch_up, value_name = "skip|latest|all")]
    catch_up: CatchUp,
    /// A component that exports step interfaces the workflow imports (repeatable).
    #[arg(long = "step", value_name = "FILE")]
    steps: Vec<PathBuf>,
    /// The queue each tick's workflow is submitted to.
    #[arg(long, default_value = DEFAULT_QUEUE)]
    queue: String,
    /// Lower runs first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i32,
    /// Each tick's workflow ends `timed-out` if it has not finished this long after its tick.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    workflow_timeout: Option<Duration>,
    /// The exported function to call, when the workflow exports several.
    #[arg(long, value_name = "NAME")]
    invoke: Option<String>,
    /// Manifest to use instead of WORKFLOW's sibling `.toml`.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Where compiled components are cached [default: ~/.cache/stepbox].
    #[arg(long, env = "STEPBOX_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
}

fn parse_catch_up(text: &str) -> Result<CatchUp, String> {
    text.parse().map_err(|_| format!("invalid catch-up {text:?}: use skip, latest or all"))
}

/// `host schedule`.
pub async fn schedule(command: ScheduleCommand, journal: &str, format: Format) -> u8 {
    match command {
        ScheduleCommand::Set(args) => set(*args, journal, format).await,
        ScheduleCommand::List => {
            let journal = match Journal::open_existing(journal).await {
                Ok(journal) => journal,
                Err(error) => return fail(&error),
            };
            match operate::schedules(&journal).await {
                Ok(list) => print(&list, format),
                Err(error) => fail(&error),
            }
        }
        ScheduleCommand::Pause { name } => pause(&name, true, journal, format).await,
        ScheduleCommand::Resume { name } => pause(&name, false, journal, format).await,
        ScheduleCommand::Delete { name } => {
            let journal = match Journal::open_existing(journal).await {
                Ok(journal) => journal,
                Err(error) => return fail(&error),
            };
            match operate::delete_schedule(&journal, &name).await {
                Ok(()) => {
                    if format == Format::Json {
                        output::json(&serde_json::json!({ "deleted": name }));
                    } else {
                        output::line(&format!("deleted schedule {name}"));
                    }
                    0
                }
                Err(error) => fail(&error),
            }
        }
    }
}

async fn set(args: SetArgs, journal: &str, format: Format) -> u8 {
    let spec = crate::execution::spec(
        &args.workflow,
        &args.steps,
        args.invoke.as_deref(),
        args.config.as_deref(),
        &args.policy,
    );
    let spec = match spec {
        Ok(spec) => spec,
        Err(message) => return refuse(&message),
    };
    let engine = match stepbox::wasm::new_engine() {
        Ok(engine) => engine,
        Err(error) => return refuse(&format!("cannot start the WebAssembly engine: {error:#}")),
    };
    let loader =
        stepbox::wasm::ComponentLoader::new(&engine, args.cache_dir.clone().or_else(stepbox::wasm::default_cache_dir));
    let journal = match Journal::open(journal).await {
        Ok(journal) => journal,
        Err(error) => return fail(&error),
    };
    let client = Client::new(journal, loader);
    // The expression and the zone are checked before any component is loaded or stored.
    if let Err(message) = stepbox::config::CronSchedule::parse(&args.cron, &args.timezone) {
        return refuse(&message);
    }
    let submittable = match client.prepare(&spec).await {
        Ok(submittable) => submittable,
        Err(error) => return fail(&error),
    };
    let request = ScheduleRequest {
        name: args.name.clone(),
        cron: args.cron.clone(),
        timezone: args.timezone.clone(),
        catch_up: args.catch_up,
        arguments: args.args.clone(),
        queue: Some(args.queue.clone()),
        priority: args.priority,
        timeout: args.workflow_timeout,
    };
    match client.schedule(&submittable, &request).await {
        Ok(schedule) => {
            match format {
                Format::Json => output::json(&schedule),
                Format::Text => output::line(&format!(
                    "schedule {} set: {} ({}), next tick {}, on queue {}",
                    schedule.name, schedule.cron, schedule.timezone, schedule.next_tick_at, schedule.queue
                )),
            }
            0
        }
        Err(error) => fail(&error),
    }
}

async fn pause(name: &str, paused: bool, journal: &str, format: Format) -> u8 {
    let journal = match Journal::open_existing(journal).await {
        Ok(journal) => journal,
        Err(error) => return fail(&error),
    };
    match operate::pause_schedule(&journal, name, paused).await {
        Ok(list) => print(&list, format),
        Err(error) => fail(&error),
    }
}

fn print(list: &ScheduleList, format: Format) -> u8 {
    match format {
        Format::Json => output::json(list),
        Format::Text => output::print(&crate::report::schedule_list(&list.schedules)),
    }
    0
}
