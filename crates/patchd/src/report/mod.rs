//! `patchd report`: the SLA picture, compliance, coverage and remediation history, computed
//! from the store's facts by the SLA engine, at an instant.
//!
//! `compute` is pure (facts in, rows out) and unit-tested; `render` turns rows into an
//! aligned table, JSON (a documented contract) or CSV; `evidence` lays several reports out as
//! one self-contained HTML page for an assessor.

pub mod compute;
pub mod evidence;
pub mod render;

pub use compute::*;
