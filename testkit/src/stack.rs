//! Redis, NATS and SecantusDB together: what a backend or gateway needs.

use std::panic;
use std::thread;

use crate::mongo::Mongo;
use crate::nats::Nats;
use crate::process::unique_name;
use crate::redis::Redis;

/// The three stores, each on its own free port, plus a database name unique
/// to this stack. Dropping it stops all three.
pub struct Stack {
    pub redis: Redis,
    pub nats: Nats,
    pub mongo: Mongo,
    /// `oc_test_<unique>`: the `--mongo-db` that [`crate::Backend::start`]
    /// passes, so every backend started from one stack shares one database.
    pub mongo_db: String,
}

impl Stack {
    /// Starts the three stores in parallel (SecantusDB alone takes about a
    /// second) and returns once all are ready.
    pub fn start() -> Stack {
        Stack::start_with_nats_config("")
    }

    /// Like [`Stack::start`], NATS running with `config`
    /// ([`Nats::start_with_config`]).
    pub fn start_with_nats_config(config: &str) -> Stack {
        thread::scope(|scope| {
            let redis = scope.spawn(Redis::start);
            let nats = scope.spawn(|| Nats::start_with_config(config));
            let mongo = scope.spawn(Mongo::start);
            // Join all three before failing, so the ones that did start are
            // dropped (stopped) rather than leaked.
            match (redis.join(), nats.join(), mongo.join()) {
                (Ok(redis), Ok(nats), Ok(mongo)) => Stack {
                    redis,
                    nats,
                    mongo,
                    mongo_db: unique_name("oc_test"),
                },
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => panic::resume_unwind(e),
            }
        })
    }
}
