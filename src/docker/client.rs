//! A connection to the engine at `--docker.host`, speaking the API version both sides know.

use std::time::Duration;

use bollard::Docker;

use super::capped;

/// How long one request may take to answer (the events stream answers at once and then
/// stays open).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {host}: {source}")]
    Connect {
        host: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("negotiating the API version with {host}: {source}")]
    Negotiate {
        host: String,
        #[source]
        source: bollard::errors::Error,
    },
}

/// Connects and lowers the client's API version to the engine's when the engine is older.
/// Over a Unix socket or plain TCP every answer is capped (see [`capped`]); other schemes
/// bollard knows (`https://`, `ssh://`) go through its own uncapped transports.
pub async fn connect(host: &str) -> Result<Docker, ClientError> {
    let docker = match capped::Target::parse(host) {
        Some(target) => capped_client(target),
        None => Docker::connect_with_host(host),
    }
    .map_err(|source| ClientError::Connect {
        host: host.to_owned(),
        source,
    })?
    .with_timeout(REQUEST_TIMEOUT);
    docker
        .negotiate_version()
        .await
        .map_err(|source| ClientError::Negotiate {
            host: host.to_owned(),
            source,
        })
}

/// A client whose answers are capped: one hyper client for requests (each answer as a
/// whole) and one for the events stream (each line), chosen by the request's path. No
/// connection is pooled, so a connection carries one answer.
fn capped_client(target: capped::Target) -> Result<Docker, bollard::errors::Error> {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let build = |cap| {
        Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(capped::Connector {
                target: target.clone(),
                cap,
            })
    };
    let answers = std::sync::Arc::new(build(capped::Cap::Total(capped::MAX_ANSWER_BYTES)));
    let events = std::sync::Arc::new(build(capped::Cap::Line(capped::MAX_ANSWER_BYTES)));
    Docker::connect_with_custom_transport(
        move |request: bollard::BollardRequest| {
            let client = if request.uri().path().ends_with("/events") {
                std::sync::Arc::clone(&events)
            } else {
                std::sync::Arc::clone(&answers)
            };
            async move { client.request(request).await.map_err(bollard::errors::Error::from) }
        },
        // The connector ignores the address; bollard writes it into each request's URI.
        Some("http://docker.engine"),
        REQUEST_TIMEOUT.as_secs(),
        bollard::API_DEFAULT_VERSION,
    )
}
