//! A connection to the engine at `--docker.host`, speaking the API version both sides know.

use std::time::Duration;

use bollard::Docker;

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
pub async fn connect(host: &str) -> Result<Docker, ClientError> {
    let docker = Docker::connect_with_host(host)
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
