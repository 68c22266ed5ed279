//! The host's metrics: counters and histograms that every layer records,
//! rendered in the Prometheus text format by the admin endpoint.
//!
//! One registry per process ([`registry`]). A series is named by its family
//! and its labels; [`Registry::counter`] and [`Registry::histogram`] hand out
//! a handle that a medium or a link resolves once, when it is bound, so a call
//! costs a few atomic additions and no lookup. Values that are read rather
//! than counted (instances busy, memory) are added at scrape time by the
//! caller of [`Registry::render`]. This module imports nothing of the crate:
//! every layer may use it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

/// Upper bounds (seconds) of the call latency buckets: 50 µs to 10 s.
pub const CALL_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds (seconds) of the compile time buckets: 10 ms to 2 min.
pub const COMPILE_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// The process's registry.
pub fn registry() -> &'static Registry {
    static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::default);
    &REGISTRY
}

/// Label names and values of one series, in the order given.
type Labels = Vec<(&'static str, String)>;

/// Every family, by name.
#[derive(Default)]
pub struct Registry {
    families: Mutex<BTreeMap<&'static str, Family>>,
}

struct Family {
    help: &'static str,
    /// What each counter's count is worth in the exported unit (a count
    /// of microseconds exported as seconds: 1e-6); `None`: the count.
    scale: Option<f64>,
    series: BTreeMap<Labels, Series>,
}

#[derive(Clone)]
enum Series {
    Counter(Counter),
    Histogram(Histogram),
}

/// A monotonic counter.
#[derive(Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A histogram with fixed buckets; the sum is kept in microseconds (or
/// millionths of the unit).
#[derive(Clone)]
pub struct Histogram(Arc<HistogramInner>);

struct HistogramInner {
    bounds: &'static [f64],
    /// One per bound, plus `+Inf`; not cumulative.
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram(Arc::new(HistogramInner {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }))
    }

    /// Records one observation of `value`.
    pub fn observe(&self, value: f64) {
        let inner = &self.0;
        let bucket = inner
            .bounds
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(inner.bounds.len());
        inner.counts[bucket].fetch_add(1, Ordering::Relaxed);
        inner
            .sum_micros
            .fetch_add((value.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    /// Records the seconds since `started`.
    pub fn observe_since(&self, started: Instant) {
        self.observe(started.elapsed().as_secs_f64());
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Observations so far per bucket (one per bound, then `+Inf`; not
    /// cumulative).
    pub fn counts(&self) -> Vec<u64> {
        self.0.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }
}

impl Registry {
    /// The counter `name{labels}`, created at zero the first time.
    /// A counter whose count is exported times `scale`: a count of
    /// microseconds kept as an integer, exported in seconds (`1e-6`), as
    /// Prometheus wants base units.
    pub fn scaled_counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        scale: f64,
    ) -> Counter {
        let counter = self.counter(name, help, labels);
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(family) = families.get_mut(name) {
            family.scale = Some(scale);
        }
        counter
    }

    pub fn counter(&self, name: &'static str, help: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        match self.series(name, help, labels, || Series::Counter(Counter::default())) {
            Series::Counter(c) => c,
            Series::Histogram(_) => Counter::default(), // a name used twice: not exported
        }
    }

    /// The histogram `name{labels}` with `bounds`, created empty the first time.
    pub fn histogram(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        bounds: &'static [f64],
    ) -> Histogram {
        match self.series(name, help, labels, || Series::Histogram(Histogram::new(bounds))) {
            Series::Histogram(h) => h,
            Series::Counter(_) => Histogram::new(bounds),
        }
    }

    fn series(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        new: impl FnOnce() -> Series,
    ) -> Series {
        let labels: Labels = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let family = families.entry(name).or_insert_with(|| Family {
            help,
            scale: None,
            series: BTreeMap::new(),
        });
        family.series.entry(labels).or_insert_with(new).clone()
    }

    /// The counters of family `name` summed by the values of labels `keys`
    /// (a series without one of them is left out).
    pub fn totals(&self, name: &str, keys: &[&str]) -> BTreeMap<Vec<String>, u64> {
        let mut totals = BTreeMap::new();
        let families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let Some(family) = families.get(name) else {
            return totals;
        };
        for (labels, series) in &family.series {
            let Series::Counter(c) = series else { continue };
            let key: Option<Vec<String>> = keys
                .iter()
                .map(|k| labels.iter().find(|(l, _)| l == k).map(|(_, v)| v.clone()))
                .collect();
            if let Some(key) = key {
                *totals.entry(key).or_insert(0) += c.get();
            }
        }
        totals
    }

    /// The histograms of family `name` (all with `bounds`) summed bucket by
    /// bucket by the values of labels `keys` (a series without one of them,
    /// or with other bounds, is left out).
    pub fn histogram_totals(&self, name: &str, keys: &[&str], bounds: &[f64]) -> BTreeMap<Vec<String>, Vec<u64>> {
        let mut totals: BTreeMap<Vec<String>, Vec<u64>> = BTreeMap::new();
        let families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let Some(family) = families.get(name) else {
            return totals;
        };
        for (labels, series) in &family.series {
            let Series::Histogram(h) = series else { continue };
            if h.0.bounds != bounds {
                continue;
            }
            let key: Option<Vec<String>> = keys
                .iter()
                .map(|k| labels.iter().find(|(l, _)| l == k).map(|(_, v)| v.clone()))
                .collect();
            if let Some(key) = key {
                let sum = totals.entry(key).or_insert_with(|| vec![0; bounds.len() + 1]);
                for (total, count) in sum.iter_mut().zip(h.counts()) {
                    *total += count;
                }
            }
        }
        totals
    }

    /// Every family in the Prometheus text format (version 0.0.4), then
    /// `gauges`, the values read at scrape time.
    pub fn render(&self, gauges: &[Gauge]) -> String {
        let mut out = String::new();
        let families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        for (name, family) in families.iter() {
            let kind = match family.series.values().next() {
                Some(Series::Histogram(_)) => "histogram",
                _ => "counter",
            };
            let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {kind}", family.help);
            for (labels, series) in &family.series {
                match series {
                    Series::Counter(c) => match family.scale {
                        Some(scale) => {
                            let _ = writeln!(out, "{name}{} {}", label_set(labels, None), c.get() as f64 * scale);
                        }
                        None => {
                            let _ = writeln!(out, "{name}{} {}", label_set(labels, None), c.get());
                        }
                    },
                    Series::Histogram(h) => render_histogram(&mut out, name, labels, h),
                }
            }
        }
        drop(families);
        let mut by_name: BTreeMap<&str, Vec<&Gauge>> = BTreeMap::new();
        for gauge in gauges {
            by_name.entry(gauge.name).or_default().push(gauge);
        }
        for (name, series) in by_name {
            let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} gauge", series[0].help);
            for gauge in series {
                let labels: Labels = gauge.labels.iter().map(|(k, v)| (*k, v.clone())).collect();
                let _ = writeln!(out, "{name}{} {}", label_set(&labels, None), gauge.value);
            }
        }
        out
    }
}

/// A value read at scrape time.
pub struct Gauge {
    /// Its family's name.
    pub name: &'static str,
    /// Its family's help text.
    pub help: &'static str,
    /// Its labels.
    pub labels: Vec<(&'static str, String)>,
    /// Its value.
    pub value: f64,
}

fn render_histogram(out: &mut String, name: &str, labels: &Labels, h: &Histogram) {
    let mut cumulative = 0;
    for (i, count) in h.0.counts.iter().enumerate() {
        cumulative += count.load(Ordering::Relaxed);
        let le = h.0.bounds.get(i).map_or_else(|| "+Inf".to_string(), |b| b.to_string());
        let _ = writeln!(out, "{name}_bucket{} {cumulative}", label_set(labels, Some(&le)));
    }
    let sum = h.0.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
    let _ = writeln!(out, "{name}_sum{} {sum}", label_set(labels, None));
    let _ = writeln!(out, "{name}_count{} {cumulative}", label_set(labels, None));
}

/// `{k="v",...}` with values escaped, and `le` last for a bucket; empty
/// without labels.
fn label_set(labels: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The calls of one binding (or link target): counted, timed, and faults
/// counted by kind. Resolved once when the medium is bound.
#[derive(Clone)]
pub struct Calls {
    app: Arc<str>,
    component: Arc<str>,
    medium: &'static str,
    calls: Counter,
    seconds: Histogram,
}

impl Calls {
    /// The series of calls to `component` of `app` through `medium`.
    pub fn new(app: &str, component: &str, medium: &'static str) -> Calls {
        let labels = [("app", app), ("component", component), ("medium", medium)];
        let r = registry();
        Calls {
            app: app.into(),
            component: component.into(),
            medium,
            calls: r.counter("membrane_calls_total", "Calls delivered to a component.", &labels),
            seconds: r.histogram(
                "membrane_call_duration_seconds",
                "Time from a call's arrival to its answer.",
                &labels,
                CALL_BUCKETS,
            ),
        }
    }

    /// Records a call that started at `started` and ended with `fault` (its
    /// kind's name) or without.
    pub fn record(&self, started: Instant, fault: Option<&str>) {
        self.calls.inc();
        self.seconds.observe_since(started);
        if let Some(kind) = fault {
            registry()
                .counter(
                    "membrane_call_faults_total",
                    "Calls that failed, by fault kind.",
                    &[
                        ("app", &self.app),
                        ("component", &self.component),
                        ("medium", self.medium),
                        ("kind", kind),
                    ],
                )
                .inc();
        }
    }
}

/// Resident memory of this process in bytes (Linux), if known.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_totals_sum_the_buckets_of_series_that_share_the_keys() {
        let r = Registry::default();
        let bounds: &'static [f64] = &[0.1, 1.0];
        r.histogram("h", "H.", &[("app", "a"), ("medium", "http")], bounds)
            .observe(0.05);
        r.histogram("h", "H.", &[("app", "a"), ("medium", "nats")], bounds)
            .observe(0.5);
        r.histogram("h", "H.", &[("app", "b"), ("medium", "http")], bounds)
            .observe(5.0);
        r.histogram("h", "H.", &[("medium", "http")], bounds).observe(0.05);
        let totals = r.histogram_totals("h", &["app"], bounds);
        assert_eq!(totals[&vec!["a".to_string()]], vec![1, 1, 0]);
        assert_eq!(totals[&vec!["b".to_string()]], vec![0, 0, 1]);
        assert_eq!(totals.len(), 2, "the series without `app` is left out");
        assert!(r.histogram_totals("h", &["app"], &[0.1]).is_empty(), "other bounds");
        assert!(r.histogram_totals("missing", &["app"], bounds).is_empty());
    }

    #[test]
    fn renders_counters_histograms_and_gauges_in_the_text_format() {
        let r = Registry::default();
        let c = r.counter("x_total", "Xs.", &[("app", "a\"b\\c\nd")]);
        c.add(3);
        assert_eq!(
            r.counter("x_total", "Xs.", &[("app", "a\"b\\c\nd")]).get(),
            3,
            "one series"
        );
        let h = r.histogram("t_seconds", "Ts.", &[], &[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(5.0);
        let gauge = Gauge {
            name: "g",
            help: "G.",
            labels: vec![("k", "v".into())],
            value: 2.5,
        };
        let text = r.render(&[gauge]);
        assert!(
            text.contains("# TYPE x_total counter\nx_total{app=\"a\\\"b\\\\c\\nd\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("t_seconds_bucket{le=\"0.1\"} 1\n"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"1\"} 2\n"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("t_seconds_sum 5.55\nt_seconds_count 3\n"), "{text}");
        assert!(text.contains("# TYPE g gauge\ng{k=\"v\"} 2.5\n"), "{text}");
    }

    #[test]
    fn a_scaled_counter_counts_integers_and_exports_base_units() {
        let r = Registry::default();
        let waited = r.scaled_counter("w_seconds_total", "W.", &[], 1e-6);
        waited.add(1_500_000);
        assert_eq!(waited.get(), 1_500_000);
        assert!(r.render(&[]).contains("w_seconds_total 1.5\n"), "{}", r.render(&[]));
    }
}
