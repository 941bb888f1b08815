//! A Cloud SQL instance's server-side proxy on port 3307, after the shared accept loop and
//! TLS handshake (`crate::proxy`): where configured, the metadata exchange (`mdx`); then
//! the IAM login check for certificates issued for an IAM login (`iam` for Postgres,
//! `mysql` for MySQL); then plain bytes to and from the instance's backend.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::net::TcpStream;

use super::instance::Instance;
use super::mdx;
use crate::inbound::Inbound;
use crate::proxy::{
    close_after_refusal, connect_backend, is_plain_close, relay, ClientTls, Endpoint,
    ProxyControls, ProxyFault, HANDSHAKE_TIMEOUT,
};
use crate::state::{AppState, SharedState};
use crate::{iam, mysql};

impl Endpoint for Instance {
    fn name(&self) -> String {
        self.spec.connection_name()
    }

    fn controls(&self) -> &ProxyControls {
        &self.controls
    }

    async fn serve_tls(
        self: Arc<Self>,
        tls: ClientTls,
        peer: SocketAddr,
        fault: ProxyFault,
        state: SharedState,
    ) -> Result<(), String> {
        serve(tls, peer, fault, &self, &state).await
    }
}

/// What the checks before the relay decided.
enum Admission {
    /// The client was refused (and told): close.
    Refused,
    /// Relay; `Some` if the backend is already connected (MySQL IAM logins), with how many
    /// of its bytes already went to the client.
    Relay(Option<(TcpStream, u64)>),
}

/// A Cloud SQL connection after its TLS handshake.
async fn serve(
    tls: ClientTls,
    peer: SocketAddr,
    fault: ProxyFault,
    instance: &Instance,
    state: &AppState,
) -> Result<(), String> {
    let serial = tls
        .tls()
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|leaf| iam::certificate_serial(leaf));
    let mut inbound = Inbound::new(tls);
    // Google's proxy finishes these before it opens the database connection (MySQL: before
    // it relays the login), and a refused client must never log in to the backend.
    let admitted = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        before_relay(&mut inbound, instance, state, serial.as_deref(), peer.ip()),
    )
    .await
    .map_err(|_| "client stalled before its login".to_string());
    match admitted {
        Ok(Ok(Admission::Relay(upstream))) => {
            relay(inbound, upstream, &instance.spec.backend, fault.cut_after()).await
        }
        Ok(Ok(Admission::Refused)) => {
            close_after_refusal(inbound).await;
            Ok(())
        }
        Ok(Err(e)) if is_plain_close(&e) => Ok(()),
        Ok(Err(e)) => Err(format!("before the relay: {e}")),
        Err(e) => Err(e),
    }
}

/// The metadata exchange and the IAM login check.
async fn before_relay(
    inbound: &mut Inbound<ClientTls>,
    instance: &Instance,
    state: &AppState,
    serial: Option<&str>,
    client_ip: IpAddr,
) -> std::io::Result<Admission> {
    let name = instance.spec.connection_name();
    // Only if enabled: clients of MySQL (which speaks first) send nothing, so the wait for
    // an MDX request would delay every one of their connections.
    if instance.spec.mdx {
        match mdx::serve(inbound).await? {
            mdx::Outcome::Absent => {}
            mdx::Outcome::Accepted(req) => {
                let protocol = req.client_protocol_type.name();
                state
                    .calls
                    .record_mdx(&instance.spec.api_key(), Some(&protocol));
                eprintln!(
                    "proxy {name}: metadata exchange: client_protocol_type={protocol} \
                     user_agent={:?}",
                    req.user_agent
                );
            }
            mdx::Outcome::Rejected(why) => {
                state.calls.record_mdx(&instance.spec.api_key(), None);
                eprintln!("proxy {name}: metadata exchange refused: {why}");
                return Ok(Admission::Refused);
            }
        }
    }
    let version = &instance.spec.database_version;
    let (postgres, mysql) = (iam::is_postgres(version), version.starts_with("MYSQL"));
    if !postgres && !mysql {
        return Ok(Admission::Relay(None));
    }
    // Certificates without an IAM login are for password logins: nothing to check.
    let Some(binding) = serial.and_then(|s| state.ephemeral_principals.get(s)) else {
        return Ok(Admission::Relay(None));
    };
    if mysql {
        let backend = &instance.spec.backend;
        let mut upstream = connect_backend(backend)
            .await
            .map_err(std::io::Error::other)?;
        return match mysql::login(inbound, &mut upstream, &binding, client_ip).await? {
            mysql::Login::Admitted { user, greeting_len } => {
                eprintln!("proxy {name}: IAM login as {user:?}");
                Ok(Admission::Relay(Some((upstream, greeting_len as u64))))
            }
            mysql::Login::Refused { reason, .. } => {
                eprintln!("proxy {name}: IAM login refused: {reason}");
                Ok(Admission::Refused)
            }
        };
    }
    let check = |user: Option<&str>| iam::check_postgres_login(&binding, user, SystemTime::now());
    match iam::postgres_login(inbound, check).await? {
        iam::Login::Admitted(user) => {
            eprintln!("proxy {name}: IAM login as {user:?}");
            Ok(Admission::Relay(None))
        }
        iam::Login::Cancel => Ok(Admission::Relay(None)),
        iam::Login::Refused(r) => {
            eprintln!("proxy {name}: IAM login refused: {}", r.reason);
            Ok(Admission::Refused)
        }
    }
}
