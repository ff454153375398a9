//! patchd-daemon: the engine behind `patchd run` and the manual `scan` / `install` / `run-now`.
//!
//! - [`baselines`]: the `[[baseline]]` sections kept in SSM: diff, plan and apply;
//! - [`preview`]: what a configured baseline approves, and from when, evaluated locally;
//! - [`sync`]: compliance sync, SSM's current patch state into the store's history;
//! - [`rollout`]: one task's AWS-RunPatchBaseline rollout under concurrency and error budgets,
//!   in canary [`waves`] whose [`gates`] must pass before the next wave is released;
//! - [`window`]: one window occurrence: targets, tasks by priority, cutoff;
//! - [`scheduler`]: when windows fire, and what happens to firings missed while down;
//! - [`leader`]: which of several daemons sharing a database fires windows (a lease with an
//!   epoch, the fence of every run write);
//! - [`locks`]: group locks, in the database on PostgreSQL and in files on SQLite;
//! - [`scopes`]: the accounts and regions patchd works in, one [`Context`] each;
//! - [`feeds`]: vendor advisory feeds and the KEV catalog, fetched on their intervals, kept
//!   whole, and matched to SSM's patches for their release dates;
//! - [`events`]: window runs, task failures, SLA transitions and coverage gaps, published to
//!   EventBridge and/or a signed webhook.
//!
//! Everything talks to AWS through `patchd-aws` and remembers through `patchd-store`; the
//! [`Context`] carries both.

pub mod announce;
pub mod baselines;
pub mod context;
pub mod events;
pub mod feeds;
pub mod gates;
mod http_client;
pub mod leader;
pub mod locks;
pub mod preview;
pub mod promotion;
pub mod rollout;
pub mod scheduler;
pub mod scopes;
pub mod sync;
pub mod waves;
pub mod window;

pub use context::{Context, Scope};
pub use events::Publisher;
