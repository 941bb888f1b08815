//! Queries through the connector component: a Postgres session
//! ([`crate::pgwire`]) whose bytes travel through the component's WIT
//! `connection` resource, so the component's own TLS, verification and cache
//! are what is exercised.

use wasmtime::component::ResourceAny;

use crate::connector::{ConnectOptions, ConnectTimings, Error};
use crate::pgwire::{QueryResult, Session, Transport};
use crate::ConnectorInstance;

/// A component `connection` as a byte transport.
pub struct ComponentConnection<'a> {
    instance: &'a mut ConnectorInstance,
    connection: ResourceAny,
}

impl<'a> ComponentConnection<'a> {
    /// Wraps `connection`, a resource of `instance`.
    pub fn new(instance: &'a mut ConnectorInstance, connection: ResourceAny) -> Self {
        Self {
            instance,
            connection,
        }
    }
}

impl Transport for ComponentConnection<'_> {
    async fn send(&mut self, data: Vec<u8>) -> Result<(), String> {
        self.instance
            .write(self.connection, &data)
            .await
            .map_err(|e| format!("host: {e}"))?
            .map_err(|e| format!("{e:?}"))
    }

    async fn recv(&mut self, max: u32) -> Result<Vec<u8>, String> {
        self.instance
            .read(self.connection, max)
            .await
            .map_err(|e| format!("host: {e}"))?
            .map_err(|e| format!("{e:?}"))
    }
}

/// What a database login needs.
#[derive(Debug, Clone)]
pub struct Login {
    /// Database user.
    pub user: String,
    /// Password, if the server asks for one.
    pub password: Option<String>,
    /// Database name.
    pub database: String,
}

/// Why [`connect_and_query`] failed: at connect (the component's typed
/// error) or later (host, database).
#[derive(Debug)]
pub enum QueryError {
    /// `connector.connect` returned this error.
    Connect(Error),
    /// The host or the database failed.
    Other(String),
}

/// Connects with `connector` (a resource of `instance`), logs in, runs `sql`,
/// closes; returns the rows and the connect's timings.
pub async fn connect_and_query(
    instance: &mut ConnectorInstance,
    connector: ResourceAny,
    name: &str,
    options: ConnectOptions,
    login: &Login,
    sql: &str,
) -> Result<(QueryResult, ConnectTimings), QueryError> {
    let other = |e: String| QueryError::Other(e);
    let conn = instance
        .connect(connector, name, options)
        .await
        .map_err(|e| other(format!("host: {e}")))?
        .map_err(QueryError::Connect)?;
    let timings = instance
        .timings(conn)
        .await
        .map_err(|e| other(format!("host: {e}")))?;
    let transport = ComponentConnection::new(instance, conn);
    let mut session = Session::start(
        transport,
        &login.user,
        &login.database,
        login.password.as_deref(),
    )
    .await
    .map_err(other)?;
    let rows = session.query(sql).await.map_err(other)?;
    session.terminate().await.map_err(other)?;
    instance
        .shutdown(conn)
        .await
        .map_err(|e| other(format!("host: {e}")))?
        .map_err(|e| other(format!("shutdown: {e:?}")))?;
    instance
        .drop_resource(conn)
        .await
        .map_err(|e| other(format!("host: {e}")))?;
    Ok((rows, timings))
}
