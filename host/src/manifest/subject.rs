//! NATS subject rules: which subjects a manifest may bind or publish to, and
//! where a host may send a reply that someone else chose.
//!
//! Every reply, dead letter and forwarded message goes to a subject that a
//! party with fewer rights than the host may have named (a request's reply
//! subject, a `Membrane-Reply-To` header, a manifest's `dead_letter`). The
//! host's NATS user may publish to subjects the party may not: the JetStream
//! API (`$JS.API...`), the desired state (`$KV...`), the lattice's events
//! and heartbeats (`membrane.<lattice>.evt...`). So the host itself refuses
//! those destinations, here, before NATS permissions are even asked.
//!
//! This module knows nothing of connections; it only decides.

/// Subject spaces no manifest may bind, dead-letter to or reply under: NATS's
/// system and JetStream subjects, the lattice's own protocol and the
/// inboxes of every role.
pub const RESERVED_PREFIXES: [&str; 4] = ["$", "membrane.", "_MEMBRANE.", "_INBOX."];

/// The inbox prefix of plain NATS clients (callers): a reply under it is
/// always allowed.
pub const CALLER_INBOX: &str = "_INBOX.";

/// A NATS subject to publish or serve on: dot-separated non-empty tokens,
/// no whitespace or control characters; `*` and `>` wildcards allowed.
pub fn is_subject(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SUBJECT_LEN
        && s.split('.')
            .all(|t| !t.is_empty() && !t.contains(|c: char| c.is_whitespace() || c.is_control()))
}

/// The longest subject the host accepts from anyone (NATS's own limit is
/// the server's `max_control_line`, 4 KiB by default).
pub const MAX_SUBJECT_LEN: usize = 1024;

/// A subject without wildcards.
pub fn is_plain_subject(s: &str) -> bool {
    is_subject(s) && s.split('.').all(|t| t != "*" && t != ">")
}

/// What is wrong with `subject`, a subject a binding serves or publishes
/// to, named `field` in the problem: not a valid subject, or reserved.
pub fn problems(field: &str, subject: &str, problems: &mut Vec<String>) {
    if !is_subject(subject) {
        problems.push(format!("{field}: {subject:?} is not a valid NATS subject"));
    } else if let Some(why) = reserved(subject) {
        problems.push(format!("{field}: {why}"));
    }
}

/// What is wrong with `subject`, which must also be plain (no wildcard).
pub fn plain_problems(field: &str, subject: &str, problems: &mut Vec<String>) {
    if !is_plain_subject(subject) {
        problems.push(format!("{field}: {subject:?} must be a plain subject (no `*` or `>`)"));
    } else if let Some(why) = reserved(subject) {
        problems.push(format!("{field}: {why}"));
    }
}

/// Why a manifest may not use `subject` (to bind, to publish a dead letter
/// to, or as a reply prefix), or `None` when it may. A subject whose first
/// token is a wildcard could match a reserved space, so it is refused too.
pub fn reserved(subject: &str) -> Option<String> {
    if let Some(prefix) = RESERVED_PREFIXES
        .iter()
        .find(|p| subject.starts_with(**p) || p.strip_suffix('.').is_some_and(|whole| subject == whole))
    {
        return Some(format!(
            "{subject:?} is under `{prefix}`, which is reserved for NATS and the lattice's own protocol"
        ));
    }
    match subject.split('.').next() {
        Some("*" | ">") => Some(format!(
            "{subject:?} starts with a wildcard, which would also match the lattice's reserved subjects"
        )),
        _ => None,
    }
}

/// Where a host may send a reply named by someone else.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyRule {
    /// Prefixes (whole tokens) under which a reply may go besides
    /// [`CALLER_INBOX`]: the lattice's role inboxes
    /// (`_MEMBRANE.<lattice>`), a queue binding's `reply_prefix`.
    prefixes: Vec<String>,
}

impl ReplyRule {
    /// Replies under `_INBOX.` and under the role inboxes of `lattice`.
    pub fn lattice(lattice: &str) -> ReplyRule {
        ReplyRule {
            prefixes: vec![crate::subjects::lattice_inboxes(lattice)],
        }
    }

    /// Replies under `_INBOX.` and any lattice's role inboxes: for the
    /// continuation subjects of a protocol between hosts (chunks, body
    /// pulls), where the lattice is not at hand. NATS permissions keep a
    /// host's publishes inside its own lattice's inboxes.
    pub fn internal() -> ReplyRule {
        ReplyRule {
            prefixes: vec!["_MEMBRANE".to_string()],
        }
    }

    /// Replies only under `prefix` (a queue binding's `reply_prefix`): not
    /// even under `_INBOX.`, because a queued message may be answered long
    /// after whoever published it has gone.
    pub fn only(prefix: &str) -> ReplyRule {
        ReplyRule {
            prefixes: vec![prefix.to_string()],
        }
    }

    /// Whether a reply may go to `subject`; the reason when it may not.
    pub fn check(&self, subject: &str, inbox: bool) -> Result<(), String> {
        if !is_plain_subject(subject) {
            return Err(format!("reply subject {:?} is not a plain NATS subject", clip(subject)));
        }
        if subject.starts_with('$') {
            return Err(format!("reply subject {:?} is a NATS system subject", clip(subject)));
        }
        let under = |prefix: &str| {
            subject
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        };
        let inbox_ok = inbox && subject.starts_with(CALLER_INBOX);
        if inbox_ok || self.prefixes.iter().any(|p| under(p)) {
            return Ok(());
        }
        Err(format!(
            "reply subject {:?} is not under {}",
            clip(subject),
            self.describe(inbox)
        ))
    }

    fn describe(&self, inbox: bool) -> String {
        let mut all: Vec<String> = self.prefixes.iter().map(|p| format!("`{p}`")).collect();
        if inbox {
            all.insert(0, "`_INBOX`".into());
        }
        all.join(" or ")
    }
}

/// At most 120 characters of `text`, for messages that quote a peer's subject.
fn clip(text: &str) -> String {
    let clipped: String = text.chars().take(120).collect();
    if clipped.len() < text.len() {
        format!("{clipped}...")
    } else {
        clipped
    }
}

/// Whether `reply`, a reply subject someone else chose, may be answered
/// under `rule` (with `_INBOX.` allowed). A refusal is counted and logged,
/// at most once a second, so a flood of bad requests cannot flood the log.
/// `what` names the service; it is formatted only for a refusal.
pub fn allow_reply(rule: &ReplyRule, reply: &str, what: &dyn std::fmt::Display) -> bool {
    match rule.check(reply, true) {
        Ok(()) => true,
        Err(reason) => {
            refused(what, &reason);
            false
        }
    }
}

/// Counts a refused reply and logs it, at most once a second.
pub fn refused(what: &dyn std::fmt::Display, reason: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_LOG_SECOND: AtomicU64 = AtomicU64::new(0);
    static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
    crate::metrics::registry()
        .counter(
            "membrane_replies_refused_total",
            "Replies the host refused to send because someone else chose a subject outside the reply prefixes.",
            &[],
        )
        .inc();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if LAST_LOG_SECOND.swap(now, Ordering::Relaxed) == now {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let suppressed = SUPPRESSED.swap(0, Ordering::Relaxed);
    let more = if suppressed > 0 {
        format!(" ({suppressed} more refused since the last line)")
    } else {
        String::new()
    };
    tracing::warn!("{what}: not answering: {reason}{more}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_subjects() {
        let table: [(&str, bool); 14] = [
            ("insurance.rate", false),
            ("orders.*", false),
            ("orders.>", false),
            ("$JS.API.STREAM.PURGE.KV_membrane-test-apps", true),
            ("$KV.membrane-test-apps.app.x", true),
            ("$SYS.REQ.SERVER.PING", true),
            ("membrane.test.evt.v1.heartbeat", true),
            ("membrane", true),
            ("_MEMBRANE.test.host.x", true),
            ("_INBOX.abc", true),
            (">", true),
            ("*.evt", true),
            ("membranes.ok", false),
            ("insurance.membrane.x", false),
        ];
        for (subject, refused) in table {
            assert_eq!(reserved(subject).is_some(), refused, "{subject}");
        }
    }

    #[test]
    fn replies_go_only_under_the_inboxes_and_prefixes() {
        let lattice = ReplyRule::lattice("test");
        let queue = ReplyRule::only("rates.reply");
        let table: [(&ReplyRule, &str, bool, bool); 14] = [
            (&lattice, "_INBOX.abc.1", true, true),
            (&lattice, "_INBOX.abc.1", false, false),
            (&lattice, "_MEMBRANE.test.host.x.1", true, true),
            (&lattice, "_MEMBRANE.test.ctl.x", true, true),
            (&lattice, "_MEMBRANE.other.host.x", true, false),
            (&lattice, "_MEMBRANE.testing.host.x", true, false),
            (&lattice, "$JS.API.STREAM.PURGE.KV_membrane-test-apps", true, false),
            (&lattice, "$KV.membrane-test-apps.app.x", true, false),
            (&lattice, "membrane.test.evt.v1.heartbeat", true, false),
            (&lattice, "_INBOX.*", true, false),
            (&lattice, "_INBOX.a b", true, false),
            (&queue, "rates.reply.7", false, true),
            (&queue, "rates.replyx", false, false),
            (&queue, "$JS.API.STREAM.DELETE.X", false, false),
        ];
        for (rule, subject, inbox, allowed) in table {
            assert_eq!(rule.check(subject, inbox).is_ok(), allowed, "{subject} under {rule:?}");
        }
        let refusal = lattice.check("$JS.API.STREAM.PURGE.KV_x", true).unwrap_err();
        assert!(refusal.contains("system subject"), "{refusal}");
    }
}
