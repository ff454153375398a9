//! The accounts and regions patchd works in: one [`Context`] per (account, region), built once
//! at start-up from `[aws]` and `[[aws.account]]`.
//!
//! The home account's credentials come from the default chain; every other account's from
//! assuming its role with them (STS AssumeRole, session `patchd-<host>`, the optional external
//! id). The home account's 12-digit id comes from STS GetCallerIdentity, another account's from
//! its role ARN, so only one call is made here, and it needs no IAM permission. What runs
//! where is decided by [`plan_in_scope`]: a window runs in a scope only for the groups that
//! scope admits.

use patchd_aws::{AwsClients, AwsError, RoleToAssume};
use patchd_config::Config;
use patchd_store::{Relabelled, Store};
use tracing::{info, warn};

use crate::events::{Publisher, PublisherError};
use crate::window::RunPlan;
use crate::{Context, Scope};

#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error(
        "cannot learn the home account's id: {0}; patchd needs working credentials from the default chain \
         (environment, profile, SSO, container or instance role)"
    )]
    HomeAccount(#[source] AwsError),
    #[error("the role ARN `{0}` names no 12-digit account")]
    RoleArn(String),
}

/// Everything a scope's [`Context`] shares with the others.
#[derive(Debug, Clone)]
pub struct Shared<'a> {
    /// Clients of the home account (the default chain), in the home region.
    pub home: &'a AwsClients,
    pub store: &'a Store,
    pub actor: &'a str,
    pub events: &'a Publisher,
    /// For the role session name, `patchd-<host>`.
    pub host: &'a str,
}

/// One context per configured (account, region), the home account first, in configuration
/// order. Learns the home account's id (GetCallerIdentity); nothing else is called until the
/// contexts are used.
pub async fn connect(config: &Config, shared: &Shared<'_>) -> Result<Vec<Context>, ScopeError> {
    let scoped = clients(config, shared.home, shared.host).await?;
    Ok(attach(scoped, shared.store, shared.actor, shared.events).await)
}

/// Contexts from clients already built by [`clients`] (the home account's first): for a
/// command that read AWS first and only then needs the store. What connecting teaches the
/// store is recorded here, once per start: records an older patchd labelled `default` get the
/// home account's id and region, and each account name its id.
pub async fn attach(
    scoped: Vec<(Scope, AwsClients)>,
    store: &Store,
    actor: &str,
    events: &Publisher,
) -> Vec<Context> {
    if let Some((home, _)) = scoped.first() {
        adopt_legacy_records(store, home).await;
    }
    remember_account_names(store, scoped.iter().map(|(scope, _)| scope)).await;
    let contexts: Vec<Context> = scoped
        .into_iter()
        .map(|(scope, aws)| Context {
            aws,
            store: store.clone(),
            scope,
            actor: actor.to_string(),
            events: events.clone(),
        })
        .collect();
    info!(
        scopes = %contexts.iter().map(|c| c.scope.to_string()).collect::<Vec<_>>().join(", "),
        "accounts and regions"
    );
    contexts
}

/// The clients of every configured (account, region), without a store: for commands that
/// only read AWS (`patchd plan`). `home` are the default chain's clients in the home region.
pub async fn clients(
    config: &Config,
    home: &AwsClients,
    host: &str,
) -> Result<Vec<(Scope, AwsClients)>, ScopeError> {
    let home_region = home.region().unwrap_or("us-east-1").to_string();
    let home_id = home.account_id().await.map_err(ScopeError::HomeAccount)?;
    let session = patchd_aws::session_name(host);
    let mut scoped = Vec::new();
    for account in config.aws.scope_accounts(&home_region) {
        let account_id = match &account.role_arn {
            None => home_id.clone(),
            Some(arn) => patchd_config::account_of_role(arn)
                .map(str::to_string)
                .ok_or_else(|| ScopeError::RoleArn(arn.clone()))?,
        };
        for region in &account.regions {
            let aws = match &account.role_arn {
                None if *region == home_region => home.clone(),
                None => home.in_region(region),
                Some(arn) => {
                    let role = RoleToAssume {
                        role_arn: arn,
                        external_id: account.external_id.as_deref(),
                        session_name: &session,
                    };
                    home.assuming(&role, region).await
                }
            };
            let scope =
                Scope { name: account.name.clone(), account: account_id.clone(), region: region.clone() };
            scoped.push((scope, aws));
        }
    }
    Ok(scoped)
}

/// Gives records from before patchd knew its account id (labelled `default`) the home
/// account's id and region. Failures are logged: history stays readable either way.
async fn adopt_legacy_records(store: &Store, home: &Scope) {
    match store.relabel_legacy_scope(&home.account, &home.region).await {
        Ok(done) if done.is_empty() => {}
        Ok(Relabelled { instances, window_runs, announcements }) => info!(
            account = %home.account, region = %home.region, instances, window_runs, announcements,
            "records of the legacy `default` account now carry the home account's id"
        ),
        Err(e) => warn!(error = %e, "records of the legacy `default` account could not be relabelled"),
    }
}

/// Records which account id each configured account name stands for, so that reports, which
/// read only the database, can resolve `--account <name>`. Failures are logged: patching
/// carries on without it.
async fn remember_account_names<'s>(store: &Store, scopes: impl IntoIterator<Item = &'s Scope>) {
    let mut names: Vec<(&str, &str)> = Vec::new();
    for scope in scopes {
        if !names.iter().any(|(name, _)| *name == scope.name) {
            names.push((&scope.name, &scope.account));
        }
    }
    if let Err(e) = store.remember_account_names(&names, chrono::Utc::now()).await {
        warn!(error = %e, "account names not recorded; `report --account <name>` may not resolve them");
    }
}

/// The same scopes publishing to the sinks `[events]` names now: what a reload does, so a
/// changed bus, webhook or webhook key takes effect without a restart. The bus is reached with
/// the home account's clients (the first scope's). Fails, changing nothing, when the webhook's
/// key file cannot be read.
pub fn with_events(
    scopes: &[Context],
    events: &patchd_config::Events,
) -> Result<Vec<Context>, PublisherError> {
    let Some(home) = scopes.first() else { return Ok(Vec::new()) };
    let publisher = Publisher::from_config(events, &home.aws)?.counting_on(&home.events);
    Ok(scopes.iter().map(|ctx| Context { events: publisher.clone(), ..ctx.clone() }).collect())
}

/// The part of a plan that runs in `scope`: each task keeps the groups the scope admits, tasks
/// left without a group are dropped, and None when nothing is left or the window itself is
/// scoped elsewhere. A group the configuration no longer has is kept (a stored plan is run as
/// it was planned), as are the groups of a plan with no window (ad-hoc scans and installs are
/// scoped by their groups alone).
pub fn plan_in_scope(
    config: &Config,
    window: Option<&str>,
    plan: &RunPlan,
    scope: &Scope,
) -> Option<RunPlan> {
    if let Some(w) = window.and_then(|name| config.window(name)) {
        if !scope.admitted_by(&w.scope) {
            return None;
        }
    }
    let admitted = |group: &String| {
        config.groups.iter().find(|g| g.name == *group).is_none_or(|g| scope.admitted_by(&g.scope))
    };
    let mut scoped = plan.clone();
    for task in &mut scoped.tasks {
        task.groups.retain(admitted);
    }
    scoped.tasks.retain(|t| !t.groups.is_empty());
    (!scoped.tasks.is_empty()).then_some(scoped)
}

/// Whether the configured window `name` runs in `scope` at all: its own scope admits it, and
/// so does the scope of at least one group its tasks target (what [`plan_in_scope`] would
/// keep, without building the plan).
pub fn window_reaches(config: &Config, name: &str, scope: &Scope) -> bool {
    let Some(w) = config.window(name) else { return true };
    scope.admitted_by(&w.scope)
        && w.tasks.iter().flat_map(|t| &t.groups).any(|g| {
            config.groups.iter().find(|c| c.name == g.value).is_none_or(|c| scope.admitted_by(&c.scope))
        })
}
