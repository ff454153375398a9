//! fleet-sim: a simulated EC2 fleet behind an endpoint that speaks SSM's AWS JSON 1.1 protocol
//! and EC2's Query protocol, so any AWS SDK pointed at it with `endpoint_url` drives it as it
//! would drive AWS.
//!
//! The fleet is partitioned by (account, region) like AWS; a request's SigV4 credentials pick
//! the partition, and STS's AssumeRole (see [`sts`]) issues keys that reach other accounts.
//!
//! The simulator is deterministic: all state advances as a pure function of a simulated
//! clock (see [`world`]), and every random draw comes from a ChaCha RNG seeded by the
//! scenario. Start it in-process with [`SimServer::start`] or run the `fleet-sim` binary.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use fleet_sim::{Scenario, SimServer};
//! let server = SimServer::start("127.0.0.1:0".parse().unwrap(), Scenario::demo().with_time_scale(0.0)).await?;
//! println!("{}", server.endpoint_url());
//! server.advance(std::time::Duration::from_secs(3600));
//! assert!(server.stats().calls("SendCommand") == 0);
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! A minimal path-style S3 answers on the same endpoint (see [`s3`]): AWS-RunPatchBaseline's
//! `InstallOverrideList` is read from it by the simulated nodes (see [`install_list`]).
//!
//! The same port serves vendor advisory feeds generated from the simulated catalog under
//! `/feeds/` (see [`feeds`]), so every platform's release dates can be read without a network.
//!
//! Faithfulness notes (where AWS behaviour is inferred rather than documented) are in the
//! crate's README; the status mapping of invocations is documented in [`commands`].

pub mod alarms;
pub mod baseline;
pub mod catalog;
pub mod clock;
pub mod commands;
mod control;
pub mod digest;
pub mod ec2;
pub mod error;
pub mod eventbridge;
pub mod faults;
pub mod feeds;
pub mod fleet;
pub mod hooks;
pub mod install_list;
mod locks;
pub mod paging;
mod partitions;
pub mod platform;
mod random;
pub mod request;
pub mod s3;
pub mod scenario;
mod server;
pub mod ssm;
pub mod stats;
pub mod sts;
pub mod world;
pub mod xml;

pub use alarms::AlarmState;
pub use catalog::PatchRelease;
pub use commands::CommandView;
pub use eventbridge::RecordedEvent;
pub use faults::Faults;
pub use fleet::{AgentState, InstanceView};
pub use hooks::{HookRule, Hooks};
pub use platform::Platform;
pub use scenario::{Group, Partition, Scenario, ScenarioError, Timing};
pub use server::SimServer;
pub use stats::Stats;
pub use world::ControlError;
