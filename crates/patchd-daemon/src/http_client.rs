//! The one outbound HTTP client: advisory feeds and wave gates' URLs. HTTPS with the system's
//! trust roots, plain HTTP for mirrors and health endpoints on the admin network.

use std::sync::Arc;

pub(crate) type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Empty<bytes::Bytes>,
>;

/// A client, and why the system's trust roots could not be loaded when they could not: it then
/// still serves plain HTTP, and HTTPS requests fail saying why.
pub(crate) fn build() -> (Client, Option<String>) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let (builder, roots_problem) =
        match hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_native_roots(provider.clone()) {
            Ok(builder) => (builder, None),
            Err(e) => {
                let empty = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map(|b| b.with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth())
                    .expect("the default provider supports the default protocol versions");
                (hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(empty), Some(e.to_string()))
            }
        };
    let connector = builder.https_or_http().enable_http1().build();
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
    (client, roots_problem)
}
