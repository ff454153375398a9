//! `patchd baseline preview`: which patches a configured baseline approves, and when.

use crate::cli::{GlobalArgs, PreviewArgs};
use crate::Failure;

pub async fn preview(_global: &GlobalArgs, _args: &PreviewArgs) -> Result<(), Failure> {
    Err(Failure::Other(anyhow::anyhow!("baseline preview is being written")))
}
