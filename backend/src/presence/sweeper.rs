//! The dead-gateway sweeper: settles the users of gateway runs that died
//! without closing their connections.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use oceanchat_protocol::internal::keys;

use super::online::settle;
use crate::error::ServiceError;
use crate::redis::scripts as lua;
use crate::state::AppState;
use crate::store::new_id;

/// How often the sweeper looks for dead gateway runs. A dead run is
/// settled after it has been seen dead on two sweeps in a row (a run that
/// just started may have registered before its first heartbeat), so a
/// crashed gateway's users go offline at most the route TTL plus two
/// sweeps after the crash.
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// How long the sweeper lease lasts without renewal: if the instance that
/// sweeps dies, another takes over after this.
const SWEEP_LEASE: Duration = Duration::from_millis(2500);

/// Runs the sweeper until `shutdown` completes: every [`SWEEP_INTERVAL`],
/// the instance holding the lease looks for gateway runs in `oc:gw-runs`
/// whose `oc:gw:` key no longer names them, settles the presence of their
/// users (`oc:gw-users:<run>`) and deletes both entries.
pub async fn sweep(state: AppState, shutdown: impl Future<Output = ()>) {
    let me = new_id();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Runs seen dead on the previous sweep.
    let mut suspects = BTreeSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut shutdown => break,
        }
        match hold_lease(&state, &me).await {
            Ok(true) => {}
            Ok(false) => {
                suspects.clear();
                continue;
            }
            Err(error) => {
                error.log("presence sweep");
                continue;
            }
        }
        match sweep_once(&state, &suspects).await {
            Ok(dead) => suspects = dead,
            Err(error) => error.log("presence sweep"),
        }
    }
    // Let another instance take over at once.
    let released: Result<(), redis::RedisError> = lua::SWEEPER_RELEASE
        .key(keys::PRESENCE_SWEEPER)
        .arg(&me)
        .invoke_async(&mut state.redis.clone())
        .await;
    if let Err(error) = released {
        tracing::debug!(%error, "could not release the sweeper lease");
    }
}

/// Takes or renews the sweeper lease; true while this instance holds it.
async fn hold_lease(state: &AppState, me: &str) -> Result<bool, ServiceError> {
    let held: i64 = lua::SWEEPER_LEASE
        .key(keys::PRESENCE_SWEEPER)
        .arg(me)
        .arg(SWEEP_LEASE.as_millis() as u64)
        .invoke_async(&mut state.redis.clone())
        .await?;
    Ok(held == 1)
}

/// One sweep. Settles the runs that are dead now and were already dead on
/// the previous sweep (`suspects`); returns the runs dead now but not yet
/// settled.
async fn sweep_once(
    state: &AppState,
    suspects: &BTreeSet<String>,
) -> Result<BTreeSet<String>, ServiceError> {
    let mut redis = state.redis.clone();
    let runs: Vec<String> = redis::cmd("SMEMBERS")
        .arg(keys::GATEWAY_RUNS)
        .query_async(&mut redis)
        .await?;
    let runs: Vec<(String, String, String)> = runs
        .into_iter()
        .filter_map(|run| {
            let (gateway, instance) = run.split_once('|')?;
            Some((gateway.to_string(), instance.to_string(), run.clone()))
        })
        .collect();
    if runs.is_empty() {
        return Ok(BTreeSet::new());
    }
    let alive: Vec<Option<String>> = redis::cmd("MGET")
        .arg(
            runs.iter()
                .map(|(gateway, _, _)| keys::gateway_alive(gateway))
                .collect::<Vec<_>>(),
        )
        .query_async(&mut redis)
        .await?;
    let mut new_suspects = BTreeSet::new();
    for ((gateway, instance, run), alive) in runs.into_iter().zip(alive) {
        if alive.as_deref() == Some(instance.as_str()) {
            continue;
        }
        if !suspects.contains(&run) {
            new_suspects.insert(run);
            continue;
        }
        settle_dead_run(state, &gateway, &instance, &run).await?;
    }
    Ok(new_suspects)
}

/// Settles every user of a dead gateway run, then forgets the run.
async fn settle_dead_run(
    state: &AppState,
    gateway: &str,
    instance: &str,
    run: &str,
) -> Result<(), ServiceError> {
    let mut redis = state.redis.clone();
    let users_key = keys::gateway_run_users(gateway, instance);
    let users: Vec<String> = redis::cmd("SMEMBERS")
        .arg(&users_key)
        .query_async(&mut redis)
        .await?;
    tracing::info!(
        gateway,
        instance,
        users = users.len(),
        "gateway run is gone; settling its users' presence"
    );
    settle(state, &users).await?;
    let _: () = redis::pipe()
        .del(&users_key)
        .ignore()
        .srem(keys::GATEWAY_RUNS, run)
        .ignore()
        .query_async(&mut redis)
        .await?;
    Ok(())
}
