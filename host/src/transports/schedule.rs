//! The `schedule` medium: calls one exported function on a fixed interval
//! or a cron expression, with arguments from the manifest (Spin's cron
//! trigger, for any export).
//!
//! - `every_ms = N` ticks at each multiple of N ms since the Unix epoch, so
//!   every host agrees on the ticks; `cron = "sec min hour day month
//!   weekday"` ticks at the times it names, in UTC. One of the two.
//! - `args` are the call's parameters by name, as a `nats` message carries
//!   them (a JSON object); they are checked against the function's types
//!   when the component loads.
//! - A tick that finds this host's previous run still going is skipped and
//!   counted (`membrane_schedule_skipped_total{reason="running"}`): runs
//!   never queue up behind a slow one.
//! - On a lattice, each host that runs the component ticks, and only the
//!   one that first creates the tick's key in the lattice's schedule bucket
//!   ([`bucket_name`], JetStream KV, keys kept one hour) runs it: one run
//!   per tick across the replicas. A host that cannot reach the bucket
//!   skips the tick (`reason="lease"`) rather than risk a second run.

use super::medium::{BindContext, DRAIN_TIMEOUT, Medium, Rights, Service, binding_span, check_function, function_ref};
use crate::bus::Bus;
use crate::codec::json;
use crate::manifest::Manifest;
use crate::metrics::{Calls, Counter, registry};
use crate::runtime::Runtime;
use crate::runtime::component::Loaded;
use crate::runtime::context::CallContext;
use crate::runtime::dispatch::FunctionRef;
use crate::runtime::fault::CallError;
use async_nats::jetstream::kv::{CreateErrorKind, Store};
use futures::future::BoxFuture;
use serde::Deserialize;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// The shortest interval: a schedule is not a busy loop.
pub const MIN_EVERY_MS: u64 = 100;
/// How long the lattice keeps a tick's key (longer than any clock skew
/// between hosts).
const LEASE_AGE: Duration = Duration::from_secs(3600);

/// `medium = "schedule"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleBinding {
    /// The component.
    pub component: String,
    /// The function: `pkg:ns/iface@version#function`.
    pub export: String,
    /// Tick at every multiple of this many milliseconds since the epoch.
    pub every_ms: Option<u64>,
    /// Tick at the times of this cron expression (UTC, with seconds:
    /// `sec min hour day-of-month month day-of-week [year]`).
    pub cron: Option<String>,
    /// The call's parameters by name.
    #[serde(default)]
    pub args: toml::Table,
}

impl ScheduleBinding {
    /// When it ticks; the error says why it cannot.
    pub fn when(&self) -> Result<When, String> {
        match (self.every_ms, &self.cron) {
            (Some(_), Some(_)) => Err("set `every_ms` or `cron`, not both".into()),
            (None, None) => Err("set `every_ms` or `cron`".into()),
            (Some(ms), None) if ms < MIN_EVERY_MS => Err(format!("every_ms: must be at least {MIN_EVERY_MS}")),
            (Some(ms), None) => Ok(When::Every(ms)),
            (None, Some(expression)) => cron::Schedule::from_str(expression)
                .map(|s| When::Cron(Box::new(s)))
                .map_err(|e| format!("cron: {expression:?} is not a cron expression with seconds: {e}")),
        }
    }

    /// Its `args` as the JSON object a call takes.
    pub fn args_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.args).unwrap_or_else(|_| b"{}".to_vec())
    }
}

/// When a schedule ticks.
#[derive(Debug, Clone)]
pub enum When {
    /// At each multiple of this many milliseconds since the epoch.
    Every(u64),
    /// At the times of a cron expression, UTC.
    Cron(Box<cron::Schedule>),
}

impl When {
    /// The first tick strictly after `now` (milliseconds since the epoch);
    /// `None` when there is none (a cron expression's last year is past).
    pub fn next_after(&self, now: u64) -> Option<u64> {
        match self {
            When::Every(ms) => now.checked_div(*ms)?.checked_add(1)?.checked_mul(*ms),
            When::Cron(schedule) => {
                let at = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(i64::try_from(now).ok()?)?;
                let next = schedule.after(&at).next()?;
                u64::try_from(next.timestamp_millis()).ok()
            }
        }
    }
}

/// The lattice's bucket of schedule leases.
pub fn bucket_name(lattice: &str) -> String {
    format!("membrane-{lattice}-schedule")
}

/// A bound `schedule` binding.
pub struct ScheduleMedium {
    when: When,
    args: Arc<[u8]>,
    target: Arc<FunctionRef>,
    app: Arc<str>,
    runtime: Arc<Runtime>,
    lease: Option<Lease>,
    calls: Calls,
    skipped_running: Counter,
    skipped_lease: Counter,
}

impl Medium for ScheduleMedium {
    const NAME: &'static str = "schedule";
    type Spec = ScheduleBinding;

    fn problems(bindings: &[(usize, &ScheduleBinding)], _manifest: &Manifest) -> Vec<String> {
        bindings
            .iter()
            .filter_map(|&(i, spec)| spec.when().err().map(|why| format!("bindings[{i}]: {why}")))
            .collect()
    }

    /// The hosts that run it claim its ticks in the lattice's lease
    /// bucket, under the app's name only.
    fn rights(_spec: &ScheduleBinding, app: &str, lattice: &str) -> Rights {
        let bucket = bucket_name(lattice);
        Rights {
            host_publish: vec![
                format!("$JS.API.STREAM.CREATE.KV_{bucket}"),
                format!("$JS.API.STREAM.INFO.KV_{bucket}"),
                format!("$KV.{bucket}.{app}.>"),
            ],
            ..Rights::default()
        }
    }

    /// The export exists, and `args` fit its parameters.
    fn check(index: usize, spec: &ScheduleBinding, new: &Loaded, old: Option<&Loaded>) -> Vec<String> {
        let mut problems = check_function(index, &spec.export, new, old);
        if let Some((interface, function)) = crate::manifest::split_export(&spec.export)
            && let Some(func) = new.function(interface, function)
            && let Err(e) = json::params_from_json(func, &spec.args_json())
        {
            problems.push(format!("bindings[{index}].args: {e}"));
        }
        problems
    }

    async fn bind(bindings: &[(usize, &ScheduleBinding)], cx: &BindContext<'_>) -> anyhow::Result<ScheduleMedium> {
        let &[(index, spec)] = bindings else {
            anyhow::bail!("a schedule binding is bound alone");
        };
        let when = spec.when().map_err(|why| anyhow::anyhow!("bindings[{index}]: {why}"))?;
        let lease = match cx.lattice {
            Some(lattice) => Some(
                Lease::open(
                    &lattice.bus,
                    &lattice.name,
                    format!("{}.{}.{index}", cx.app, spec.component),
                )
                .await?,
            ),
            None => None,
        };
        let labels = |reason| {
            [
                ("app", cx.app),
                ("component", spec.component.as_str()),
                ("reason", reason),
            ]
        };
        let skipped = |reason| {
            registry().counter(
                "membrane_schedule_skipped_total",
                "Ticks of a schedule binding that did not run here: the last run was still going (running), or the lattice's lease bucket could not be reached (lease).",
                &labels(reason),
            )
        };
        Ok(ScheduleMedium {
            when,
            args: spec.args_json().into(),
            target: Arc::new(function_ref(index, &spec.component, &spec.export)?),
            app: Arc::from(cx.app),
            runtime: cx.runtime.clone(),
            lease,
            calls: Calls::new(cx.app, &spec.component, "schedule"),
            skipped_running: skipped("running"),
            skipped_lease: skipped("lease"),
        })
    }
}

impl Service for ScheduleMedium {
    fn describe(&self) -> String {
        let when = match &self.when {
            When::Every(ms) => format!("every {ms} ms"),
            When::Cron(schedule) => format!("cron {schedule}"),
        };
        format!("schedule {when} -> {}#{}", self.target.component, self.target.function)
    }

    fn serve(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let this = Arc::new(*self);
            let mut running: JoinSet<()> = JoinSet::new();
            loop {
                let now = unix_millis();
                let Some(tick) = this.when.next_after(now) else {
                    tracing::info!("{}: no more ticks", this.describe());
                    shutdown.cancelled().await;
                    break;
                };
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(tick.saturating_sub(now))) => {}
                }
                while running.try_join_next().is_some() {}
                if !running.is_empty() {
                    this.skipped_running.inc();
                    tracing::debug!("{}: tick {tick} skipped, the last run is still going", this.describe());
                    continue;
                }
                if let Some(lease) = &this.lease {
                    match lease.claim(tick).await {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(e) => {
                            this.skipped_lease.inc();
                            tracing::warn!("{}: tick {tick} skipped: {e}", this.describe());
                            continue;
                        }
                    }
                }
                let run = this.clone();
                running.spawn(async move { run.run().await });
            }
            if tokio::time::timeout(DRAIN_TIMEOUT, async { while running.join_next().await.is_some() {} })
                .await
                .is_err()
            {
                tracing::warn!("schedule: gave up waiting for the run in flight");
            }
            Ok(())
        })
    }
}

impl ScheduleMedium {
    /// One run: the call, its metrics and its span; a failure is logged.
    async fn run(&self) {
        let target = &self.target;
        let span = binding_span("schedule", &self.app, &target.component, &target.function);
        let cx = CallContext::incoming(None);
        let cx = if span.is_disabled() { cx } else { cx.under(&span) };
        let started = std::time::Instant::now();
        let result = self.runtime.call_json(target, &self.args, cx).instrument(span).await;
        self.calls
            .record(started, result.as_ref().err().map(CallError::kind_name));
        if let Err(e) = result {
            tracing::warn!("{}: {e}", self.describe());
        }
    }
}

/// The claims of one binding's ticks in the lattice's lease bucket.
struct Lease {
    bus: Bus,
    bucket: String,
    /// `<app>.<component>.<binding>.`: the tick follows.
    prefix: String,
    /// The bucket, on the bus's client of that generation.
    store: tokio::sync::Mutex<(u64, Store)>,
}

impl Lease {
    async fn open(bus: &Bus, lattice: &str, prefix: String) -> anyhow::Result<Lease> {
        let bucket = bucket_name(lattice);
        let generation = bus.current_generation();
        let store = Self::store(bus, &bucket).await?;
        Ok(Lease {
            bus: bus.clone(),
            bucket,
            prefix: format!("{prefix}."),
            store: tokio::sync::Mutex::new((generation, store)),
        })
    }

    async fn store(bus: &Bus, bucket: &str) -> anyhow::Result<Store> {
        let js = crate::bus::jetstream(bus.client());
        crate::bus::open_kv(&js, bucket, "Membrane schedule leases", (1, Some(LEASE_AGE))).await
    }

    /// Whether this host won tick `tick`: it created its key first.
    async fn claim(&self, tick: u64) -> anyhow::Result<bool> {
        let mut held = self.store.lock().await;
        let generation = self.bus.current_generation();
        if held.0 != generation {
            *held = (generation, Self::store(&self.bus, &self.bucket).await?);
        }
        match held.1.create(format!("{}{tick}", self.prefix), Vec::new().into()).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(anyhow::anyhow!("cannot claim the tick in bucket {}: {e}", self.bucket)),
        }
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(extra: &str) -> ScheduleBinding {
        toml::from_str(&format!("component = \"c\"\nexport = \"a:b/c@1.0.0#d\"\n{extra}")).unwrap()
    }

    #[test]
    fn when_is_one_of_interval_or_cron_and_checked() {
        let table = [
            ("every_ms = 1000", Ok("every")),
            ("cron = \"*/5 * * * * *\"", Ok("cron")),
            ("", Err("set `every_ms` or `cron`")),
            ("every_ms = 1000\ncron = \"* * * * * *\"", Err("not both")),
            ("every_ms = 10", Err("every_ms: must be at least 100")),
            (
                "cron = \"every day\"",
                Err("cron: \"every day\" is not a cron expression"),
            ),
        ];
        for (extra, expected) in table {
            let got = binding(extra).when();
            match (expected, got) {
                (Ok("every"), Ok(When::Every(1000))) | (Ok("cron"), Ok(When::Cron(_))) => {}
                (Err(wanted), Err(why)) => assert!(why.contains(wanted), "{extra}: {why}"),
                (expected, got) => panic!("{extra}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn ticks_are_the_same_on_every_host() {
        let every = When::Every(1000);
        let table = [
            (0, 1000),
            (1, 1000),
            (999, 1000),
            (1000, 2000),
            (1_700_000_000_500, 1_700_000_001_000),
        ];
        for (now, next) in table {
            assert_eq!(every.next_after(now), Some(next), "{now}");
        }
        assert_eq!(When::Every(1000).next_after(u64::MAX), None);
        let cron = binding("cron = \"0 */15 * * * *\"").when().unwrap();
        // 2026-12-02T10:07:30Z -> 10:15:00Z.
        let now = 1_796_206_050_000;
        assert_eq!(cron.next_after(now), Some(1_796_206_500_000));
        assert_eq!(cron.next_after(1_796_206_500_000), Some(1_796_207_400_000));
    }

    #[test]
    fn args_become_the_json_object_of_a_call() {
        let spec = binding("every_ms = 1000\nargs = { message = \"hi\", n = 3 }");
        let args: serde_json::Value = serde_json::from_slice(&spec.args_json()).unwrap();
        assert_eq!(args, serde_json::json!({ "message": "hi", "n": 3 }));
    }
}
