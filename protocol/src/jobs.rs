//! Durable background work on NATS JetStream: the streams, their subjects
//! and the messages on them (docs/internals.md, "JetStream").
//!
//! - The backend publishes a [`MessageEvent`] to [`subjects::MESSAGE_EVENTS`]
//!   after each batch of messages is stored, with the JetStream message id
//!   [`MessageEvent::msg_id`] (`conv:first-last`), so a retried publish
//!   lands once within the stream's duplicate window.
//! - The worker turns each event into [`PushTask`]s on
//!   [`subjects::TASK_PUSH`] (one per offline recipient), and publishes
//!   archive runs on [`subjects::TASK_ARCHIVE`]; both live in the tasks
//!   stream.
//! - A task that failed for good goes to [`subjects::dead_letter`] as a
//!   [`DeadLetter`], in the dead-letter stream, with the reason.

use serde::{Deserialize, Serialize};

/// Stream names and the subjects they hold.
pub mod streams {
    /// Message events, written by the backends.
    pub const EVENTS: &str = "OC_EVENTS";
    /// Subjects of [`EVENTS`].
    pub const EVENTS_SUBJECTS: &str = "oc.ev.>";
    /// Explicit work for the workers.
    pub const TASKS: &str = "OC_TASKS";
    /// Subjects of [`TASKS`].
    pub const TASKS_SUBJECTS: &str = "oc.task.>";
    /// Tasks that failed for good.
    pub const DEAD_LETTERS: &str = "OC_DEAD";
    /// Subjects of [`DEAD_LETTERS`].
    pub const DEAD_LETTERS_SUBJECTS: &str = "oc.dead.>";
}

/// Subjects of the streams.
pub mod subjects {
    /// One [`super::MessageEvent`] per stored batch.
    pub const MESSAGE_EVENTS: &str = "oc.ev.msg";
    /// One [`super::PushTask`] per offline recipient of a batch.
    pub const TASK_PUSH: &str = "oc.task.push";
    /// One [`super::ArchiveTask`] per archive run.
    pub const TASK_ARCHIVE: &str = "oc.task.archive";

    /// Where a task of `kind` (`push`, `archive`, `events`) goes when it
    /// failed for good.
    pub fn dead_letter(kind: &str) -> String {
        format!("oc.dead.{kind}")
    }
}

/// Durable consumer names; every worker binds the same ones, so workers
/// share the work.
pub mod consumers {
    pub const EVENTS: &str = "oc-events";
    pub const PUSH: &str = "oc-push";
    pub const ARCHIVE: &str = "oc-archive";
}

/// Messages of one conv stored together (one batch), in seq order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageEvent {
    pub conv: String,
    pub first_seq: u64,
    pub last_seq: u64,
    /// The sender of each seq, `first_seq` first.
    pub senders: Vec<String>,
    /// Members of the conv that had no live route when the batch was
    /// stored, sorted.
    pub offline: Vec<String>,
    /// When the batch was stored (ms since the epoch).
    pub ts: u64,
}

impl MessageEvent {
    /// The JetStream message id: `conv:first-last`, so a retried publish
    /// of the same batch is dropped by the stream's duplicate window.
    pub fn msg_id(&self) -> String {
        format!("{}:{}-{}", self.conv, self.first_seq, self.last_seq)
    }

    /// The seqs of the batch with their senders.
    pub fn seqs(&self) -> impl Iterator<Item = (u64, &str)> {
        (self.first_seq..).zip(self.senders.iter().map(String::as_str))
    }
}

/// Tell `user` by push about `seqs` of `conv` (those not sent by the user).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushTask {
    pub user: String,
    pub conv: String,
    /// Ascending.
    pub seqs: Vec<u64>,
    /// When the messages were stored (ms since the epoch).
    pub ts: u64,
}

impl PushTask {
    /// The JetStream message id: `push:user:conv:first-last`.
    pub fn msg_id(&self) -> String {
        let first = self.seqs.first().copied().unwrap_or(0);
        let last = self.seqs.last().copied().unwrap_or(0);
        format!("push:{}:{}:{first}-{last}", self.user, self.conv)
    }
}

/// Copy messages stored before `before_ts` to the archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchiveTask {
    /// ms since the epoch.
    pub before_ts: u64,
}

/// A task that failed for good, with why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The JetStream message id of the task.
    pub task_id: String,
    /// The subject the task was on.
    pub subject: String,
    /// How many times it was delivered.
    pub deliveries: u64,
    pub reason: String,
    /// The task itself, as published.
    pub task: serde_json::Value,
}

/// The header a push carries its key in (HTTP header names match in any case).
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// The JSON body POSTed to the push webhook. The request carries the
/// header `Idempotency-Key: <key>`; a redelivered push has the same key
/// and the same body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushNotice {
    pub key: String,
    pub user: String,
    pub conv: String,
    /// The seqs this push covers, ascending.
    pub seqs: Vec<u64>,
    pub first_seq: u64,
    pub last_seq: u64,
    /// The sender of `last_seq`.
    pub sender: String,
    /// The start of `last_seq`'s body, cut to the configured length.
    pub preview: String,
    /// Messages the user has not read, over all their convs.
    pub unread: u64,
}

/// `YYYY-MM-DD` (UTC) of `ms` since the epoch: the day stats count in.
pub fn day_of(ms: u64) -> String {
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = (ms / 86_400_000) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_dates() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(951_782_400_000), "2000-02-29");
        assert_eq!(day_of(1_798_761_599_999), "2026-12-31");
        assert_eq!(day_of(1_798_761_600_000), "2027-01-01");
    }

    #[test]
    fn ids_name_the_batch() {
        let event = MessageEvent {
            conv: "g:1".into(),
            first_seq: 4,
            last_seq: 6,
            senders: vec!["a".into(), "b".into(), "a".into()],
            offline: vec![],
            ts: 0,
        };
        assert_eq!(event.msg_id(), "g:1:4-6");
        assert_eq!(
            event.seqs().collect::<Vec<_>>(),
            [(4, "a"), (5, "b"), (6, "a")]
        );
        let task = PushTask {
            user: "u".into(),
            conv: "g:1".into(),
            seqs: vec![4, 6],
            ts: 0,
        };
        assert_eq!(task.msg_id(), "push:u:g:1:4-6");
        assert_eq!(subjects::dead_letter("push"), "oc.dead.push");
    }
}
