//! The SLA engine: what PCI DSS asks of every missing patch, computed from facts.
//!
//! For each finding (a patch missing, or once missing, on an instance) the engine decides:
//! - its **risk rank**: the vendor severity's rank, raised (never lowered) by the operator's
//!   CVE rules and by the CISA Known Exploited Vulnerabilities catalog;
//! - its **clock**: when the SLA started, which is the vendor's release date, or, when that is
//!   unknown, the first time the patch was seen missing anywhere in the fleet (marked
//!   `estimated`, so reports can say so);
//! - its **due date**: clock + the rank's SLA days;
//! - its **status** at an instant: `ok`, `due-soon`, `breached` while open; `met` or `missed`
//!   once remediated; `excepted` while an unexpired risk acceptance covers it.
//!
//! [`Judge`] composes these steps for a configuration, once for every caller (reports,
//! metrics, events), with [`groups_of`] for the groups an instance belongs to.
//!
//! Everything here is pure: no I/O, no clock of its own (time is a parameter), and nothing
//! that can fail once its inputs exist. Parsing a KEV catalog is the one fallible step, and
//! it happens before the engine runs.

mod judge;
mod kev;
mod rank;
mod status;

pub use judge::{describe, groups_of, Judge, PatchFacts, PatchVerdict};
pub use kev::{KevCatalog, KevError};
pub use rank::{rank, RankReason, Ranked};
pub use status::{
    clock, covering_exception, due_date, status, ClockSource, FindingState, SlaClock, SlaStatus,
};

pub use patchd_config::RiskRank;
