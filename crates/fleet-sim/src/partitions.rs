//! The partitioned state one server serves: a locked [`World`] per (account, region), plus
//! the state every partition shares (the clock, STS, the event bus, the feed cache).
//!
//! It lives apart from the HTTP server so that the handlers the server dispatches to (the
//! control API among them) can reach the partitions without depending on the server itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::clock::{Millis, SharedClock, SimClock};
use crate::eventbridge::EventBus;
use crate::feeds::FeedCache;
use crate::locks::lock;
use crate::s3::S3;
use crate::scenario::Scenario;
use crate::sts::{self, Sts};
use crate::world::World;

type Partitions = HashMap<String, HashMap<String, Arc<Mutex<World>>>>;

#[derive(Debug)]
pub(crate) struct Shared {
    /// The scenario's own account and region, which every existing caller means.
    pub(crate) primary: Arc<Mutex<World>>,
    pub(crate) primary_account: String,
    pub(crate) primary_region: String,
    /// Every other partition, account → region → world. Each world has its own lock, so a
    /// slow request in one partition never holds up another.
    others: RwLock<Partitions>,
    /// Settings of partitions made on first use: the scenario without its fleet.
    template: Scenario,
    pub(crate) clock: SharedClock,
    start_ms: Millis,
    sts: Mutex<Sts>,
    /// EventBridge's side of the endpoint: what PutEvents recorded.
    bus: Mutex<EventBus>,
    /// The advisory feeds last generated from the primary partition's catalog.
    pub(crate) feeds: FeedCache,
    /// S3's buckets: one namespace for every account, as in S3. Each world holds it too, for
    /// its nodes' reads; lock it after a world's lock, never before.
    pub(crate) s3: Arc<Mutex<S3>>,
}

impl Shared {
    /// Builds every partition the scenario defines (slow for big fleets: call off the runtime).
    pub(crate) fn new(scenario: &Scenario) -> Shared {
        let start_ms = scenario.start_ms();
        let clock = SharedClock::new(SimClock::new(start_ms, scenario.time_scale));
        let s3 = Arc::new(Mutex::new(S3::default()));
        let primary = World::with_clock(scenario, scenario.seed, clock.clone(), start_ms, s3.clone());
        let mut others: Partitions = HashMap::new();
        for partition in &scenario.partitions {
            let world = World::with_clock(
                &scenario.for_partition(partition),
                scenario.seed,
                clock.clone(),
                start_ms,
                s3.clone(),
            );
            others
                .entry(partition.account_id.clone())
                .or_default()
                .insert(partition.region.clone(), Arc::new(Mutex::new(world)));
        }
        Shared {
            primary: Arc::new(Mutex::new(primary)),
            primary_account: scenario.account_id.clone(),
            primary_region: scenario.region.clone(),
            others: RwLock::new(others),
            template: scenario.empty_partition(&scenario.account_id, &scenario.region),
            clock,
            start_ms,
            sts: Mutex::new(Sts::new(scenario)),
            bus: Mutex::default(),
            feeds: FeedCache::default(),
            s3,
        }
    }

    pub(crate) fn world(&self) -> MutexGuard<'_, World> {
        lock(&self.primary)
    }

    pub(crate) fn bus(&self) -> MutexGuard<'_, EventBus> {
        lock(&self.bus)
    }

    pub(crate) fn s3(&self) -> MutexGuard<'_, S3> {
        lock(&self.s3)
    }

    pub(crate) fn sts(&self) -> MutexGuard<'_, Sts> {
        lock(&self.sts)
    }

    fn is_primary(&self, account: &str, region: &str) -> bool {
        account == self.primary_account && region == self.primary_region
    }

    /// The partition's world if it exists (the primary always does).
    pub(crate) fn existing(&self, account: &str, region: &str) -> Option<Arc<Mutex<World>>> {
        if self.is_primary(account, region) {
            return Some(self.primary.clone());
        }
        let others = self.others.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        others.get(account).and_then(|regions| regions.get(region)).cloned()
    }

    /// The partition's world, made empty on first use: AWS answers a region nobody used with
    /// an empty fleet, not an error.
    pub(crate) fn partition(&self, account: &str, region: &str) -> Arc<Mutex<World>> {
        if let Some(world) = self.existing(account, region) {
            return world;
        }
        // Built outside the write lock so that other partitions keep being served meanwhile;
        // a concurrent first request may build one too, and the first insert wins.
        let world = World::with_clock(
            &self.template.empty_partition(account, region),
            self.template.seed,
            self.clock.clone(),
            self.start_ms,
            self.s3.clone(),
        );
        let mut others = self.others.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        others
            .entry(account.to_string())
            .or_default()
            .entry(region.to_string())
            .or_insert_with(|| Arc::new(Mutex::new(world)))
            .clone()
    }

    /// Every partition's world, the primary first; each is locked only while `visit` runs.
    pub(crate) fn for_each_world(&self, mut visit: impl FnMut(&mut World)) {
        visit(&mut self.world());
        let worlds: Vec<Arc<Mutex<World>>> = {
            let others = self.others.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            others.values().flat_map(|regions| regions.values().cloned()).collect()
        };
        for world in worlds {
            visit(&mut lock(&world));
        }
    }

    /// Moves the shared clock and processes what fell due in every partition.
    pub(crate) fn advance(&self, millis: Millis) {
        self.clock.advance(millis);
        self.for_each_world(|world| {
            world.sync();
        });
    }

    pub(crate) fn set_time_scale(&self, scale: f64) {
        // Bring every partition to the instant the scale changes at, then change it once.
        self.for_each_world(|world| {
            world.sync();
        });
        self.clock.set_scale(scale);
    }

    /// The (account, region) a request's credentials name; `signed` is the access key and
    /// region of the request's SigV4 credential scope, if it has one.
    pub(crate) fn route(&self, signed: Option<(&str, &str)>) -> (String, String) {
        let Some((access_key, signed_region)) = signed else {
            return (self.primary_account.clone(), self.primary_region.clone());
        };
        let account = if access_key.starts_with(sts::ISSUED_KEY_PREFIX) {
            self.sts().session_account(access_key).map(str::to_string)
        } else {
            None
        };
        let region = if is_region_name(signed_region) {
            signed_region.to_string()
        } else {
            self.primary_region.clone()
        };
        (account.unwrap_or_else(|| self.primary_account.clone()), region)
    }
}

/// Region-shaped, so a garbled credential scope cannot make a partition named after garbage.
fn is_region_name(text: &str) -> bool {
    (1..=32).contains(&text.len())
        && text.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}
