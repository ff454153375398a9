//! patchd-aws: the only crate that talks to AWS.
//!
//! It builds SSM and EC2 clients from `[aws]` ([`AwsClients`]) and turns patchd's questions
//! into paged, typed AWS calls:
//!
//! - which instances a group covers right now, and which of them SSM can reach
//!   ([`AwsClients::resolve_group`]);
//! - sending `AWS-RunPatchBaseline` ([`AwsClients::send_patch_command`]), polling its
//!   invocations ([`AwsClients::list_invocations`]), finding what a crashed run already sent
//!   ([`AwsClients::find_commands_by_comment`]) and cancelling ([`AwsClients::cancel_command`]);
//! - compliance as SSM sees it now ([`AwsClients::patch_states`],
//!   [`AwsClients::instance_patches`], [`AwsClients::available_patches`]);
//! - patch baselines patchd manages and their patch-group registrations
//!   ([`AwsClients::baselines_with_prefix`], [`AwsClients::create_baseline`], ...);
//! - other accounts and regions: [`AwsClients::assuming`] a role, [`AwsClients::in_region`],
//!   and the account id of the credentials ([`AwsClients::account_id`]);
//! - patchd's events onto an EventBridge bus ([`AwsClients::put_events`]), through a client
//!   built from the same SDK configuration.
//!
//! Retries belong to the SDK and are configured once, when the clients are built; no call
//! here loops on errors. Patch Manager's reads are paced per operation by a [`Pacer`] that
//! learns from throttling; the compliance sync, which must not lose a read, retries beyond
//! the SDK's attempts itself. The one exception is PutEvents' partial failure: a call the SDK
//! counts as a success may refuse some entries, and only those are resent, a bounded number
//! of times ([`EntryRetry`]). An error that reaches the caller has outlasted them, is typed for
//! what to do next ([`AwsError`]) and names the operation and AWS's request id. Every call is
//! a `tracing` span with its inputs (never credentials), and failures are logged once there.
//!
//! Whether the endpoint is AWS or the fleet simulator makes no difference to this crate.

mod accounts;
mod baselines;
mod client;
mod commands;
mod compliance;
mod error;
mod events;
mod install_lists;
mod pacing;
mod targets;
mod time;

pub use accounts::{session_name, RoleToAssume};
pub use baselines::{
    BaselineDocument, BaselineFilter, BaselineIdentity, BaselineRule, PatchGroupMapping, RemoteBaseline,
    MANAGED_TAG_KEY, MANAGED_TAG_VALUE,
};
pub use client::{AwsClients, Backoff, CallCount, StaticEndpoint};
pub use commands::{
    document_for, CancelRequested, CommandSummary, Invocation, InvocationOutcome, PatchCommand, SentCommand,
    Standing, MAX_COMMENT_CHARS, MAX_INSTANCES_PER_COMMAND, PATCH_DOCUMENT, PATCH_WITH_HOOKS_DOCUMENT,
};
pub use compliance::{
    AvailablePatch, InstancePatch, PatchCatalog, PatchCounts, PatchListing, PatchStateSummary,
};
pub use error::{AwsError, InvalidRequest, TransportKind};
pub use events::{EntryRetry, EventEntry, FailedEntry, PutEventsOutcome, EVENT_SOURCE, MAX_ENTRIES_PER_PUT};
pub use install_lists::{install_list_url, install_list_yaml, ListedPatch};
pub use pacing::Pacer;
/// SSM's enums, in the one form every crate shares; re-exported because every caller of the
/// adapter meets them.
pub use patchd_model::{CommandStatus, OperatingSystem, PatchState, PingStatus, Reported};
pub use targets::{Agent, Coverage, Target};
