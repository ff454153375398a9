//! SDK timestamps to chrono.

use aws_sdk_ssm::primitives::DateTime as SdkDateTime;
use chrono::{DateTime, Utc};

pub(crate) fn utc(at: &SdkDateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(at.secs(), at.subsec_nanos())
}

/// SSM fills required timestamps it has no value for with the epoch (e.g. `InstalledTime` of
/// a patch that is not installed); those mean "none".
pub(crate) fn utc_unless_epoch(at: &SdkDateTime) -> Option<DateTime<Utc>> {
    utc(at).filter(|t| t.timestamp() != 0 || t.timestamp_subsec_nanos() != 0)
}
