//! The gateway ids this backend has met in routes, so that their liveness
//! keys can be read in the routes' own round trip ([`super::routes`]).

use std::collections::BTreeSet;
use std::sync::Mutex;

/// Most gateway ids remembered; past it the set starts again (gateway ids
/// are a deployment's few names, so this only bounds a misconfiguration).
const MAX_KNOWN_GATEWAYS: usize = 1024;

/// The gateway ids met in routes so far (ids only: whether a gateway run is
/// alive is read from Redis every time, never remembered).
#[derive(Debug, Default)]
pub struct KnownGateways(Mutex<BTreeSet<String>>);

impl KnownGateways {
    pub(super) fn list(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }

    pub(super) fn learn<'a>(&self, gateways: impl Iterator<Item = &'a String>) {
        let mut known = self.lock();
        for gateway in gateways {
            if known.len() >= MAX_KNOWN_GATEWAYS {
                known.clear();
            }
            known.insert(gateway.clone());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
