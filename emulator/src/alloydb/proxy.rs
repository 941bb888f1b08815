//! An AlloyDB instance's server-side proxy on port 5433, after the shared accept loop and
//! TLS handshake (`crate::proxy`): the metadata exchange (`mdx`), then either plain bytes
//! to and from the PostgreSQL backend (DB_NATIVE: the backend checks the password) or, for
//! AUTO_IAM, the check that the startup message names the token's principal, whom the
//! backend (trusting IAM roles, as Cloud SQL's IAM path does) logs in without a password.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use super::instance::AlloyDbInstance;
use super::mdx::{self, AuthType, Login};
use crate::iam::{self, Refusal};
use crate::inbound::Inbound;
use crate::proxy::{
    close_after_refusal, is_plain_close, relay, ClientTls, Endpoint, ProxyControls, ProxyFault,
    HANDSHAKE_TIMEOUT,
};
use crate::state::{AppState, SharedState};

impl Endpoint for AlloyDbInstance {
    fn name(&self) -> String {
        self.uri().to_string()
    }

    fn controls(&self) -> &ProxyControls {
        &self.controls
    }

    async fn serve_tls(
        self: Arc<Self>,
        tls: ClientTls,
        _peer: SocketAddr,
        fault: ProxyFault,
        state: SharedState,
    ) -> Result<(), String> {
        serve(tls, fault, &self, &state).await
    }
}

/// One connection after its TLS handshake.
async fn serve(
    tls: ClientTls,
    fault: ProxyFault,
    instance: &AlloyDbInstance,
    state: &AppState,
) -> Result<(), String> {
    let name = instance.uri().to_string();
    let mut inbound = Inbound::new(tls);
    let received = mdx::receive(&mut inbound).await;
    // Counted before the answer goes out, so a client that read it sees the count.
    state
        .calls
        .record_alloydb_mdx(&name, received.auth_type().map(AuthType::name).as_deref());
    let mode = instance.mdx_mode();
    let login = match mdx::respond(&mut inbound, received, &mode, &state.tokens).await {
        Ok(login) => login,
        Err(why) => {
            eprintln!("proxy {name}: metadata exchange refused: {why}");
            close_after_refusal(inbound).await;
            return Ok(());
        }
    };
    eprintln!(
        "proxy {name}: metadata exchange: auth_type={} user_agent={:?}",
        login.auth_type.name(),
        login.user_agent
    );
    if login.auth_type == AuthType::AutoIam {
        let check = |user: Option<&str>| check_login(&login, user, SystemTime::now());
        let decided =
            tokio::time::timeout(HANDSHAKE_TIMEOUT, iam::postgres_login(&mut inbound, check))
                .await
                .map_err(|_| "client stalled before its login".to_string())?;
        match decided {
            Ok(iam::Login::Admitted(user)) => eprintln!("proxy {name}: IAM login as {user:?}"),
            Ok(iam::Login::Cancel) => {}
            Ok(iam::Login::Refused(r)) => {
                eprintln!("proxy {name}: IAM login refused: {}", r.reason);
                close_after_refusal(inbound).await;
                return Ok(());
            }
            Err(e) if is_plain_close(&e) => return Ok(()),
            Err(e) => return Err(format!("before the relay: {e}")),
        }
    }
    relay(inbound, None, &instance.spec.backend, fault.cut_after()).await
}

/// Decides an AUTO_IAM login as `user` (from the startup message) at `now`: the user must
/// be the token's principal as Postgres names it (service accounts without
/// `.gserviceaccount.com`), and the token still valid.
pub fn check_login(login: &Login, user: Option<&str>, now: SystemTime) -> Result<(), Refusal> {
    let Some(user) = user else {
        return Err(Refusal {
            reason: "no user in the startup message".into(),
            message: "no PostgreSQL user name specified in startup packet".into(),
        });
    };
    let want = iam::postgres_user(&login.principal);
    if login.token_expiry <= now {
        return Err(Refusal {
            reason: format!(
                "the metadata exchange token of {} has expired",
                login.principal
            ),
            message: format!(
                "AlloyDB IAM authentication failed for user \"{user}\": the IAM token has expired"
            ),
        });
    }
    if user != want {
        return Err(Refusal {
            reason: format!("user \"{user}\" is not \"{want}\", the token's principal"),
            message: format!(
                "AlloyDB IAM authentication failed for user \"{user}\": the IAM token belongs \
                 to database user \"{want}\""
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn login(principal: &str, secs: u64) -> Login {
        Login {
            auth_type: AuthType::AutoIam,
            principal: principal.into(),
            token_expiry: SystemTime::now() + Duration::from_secs(secs),
            user_agent: String::new(),
        }
    }

    #[test]
    fn admits_only_the_principal() {
        let now = SystemTime::now();
        let sa = login("connector-sa@emulator-project.iam.gserviceaccount.com", 600);
        assert_eq!(
            check_login(&sa, Some("connector-sa@emulator-project.iam"), now),
            Ok(())
        );
        let r = check_login(&sa, Some("app"), now).unwrap_err();
        assert_eq!(
            r.message,
            "AlloyDB IAM authentication failed for user \"app\": the IAM token belongs to \
             database user \"connector-sa@emulator-project.iam\""
        );
        assert!(check_login(
            &sa,
            Some("connector-sa@emulator-project.iam.gserviceaccount.com"),
            now
        )
        .is_err());
        let user = login("dev-user@example.com", 600);
        assert_eq!(
            check_login(&user, Some("dev-user@example.com"), now),
            Ok(())
        );
        assert!(check_login(&user, None, now)
            .unwrap_err()
            .message
            .contains("no PostgreSQL user"));
        let later = now + Duration::from_secs(601);
        assert!(check_login(&user, Some("dev-user@example.com"), later)
            .unwrap_err()
            .message
            .contains("expired"));
    }
}
