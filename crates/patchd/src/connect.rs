//! Clients, store and scope for the commands that work in AWS: one [`Context`] per configured
//! account and region, the home account's first.

use patchd_aws::AwsClients;
use patchd_config::Config;
use patchd_daemon::{leader, scopes, Context, Scope};
use patchd_store::Store;

use crate::failure::Failure;
use crate::setup::open_state;

/// Clients, store and scope for every configured account and region, the home account's
/// first. Learns the home account's id from STS, and gives records an older patchd labelled
/// `default` that id.
pub(crate) async fn contexts(config: &Config, actor: String) -> Result<Vec<Context>, Failure> {
    let store = open_state(config).await?;
    let scoped = scoped_clients(config).await?;
    with_store(config, store, &actor, scoped).await
}

/// Contexts for the clients [`scoped_clients`] built, sharing `store` and the `[events]` sinks
/// (EventBridge through the home account's clients, and/or the webhook). See
/// [`scopes::attach`] for what connecting records in the store.
pub(crate) async fn with_store(
    config: &Config,
    store: Store,
    actor: &str,
    scoped: Vec<(Scope, AwsClients)>,
) -> Result<Vec<Context>, Failure> {
    let Some((_, home_clients)) = scoped.first() else {
        return Err(Failure::Other(anyhow::anyhow!("no account and region is configured")));
    };
    let events = patchd_daemon::Publisher::from_config(&config.events, home_clients)
        .map_err(|e| Failure::Other(anyhow::anyhow!("{e}")))?;
    Ok(scopes::attach(scoped, &store, actor, &events).await)
}

/// The clients of every configured account and region, the home account's first, without the
/// database: for commands that only read AWS.
pub(crate) async fn scoped_clients(config: &Config) -> Result<Vec<(Scope, AwsClients)>, Failure> {
    let aws = AwsClients::new(&config.aws, None).await;
    if aws.region().is_none() {
        return Err(Failure::Other(anyhow::anyhow!(
            "no AWS region: set [aws] region in the configuration, or AWS_REGION"
        )));
    }
    scopes::clients(config, &aws, &leader::hostname())
        .await
        .map_err(|e| Failure::Other(anyhow::anyhow!("{e}")))
}
