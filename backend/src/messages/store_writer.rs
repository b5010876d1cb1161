//! One ordered `insert_many` for the batches of every conv.
//!
//! Each conv's writer plans its batch (seqs in order, docs/internals.md)
//! and hands it here; the store writer takes every batch queued while its
//! last insert was in flight and stores them with one ordered
//! `insert_many`, one insert in flight at a time. Under load the inserts
//! grow by themselves, so the store sees a few large writes instead of one
//! small write per active conv: with many convs each sending a little
//! (direct messages), batching per conv alone batches nothing, and a store
//! that serves its writes one after another (SecantusDB here, a mongod
//! shard's write path) queues one round trip per conv in front of every
//! send.
//!
//! Ordered is what keeps each conv gap-free: the insert stops at the
//! first document a unique index refuses, so every document before it is
//! stored, that one is refused, and none after it was tried. A conv's
//! writer learns which of the three its own documents are
//! ([`Outcome`]) and goes on as if it had written alone; the documents of
//! other convs after the refused one are simply handed in again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mongodb::error::{Error, ErrorKind};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::METRICS;
use crate::store::{MessageDoc, Store};

/// At most this many documents in one insert (a conv's batch is never
/// split; one of [`super::BATCH_MAX`] documents may go over it).
const MAX_DOCS: usize = 1_000;

/// Conv batches waiting for the store writer before a conv's writer has
/// to wait.
const QUEUE_CAPACITY: usize = 4_096;

/// What became of one conv's batch.
#[derive(Debug)]
pub enum Outcome {
    /// Every document is stored.
    Stored,
    /// The first `stored` documents are stored and the next one was
    /// refused by a unique index (a repeated `client_msg_id`, or a seq
    /// another instance took); the ones after it were not tried.
    Refused { stored: usize },
    /// The first `stored` documents are stored; the rest were not tried,
    /// because a document of another conv before them was refused. They
    /// can be handed in again as they are.
    NotTried { stored: usize },
    /// The insert failed in another way; which documents it stored is not
    /// known (none, if no server was reached).
    Failed(Error),
}

struct Job {
    docs: Vec<MessageDoc>,
    answer: oneshot::Sender<Outcome>,
}

/// Hands planned batches to the process's store writer. Cheap to clone.
#[derive(Clone)]
pub struct StoreWriter {
    queue: mpsc::Sender<Job>,
    /// Inserts made so far (the process-wide count is a metric).
    inserts: Arc<AtomicU64>,
}

impl StoreWriter {
    /// Starts the writer task over `store`. Must run inside tokio.
    pub fn start(store: Store) -> StoreWriter {
        let (queue, jobs) = mpsc::channel(QUEUE_CAPACITY);
        let inserts = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(store, jobs, inserts.clone()));
        StoreWriter { queue, inserts }
    }

    /// The inserts this writer has made.
    pub fn inserts(&self) -> u64 {
        self.inserts.load(Ordering::Relaxed)
    }

    /// Stores `docs` (one conv's batch, in seq order) with the batches of
    /// other convs; returns once the store answered.
    pub async fn insert(&self, docs: Vec<MessageDoc>) -> Outcome {
        let (answer, answered) = oneshot::channel();
        if self.queue.send(Job { docs, answer }).await.is_err() {
            return Outcome::Failed(Error::custom("the store writer stopped"));
        }
        answered
            .await
            .unwrap_or_else(|_| Outcome::Failed(Error::custom("the store writer stopped")))
    }
}

async fn run(store: Store, mut jobs: mpsc::Receiver<Job>, inserts: Arc<AtomicU64>) {
    let mut held: Option<Job> = None;
    loop {
        let first = match held.take() {
            Some(job) => job,
            None => match jobs.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        // Everything queued meanwhile, up to the cap; no waiting for more.
        let mut docs = first.docs.len();
        let mut batch = vec![first];
        while docs < MAX_DOCS {
            match jobs.try_recv() {
                Ok(job) if docs + job.docs.len() > MAX_DOCS => {
                    held = Some(job);
                    break;
                }
                Ok(job) => {
                    docs += job.docs.len();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        let result = store
            .insert_messages(batch.iter().flat_map(|job| job.docs.iter()))
            .await;
        METRICS.store_inserts.fetch_add(1, Ordering::Relaxed);
        inserts.fetch_add(1, Ordering::Relaxed);
        let sizes: Vec<usize> = batch.iter().map(|job| job.docs.len()).collect();
        for (job, outcome) in batch.into_iter().zip(outcomes(&sizes, result)) {
            let _ = job.answer.send(outcome);
        }
    }
}

/// Each batch's outcome, for batches of `sizes` documents stored one
/// after another by one ordered insert that gave `result`.
fn outcomes(sizes: &[usize], result: Result<(), Error>) -> Vec<Outcome> {
    let error = match result {
        Ok(()) => return sizes.iter().map(|_| Outcome::Stored).collect(),
        Err(error) => error,
    };
    let stopped_at = first_write_error(&error);
    let mut start = 0;
    sizes
        .iter()
        .map(|&size| {
            let range = start..start + size;
            start += size;
            match stopped_at {
                // Without the failing document's index nothing is known.
                None => Outcome::Failed(error.clone()),
                Some((at, _)) if range.end <= at => Outcome::Stored,
                Some((at, DUPLICATE_KEY)) if range.contains(&at) => Outcome::Refused {
                    stored: at - range.start,
                },
                // Another kind of refusal is this batch's own failure; the
                // batches after it were not tried and lose nothing by it.
                Some((at, _)) if range.contains(&at) => Outcome::Failed(error.clone()),
                Some(_) => Outcome::NotTried { stored: 0 },
            }
        })
        .collect()
}

/// The error code of a document refused by a unique index.
const DUPLICATE_KEY: i32 = 11000;

/// If an ordered `insert_many` stopped at a document (every one before it
/// stored, none after it tried), that document's index and error code.
/// `None` when the write as a whole failed (no server, a write concern
/// not met): then which documents were stored is not known.
fn first_write_error(error: &Error) -> Option<(usize, i32)> {
    match &*error.kind {
        ErrorKind::InsertMany(failure) if failure.write_concern_error.is_none() => {
            let first = failure
                .write_errors
                .as_ref()?
                .iter()
                .min_by_key(|w| w.index)?;
            Some((first.index, first.code))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_at(index: usize) -> Error {
        write_error_at(index, DUPLICATE_KEY)
    }

    fn write_error_at(index: usize, code: i32) -> Error {
        // The driver's own shape of an ordered insert_many stopped by a
        // document, as parsed from the server's reply.
        let reply = mongodb::bson::doc! {
            "writeErrors": [{"index": index as i32, "code": code, "errmsg": "refused"}]
        };
        let failure: mongodb::error::InsertManyError =
            mongodb::bson::from_document(reply).expect("a write error reply");
        ErrorKind::InsertMany(failure).into()
    }

    fn names(outcomes: &[Outcome]) -> Vec<String> {
        outcomes
            .iter()
            .map(|o| match o {
                Outcome::Stored => "stored".to_string(),
                Outcome::Refused { stored } => format!("refused after {stored}"),
                Outcome::NotTried { stored } => format!("not tried after {stored}"),
                Outcome::Failed(_) => "failed".to_string(),
            })
            .collect()
    }

    #[test]
    fn all_stored() {
        assert_eq!(names(&outcomes(&[2, 1], Ok(()))), ["stored", "stored"]);
    }

    #[test]
    fn a_refusal_stores_what_is_before_it_and_tries_nothing_after_it() {
        // Batches of 2, 3 and 2 documents; the fourth document (the second
        // of the middle batch) is refused.
        let outcomes = outcomes(&[2, 3, 2], Err(refused_at(3)));
        assert_eq!(
            names(&outcomes),
            ["stored", "refused after 1", "not tried after 0"]
        );
    }

    #[test]
    fn a_refused_first_document_of_a_batch() {
        let outcomes = outcomes(&[2, 3], Err(refused_at(2)));
        assert_eq!(names(&outcomes), ["stored", "refused after 0"]);
    }

    #[test]
    fn another_refusal_fails_its_own_batch_only() {
        // Document validation (121) refuses the third document.
        let outcomes = outcomes(&[2, 1, 2], Err(write_error_at(2, 121)));
        assert_eq!(names(&outcomes), ["stored", "failed", "not tried after 0"]);
    }

    #[test]
    fn other_errors_leave_every_batch_unknown() {
        let outcomes = outcomes(&[1, 1], Err(Error::custom("network")));
        assert_eq!(names(&outcomes), ["failed", "failed"]);
    }
}
