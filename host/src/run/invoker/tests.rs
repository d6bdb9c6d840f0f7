//! The invoker against a scripted sandbox and a simulated clock.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::json;
use wasmtime::component::types::ComponentItem;

use super::*;
use crate::config::SettingsLayers;
use crate::journal::{Lease, NewWorkflow, Timestamp, WorkflowStatus};
use crate::run::children::ChildPlan;
use crate::run::clock::SimClock;
use crate::run::concurrent::{Calls, Steps};
use crate::run::context::{Running, WorkflowContext, WorkflowInfo};
use crate::run::deployment::{ComponentRef, Deployment};
use crate::run::values::to_wave;
use crate::wasm::{self, ComponentLoader};

/// Attempts that return what the test scripted, at the simulated time they ran.
struct Script {
    clock: Arc<SimClock>,
    outcomes: Mutex<VecDeque<Result<Val, CallFailure>>>,
    ran_at: Mutex<Vec<i64>>,
    numbers: Mutex<Vec<u32>>,
    /// Simulated time each attempt takes.
    duration: Duration,
    /// Asked to stop at the end of the first attempt (a cancel arriving during it).
    cancel_during_first: Mutex<Option<Interrupt>>,
}

impl Attempts for Arc<Script> {
    async fn attempt(&self, _: &StepTarget, identity: StepIdentity, _: &[Val], interrupt: &Interrupt) -> AttemptReport {
        self.ran_at.lock().unwrap().push(self.clock.now().millis());
        self.numbers.lock().unwrap().push(identity.attempt);
        self.clock.advance(self.duration);
        let result = match interrupt.reason() {
            Some(StopReason::Cancelled) => {
                Err(CallFailure { kind: FailureKind::Cancelled, message: "cancelled".into() })
            }
            _ => self.outcomes.lock().unwrap().pop_front().expect("a scripted outcome"),
        };
        if let Some(cancel) = self.cancel_during_first.lock().unwrap().take() {
            cancel.stop(StopReason::Cancelled);
        }
        AttemptReport { result, stdout: String::new(), stderr: String::new(), log_note: None }
    }
}

fn err(case: &str, payload: Val) -> Result<Val, CallFailure> {
    Ok(Val::Result(Err(Some(Box::new(Val::Variant(case.into(), Some(Box::new(payload))))))))
}

fn failed() -> Result<Val, CallFailure> {
    err("failed", Val::String("boom".into()))
}

fn ok(n: u32) -> Result<Val, CallFailure> {
    Ok(Val::Result(Ok(Some(Box::new(Val::U32(n))))))
}

/// The `noop` step of the bench guests: a real target whose code the script stands in for.
fn target() -> StepTarget {
    let engine = wasm::new_engine().unwrap();
    let component = ComponentLoader::new(&engine, None).load(stepbox_test_artifacts::NOOP.as_ref()).unwrap().component;
    let pre = wasm::step_linker(&engine).unwrap().instantiate_pre(&component).unwrap();
    let interface = component.get_export_index(None, "guests:bench/steps").unwrap();
    let export = component.get_export_index(Some(&interface), "noop").unwrap();
    let ComponentItem::ComponentInstance(steps) =
        component.component_type().get_export(&engine, "guests:bench/steps").unwrap().ty
    else {
        panic!("steps is an instance")
    };
    let ComponentItem::ComponentFunc(noop) = steps.get_export(&engine, "noop").unwrap().ty else { panic!() };
    let name = StepName::new("guests:bench/steps", "noop");
    let source = crate::config::StepSource { step: name.clone(), component: "noop.wasm".into() };
    let settings = SettingsLayers::default().resolve(&source).unwrap();
    let result_type = noop.results().next().unwrap();
    StepTarget { name, pre, export, result_type, func: noop, settings }
}

/// The started calls of a workflow that imports no steps (these tests make their calls themselves).
fn no_calls(journal: &Journal) -> Calls {
    let engine = wasm::new_engine().unwrap();
    let invoker = Arc::new(Invoker::new(journal.clone(), crate::wasm::Sandbox::new(&engine), SystemClock));
    Calls::new(Arc::new(Steps { invoker, targets: Vec::new() }), 16)
}

/// A workflow with no exports to start children of (these tests start none).
fn no_children() -> ChildPlan {
    let workflow = ComponentRef { path: "w.wasm".into(), digest: String::new() };
    let deployment = Deployment {
        workflow,
        steps: Vec::new(),
        entry: "run".into(),
        settings: Default::default(),
        max_concurrent_calls: 16,
    };
    let loader = ComponentLoader::new(&wasm::new_engine().unwrap(), None);
    ChildPlan::new(deployment, Vec::new(), "w.wasm".into(), loader)
}

struct Setup {
    _dir: tempfile::TempDir,
    journal: Journal,
    clock: Arc<SimClock>,
    script: Arc<Script>,
    invoker: Invoker<Arc<Script>, Arc<SimClock>>,
    lease: Lease,
    interrupt: Interrupt,
}

const START: i64 = 1_000_000;

async fn setup(outcomes: Vec<Result<Val, CallFailure>>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&dir.path().join("j.db").display().to_string()).await.unwrap();
    let workflow = NewWorkflow {
        id: "w".into(),
        name: "w".into(),
        component: "w.wasm".into(),
        component_digest: "d".into(),
        entry: "run".into(),
        input: "()".into(),
        input_json: json!([]),
        options: json!({}),
        created_at: Timestamp::now(),
    };
    let lease = journal.create_workflow(&workflow, "e", Duration::from_secs(3600)).await.unwrap().unwrap();
    let clock = Arc::new(SimClock::at(Timestamp::from_millis(START)));
    let script = Arc::new(Script {
        clock: clock.clone(),
        outcomes: Mutex::new(outcomes.into()),
        ran_at: Mutex::default(),
        numbers: Mutex::default(),
        duration: Duration::from_millis(10),
        cancel_during_first: Mutex::default(),
    });
    let invoker = Invoker::new(journal.clone(), script.clone(), clock.clone());
    let interrupt = Interrupt::default();
    Setup { _dir: dir, journal, clock, script, invoker, lease, interrupt }
}

impl Setup {
    fn ran_at(&self) -> Vec<i64> {
        self.script.ran_at.lock().unwrap().iter().map(|at| at - START).collect()
    }

    /// Call 1 of the workflow, as a fresh run or a resume (replaying the journal) makes it.
    async fn slot(&self, interrupt: &Interrupt, resumed: bool, park_after: Option<Duration>) -> CallSlot {
        let history = if resumed { self.journal.step_calls("w").await.unwrap() } else { Vec::new() };
        let running = Running {
            lease: self.lease.clone(),
            interrupt: interrupt.clone(),
            park_after,
            journal: self.journal.clone(),
            info: WorkflowInfo {
                id: "w".into(),
                name: "w".into(),
                queue: None,
                started_at: Timestamp::from_millis(0),
                scheduled: None,
            },
            clock: crate::wasm::WorkflowClock::starting_at(0),
            mail: Arc::default(),
            calls: no_calls(&self.journal),
            children: Arc::new(no_children()),
        };
        WorkflowContext::new(running, history).next_call()
    }

    /// Call 1, fresh, under the setup's stop flag.
    async fn first(&self) -> CallSlot {
        self.slot(&self.interrupt, false, None).await
    }
}

#[tokio::test]
async fn failures_are_retried_after_the_policy_delays_then_succeed() {
    let setup = setup(vec![failed(), failed(), ok(3)]).await;
    let value = setup.invoker.call(setup.first().await, &target(), &[Val::U32(0)]).await.unwrap();
    assert_eq!(to_wave(&value), "ok(3)");
    // 10 ms attempts, then 1 s and 2 s of backoff after each failure's end.
    assert_eq!(setup.ran_at(), [0, 1010, 3020]);
    assert_eq!(*setup.script.numbers.lock().unwrap(), [1, 2, 3]);
    let attempts = setup.journal.attempts("w").await.unwrap();
    let retry_at: Vec<Option<i64>> = attempts.iter().map(|a| a.retry_at.map(|t| t.millis() - START)).collect();
    assert_eq!(retry_at, [Some(1010), Some(3020), None]);
    let outcomes: Vec<_> = attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [Some(AttemptOutcome::Failed), Some(AttemptOutcome::Failed), Some(AttemptOutcome::Ok)]);
    let call = &setup.journal.step_calls("w").await.unwrap()[0];
    assert_eq!((call.status, call.attempts, call.output.as_deref()), (CallStatus::Succeeded, 3, Some("ok(3)")));
}

#[tokio::test]
async fn the_last_failure_exhausts_without_waiting_and_lists_every_attempt() {
    let setup = setup(vec![failed(), failed(), failed()]).await;
    let value = setup.invoker.call(setup.first().await, &target(), &[Val::U32(0)]).await.unwrap();
    let wave = to_wave(&value);
    assert!(wave.starts_with(r#"err(retries-exhausted({step: "guests:bench/steps.noop", attempts: 3, failures: [{attempt: 1, kind: returned-error"#), "{wave}");
    assert_eq!(setup.ran_at(), [0, 1010, 3020]);
    assert_eq!(setup.clock.now().millis() - START, 3030, "no sleep after the last attempt");
    let call = &setup.journal.step_calls("w").await.unwrap()[0];
    assert_eq!(call.status, CallStatus::Exhausted);
}

#[tokio::test]
async fn a_permanent_error_is_returned_at_once_and_a_step_may_pick_its_delay() {
    let setup = setup(vec![err("permanent", Val::String("no".into()))]).await;
    let value = setup.invoker.call(setup.first().await, &target(), &[Val::U32(0)]).await.unwrap();
    assert_eq!(to_wave(&value), r#"err(permanent("no"))"#);
    assert_eq!(setup.journal.step_calls("w").await.unwrap()[0].status, CallStatus::Rejected);

    let setup = self::setup(vec![err("retry-after", Val::U64(5000)), ok(2)]).await;
    setup.invoker.call(setup.first().await, &target(), &[Val::U32(0)]).await.unwrap();
    assert_eq!(setup.ran_at(), [0, 5010]);
}

#[tokio::test]
async fn a_backoff_longer_than_the_park_threshold_parks_the_workflow_and_its_resume_keeps_the_count() {
    let setup = setup(vec![failed(), failed(), ok(3)]).await;
    let parking = Invoker::new(setup.journal.clone(), setup.script.clone(), setup.clock.clone());
    let slot = setup.slot(&Interrupt::default(), false, Some(Duration::from_millis(1500))).await;
    // The 1 s backoff is waited; the 2 s one parks the workflow at once.
    let error = parking.call(slot, &target(), &[Val::U32(0)]).await.unwrap_err();
    let InvokeError::Parked(due_at) = error else { panic!("{error}") };
    assert_eq!(due_at.millis() - START, 3020);
    assert_eq!(setup.ran_at(), [0, 1010]);
    assert_eq!(setup.clock.now().millis() - START, 1020, "nothing waited after the second failure");
    let attempts = setup.journal.attempts("w").await.unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[1].retry_at.map(|at| at.millis() - START), Some(3020), "the retry time is durable");
    // Whoever claims it next waits what remains and runs attempt 3.
    let resumed = Invoker::new(setup.journal.clone(), setup.script.clone(), setup.clock.clone());
    let value =
        resumed.call(setup.slot(&Interrupt::default(), true, None).await, &target(), &[Val::U32(0)]).await.unwrap();
    assert_eq!(to_wave(&value), "ok(3)");
    assert_eq!(setup.ran_at(), [0, 1010, 3020]);
    assert_eq!(*setup.script.numbers.lock().unwrap(), [1, 2, 3]);
}

#[tokio::test]
async fn a_cancel_during_the_backoff_ends_the_call_cancelled() {
    let setup = setup(vec![failed(), ok(2)]).await;
    *setup.script.cancel_during_first.lock().unwrap() = Some(setup.interrupt.clone());
    let error = setup.invoker.call(setup.first().await, &target(), &[Val::U32(0)]).await.unwrap_err();
    assert!(matches!(error, InvokeError::Stopped(StopReason::Cancelled)), "{error}");
    let attempts = setup.journal.attempts("w").await.unwrap();
    assert_eq!(attempts.len(), 1, "no attempt after the cancel");
    assert_eq!(attempts[0].kind, Some(FailureKind::ReturnedError));
    assert_eq!(setup.journal.step_calls("w").await.unwrap()[0].status, CallStatus::Cancelled);
    assert_eq!(setup.journal.workflow("w").await.unwrap().unwrap().status, WorkflowStatus::Running);
}

#[tokio::test]
async fn a_cancel_during_an_attempt_journals_it_cancelled_and_starts_no_other() {
    let setup = setup(vec![]).await;
    setup.interrupt.stop(StopReason::Cancelled);
    let error = setup.invoker.call(setup.first().await, &target(), &[Val::U32(0)]).await.unwrap_err();
    assert!(matches!(error, InvokeError::Stopped(StopReason::Cancelled)), "{error}");
    assert!(setup.journal.attempts("w").await.unwrap().is_empty(), "a stopped workflow starts no attempt");
    assert!(setup.journal.step_calls("w").await.unwrap().is_empty());

    let setup = self::setup(vec![]).await;
    let cancel = setup.interrupt.clone();
    struct CancelNow(Arc<Script>, Interrupt);
    impl Attempts for CancelNow {
        async fn attempt(&self, t: &StepTarget, i: StepIdentity, p: &[Val], interrupt: &Interrupt) -> AttemptReport {
            self.1.stop(StopReason::Cancelled);
            self.0.attempt(t, i, p, interrupt).await
        }
    }
    let invoker = Invoker::new(setup.journal.clone(), CancelNow(setup.script.clone(), cancel), setup.clock.clone());
    let error = invoker.call(setup.first().await, &target(), &[Val::U32(0)]).await.unwrap_err();
    assert!(matches!(error, InvokeError::Stopped(StopReason::Cancelled)), "{error}");
    let attempts = setup.journal.attempts("w").await.unwrap();
    assert_eq!((attempts.len(), attempts[0].kind), (1, Some(FailureKind::Cancelled)));
    assert_eq!(setup.journal.step_calls("w").await.unwrap()[0].status, CallStatus::Cancelled);
}

#[tokio::test]
async fn an_attempt_the_host_died_in_counts_with_an_unknown_end_and_the_next_waits_its_delay() {
    let setup = setup(vec![ok(2)]).await;
    // A previous process started attempt 1 and died.
    let input_json = json!([0]);
    let first = NewStepCall { step: "guests:bench/steps.noop", input: "(0)", input_json: &input_json, max_attempts: 3 };
    let call = CallRef { lease: &setup.lease, seq: 1 };
    let started = Timestamp::from_millis(START - 400);
    setup.journal.start_attempt(call, 1, started, Some(&first)).durable().await.unwrap();
    let resumed = Invoker::new(setup.journal.clone(), setup.script.clone(), setup.clock.clone());
    let value =
        resumed.call(setup.slot(&Interrupt::default(), true, None).await, &target(), &[Val::U32(0)]).await.unwrap();
    assert_eq!(to_wave(&value), "ok(2)");
    let attempts = setup.journal.attempts("w").await.unwrap();
    assert_eq!((attempts[0].kind, attempts[0].finished_at), (Some(FailureKind::Interrupted), None));
    assert_eq!(attempts[1].attempt, 2);
    // Attempt 1 started 400 ms before: attempt 2 runs its 1 s delay after that start.
    assert_eq!(setup.ran_at(), [600]);
    assert_eq!(attempts[0].retry_at.map(|at| at.millis() - START), Some(600));
    assert_eq!(*setup.script.numbers.lock().unwrap(), [2]);
}
