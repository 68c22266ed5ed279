//! What one app should run on this host, decided from what the host knows,
//! with no I/O: the agent (`agent.rs`) gathers the inputs, asks [`decide`]
//! and carries out the [`Step`] (reconcile, stop, report).
//!
//! The components that run here are those placement puts here, those kept
//! for a hand-over (placement moved them to a host that does not run them
//! yet), and the extra replicas adaptive placement wants for this host's
//! own callers. Only the first two are *served* for the lattice: an extra
//! that adaptation lets go of is never kept for a hand-over, it served no
//! one else.

use super::adapt;
use super::placement::{self, Member};
use crate::manifest::Manifest;
use std::collections::BTreeSet;

/// What the host knows of one app.
pub struct Known<'a> {
    /// Its desired manifest.
    pub manifest: &'a Manifest,
    /// Its manifest's text: what changed is judged by it.
    pub text: &'a str,
    /// This host.
    pub me: &'a Member,
    /// Every live host, this one included.
    pub members: &'a [Member],
    /// What this host served for the lattice at its last successful
    /// reconcile (placed or kept; not extras).
    pub served: &'a BTreeSet<String>,
    /// The extra replicas adaptive placement wants here.
    pub extras: &'a BTreeSet<String>,
    /// The text and the components of the last successful reconcile.
    pub applied: Option<(&'a str, &'a BTreeSet<String>)>,
}

/// What to do with the app here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// What runs is what should: nothing to do.
    Unchanged {
        /// The extras still wanted.
        extras: BTreeSet<String>,
    },
    /// Nothing of it belongs here any more: stop what runs.
    StepAside,
    /// Run `here`: `served` for the lattice, plus `extras` for this host.
    Run {
        /// Every component to run here.
        here: BTreeSet<String>,
        /// Those served for the lattice (placed or kept for a hand-over).
        served: BTreeSet<String>,
        /// The extras still wanted.
        extras: BTreeSet<String>,
    },
}

/// Decides what app `known` runs here. `keep(running, placed)` says which
/// of the components this host served (`running`) to keep although
/// placement no longer puts them here (`placed`): the hand-overs, whose
/// state lives in the agent.
pub fn decide(known: &Known<'_>, keep: impl FnOnce(&BTreeSet<String>, &BTreeSet<String>) -> BTreeSet<String>) -> Step {
    let placed = placement::placed_here(known.manifest, known.me, known.members);
    let kept = keep(known.served, &placed);
    let served: BTreeSet<String> = placed.union(&kept).cloned().collect();
    let extras = adapt::still_wanted(known.manifest, known.me, &served, known.extras);
    let here: BTreeSet<String> = served.union(&extras).cloned().collect();
    if known.applied == Some((known.text, &here)) {
        return Step::Unchanged { extras };
    }
    if here.is_empty() {
        return Step::StepAside;
    }
    Step::Run { here, served, extras }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `front` on node a, `back` on node b (may run elsewhere when hot).
    const APP: &str = "[app]\nname = \"shop\"\n[adaptive]\nhot = 100\ncold = 10\nhold_ms = 2000\n\
        [components.front]\nsource = \"f.wasm\"\nplacement = { node = \"a\" }\n\
        [components.back]\nsource = \"b.wasm\"\nplacement = { node = \"b\" }\nmay_run = {}\n\
        [[links]]\nfrom = \"front\"\nimport = \"shop:x/back@0.1.0\"\nto = \"back\"\n";

    fn member(host: &str, node: &str) -> Member {
        Member {
            host: host.into(),
            labels: [("node".to_string(), node.to_string())].into(),
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// One row: what the host knows, what it keeps for hand-overs, and the
    /// step expected.
    struct Row<'m> {
        what: &'static str,
        manifest: &'m Manifest,
        members: Vec<Member>,
        served: BTreeSet<String>,
        extras: BTreeSet<String>,
        applied: Option<(&'static str, BTreeSet<String>)>,
        text: &'static str,
        keep: BTreeSet<String>,
        step: Step,
    }

    #[test]
    fn the_step_follows_placement_hand_overs_extras_and_the_text() {
        let manifest = Manifest::parse(APP, "test").expect("manifest");
        // `back` as one replica anywhere: who runs it follows who is there.
        let one = APP.replace("placement = { node = \"b\" }\nmay_run = {}", "instances = 1");
        let one = Manifest::parse(&one, "test").expect("manifest");
        let me = member("h1", "a");
        let both = vec![me.clone(), member("h2", "b")];
        let alone = vec![me.clone()];
        // A host that outranks this one for `back`.
        let rival = (0..)
            .map(|i| member(&format!("h{i}"), "b"))
            .find(|m| placement::placed_here(&one, &me, &[me.clone(), m.clone()]).len() == 1)
            .expect("a rival");
        let rivals = vec![me.clone(), rival];
        let run = |here: &[&str], served: &[&str], extras: &[&str]| Step::Run {
            here: set(here),
            served: set(served),
            extras: set(extras),
        };
        let rows = [
            Row {
                what: "first start beside a host for `back`: only `front` here",
                manifest: &manifest,
                members: both.clone(),
                served: set(&[]),
                extras: set(&[]),
                applied: None,
                text: "v1",
                keep: set(&[]),
                step: run(&["front"], &["front"], &[]),
            },
            Row {
                what: "nothing changed",
                manifest: &manifest,
                members: both.clone(),
                served: set(&["front"]),
                extras: set(&[]),
                applied: Some(("v1", set(&["front"]))),
                text: "v1",
                keep: set(&[]),
                step: Step::Unchanged { extras: set(&[]) },
            },
            Row {
                what: "update (or rollback): the text changed, the same components",
                manifest: &manifest,
                members: both.clone(),
                served: set(&["front"]),
                extras: set(&[]),
                applied: Some(("v1", set(&["front"]))),
                text: "v2",
                keep: set(&[]),
                step: run(&["front"], &["front"], &[]),
            },
            Row {
                what: "the host for `back` left (or was killed): `back` comes here",
                manifest: &one,
                members: alone.clone(),
                served: set(&["front"]),
                extras: set(&[]),
                applied: Some(("v1", set(&["front"]))),
                text: "v1",
                keep: set(&[]),
                step: run(&["back", "front"], &["back", "front"], &[]),
            },
            Row {
                what: "a host for `back` joined and does not run it yet: kept, nothing changes",
                manifest: &one,
                members: rivals.clone(),
                served: set(&["back", "front"]),
                extras: set(&[]),
                applied: Some(("v1", set(&["back", "front"]))),
                text: "v1",
                keep: set(&["back"]),
                step: Step::Unchanged { extras: set(&[]) },
            },
            Row {
                what: "...and once it runs `back`, `back` stops here",
                manifest: &one,
                members: rivals.clone(),
                served: set(&["back", "front"]),
                extras: set(&[]),
                applied: Some(("v1", set(&["back", "front"]))),
                text: "v1",
                keep: set(&[]),
                step: run(&["front"], &["front"], &[]),
            },
            Row {
                what: "adaptation: an extra `back` for this host's callers, not served",
                manifest: &manifest,
                members: both.clone(),
                served: set(&["front"]),
                extras: set(&["back"]),
                applied: Some(("v1", set(&["front"]))),
                text: "v1",
                keep: set(&[]),
                step: run(&["back", "front"], &["front"], &["back"]),
            },
            Row {
                // The fault fixed before: the reverted extra was taken for a
                // moved replica and kept 30 s. `keep` is asked only about
                // what was served, so it cannot keep it.
                what: "the extra reverted: it stops at once",
                manifest: &manifest,
                members: both.clone(),
                served: set(&["front"]),
                extras: set(&[]),
                applied: Some(("v1", set(&["back", "front"]))),
                text: "v1",
                keep: set(&[]),
                step: run(&["front"], &["front"], &[]),
            },
        ];
        for row in rows {
            let applied = row.applied.as_ref().map(|(t, h)| (*t, h));
            let known = Known {
                manifest: row.manifest,
                text: row.text,
                me: &me,
                members: &row.members,
                served: &row.served,
                extras: &row.extras,
                applied,
            };
            let mut asked = None;
            let step = decide(&known, |running, placed| {
                asked = Some(running.clone());
                row.keep
                    .iter()
                    .filter(|c| running.contains(*c) && !placed.contains(*c))
                    .cloned()
                    .collect()
            });
            assert_eq!(step, row.step, "{}", row.what);
            assert_eq!(
                asked.as_ref(),
                Some(&row.served),
                "{}: keep asked about what was served",
                row.what
            );
        }
    }

    #[test]
    fn an_app_placed_wholly_elsewhere_steps_aside() {
        let text = APP.replace("placement = { node = \"a\" }", "placement = { node = \"b\" }");
        let manifest = Manifest::parse(&text, "test").expect("manifest");
        let me = member("h1", "a");
        let members = [me.clone(), member("h2", "b")];
        let (served, none) = (set(&["front"]), set(&[]));
        let known = Known {
            manifest: &manifest,
            text: "v2",
            me: &me,
            members: &members,
            served: &served,
            extras: &none,
            applied: Some(("v1", &served)),
        };
        assert_eq!(decide(&known, |_, _| BTreeSet::new()), Step::StepAside);
        // Kept for a hand-over, it still runs until its new host does.
        assert_eq!(
            decide(&known, |_, _| set(&["front"])),
            Step::Run {
                here: served.clone(),
                served: served.clone(),
                extras: none.clone()
            }
        );
    }
}
