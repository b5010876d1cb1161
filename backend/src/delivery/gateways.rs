//! The gateway ids this backend has met in routes, so that their liveness
//! keys can be read in the routes' own round trip ([`super::routes`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use oceanchat_protocol::internal::keys;

/// Most gateway ids remembered; past it the set starts again (gateway ids
/// are a deployment's few names, so this only bounds a misconfiguration).
const MAX_KNOWN_GATEWAYS: usize = 1024;

/// The gateway ids met in routes so far, each with its liveness key (ids
/// only: whether a gateway run is alive is read from Redis every time,
/// never remembered). Read on every delivery, so a read is one `Arc`
/// clone; meeting a new id copies the map.
#[derive(Debug, Default)]
pub struct KnownGateways(Mutex<Arc<BTreeMap<String, String>>>);

impl KnownGateways {
    /// Gateway id -> its liveness key (`oc:gw:<id>`).
    pub(super) fn list(&self) -> Arc<BTreeMap<String, String>> {
        self.lock().clone()
    }

    pub(super) fn learn<'a>(&self, gateways: impl Iterator<Item = &'a String>) {
        let mut known = self.lock();
        let mut more = BTreeMap::clone(&known);
        for gateway in gateways {
            if more.len() >= MAX_KNOWN_GATEWAYS {
                more.clear();
            }
            more.insert(gateway.clone(), keys::gateway_alive(gateway));
        }
        *known = Arc::new(more);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Arc<BTreeMap<String, String>>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
