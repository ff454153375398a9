//! patchd's reports: what the history in the store says about the fleet, judged by the SLA
//! engine at an instant.
//!
//! Three layers, each depending only on the ones below it:
//!
//! - **Computation**, pure (facts in, report rows out, the instant a parameter) and unit-tested:
//!   [`sla()`] (open findings, most urgent first, with totals per rank and status), [`history()`]
//!   (remediated findings, met or missed), [`compliance()`] (per group), [`coverage()`] (blind
//!   spots), [`platform_clocks`] (where the SLA clocks start), and [`windows::upcoming`] (the
//!   windows' next firings).
//! - **The query service**, [`Reports`]: reads the store's instances and findings for part of
//!   the fleet ([`Place`]: an account, a region) and hands them to the computation. The CLI,
//!   the HTTP API, `/metrics` and the demo all ask through it, so a figure is the same wherever
//!   it is shown. Its failures are [`ReportError`]s, which say whether the asker or the store
//!   is at fault.
//! - **Rendering**: [`render`] (aligned tables, CSV, JSON) and [`evidence`] (the auditor's
//!   self-contained HTML page), from the report types alone.

mod clocks;
mod compliance;
mod coverage;
pub mod evidence;
mod facts;
#[cfg(test)]
mod fixtures;
mod history;
mod judged;
mod query;
pub mod render;
mod sla;
pub mod windows;

pub use clocks::{platform_clocks, PlatformClocks};
pub use compliance::{compliance, ComplianceReport, GroupCompliance, InstanceCompliance};
pub use coverage::{coverage, CoverageGap, CoverageReport, Gap};
pub use facts::{Filters, FindingFacts, InstanceFacts, StateCounts};
pub use history::{history, HistoryReport, RankHistory};
pub use judged::JudgedFinding;
/// The SLA engine's judge, which every report judges through.
pub use patchd_sla::Judge;
pub use query::{account_id, Place, ReportError, Reports};
pub use sla::{sla, Count, SlaReport};
