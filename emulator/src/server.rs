//! Startup: makes keys and certificates, binds every listener, writes the credential
//! files and runs the HTTP servers and proxies until shut down.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::certs::{generate_rsa_keys, CertAuthority, InstanceCerts, InstanceKeys};
use crate::config::{CaMode, Options};
use crate::credentials::{Credentials, SERVICE_ACCOUNT_EMAIL};
use crate::instance::{generate_dns_name, generate_psc_dns_name, Instance, PscEndpoint};
use crate::state::{AppState, SharedState};
use crate::tokens::TokenStore;
use crate::{admin, control, metadata, oauth, proxy};

/// One instance in the ready line.
#[derive(Debug, Clone, Serialize)]
pub struct ReadyInstance {
    /// `project:region:name`.
    pub name: String,
    /// Where its proxy listens (port 3307).
    pub public_ip: String,
    /// Its private IP, if it has one.
    pub private_ip: Option<String>,
    /// Where its PSC endpoint listens, if enabled.
    pub psc_ip: Option<String>,
    /// Its PSC DNS name (trailing dot): clients must resolve it to `psc_ip`.
    pub psc_dns_name: Option<String>,
    /// Its DNS name (CAS only, with the trailing dot), else `null`.
    pub dns_name: Option<String>,
    /// `legacy` or `cas`.
    pub ca_mode: String,
}

/// The JSON line printed once everything listens.
#[derive(Debug, Clone, Serialize)]
pub struct Ready {
    /// `http://127.0.0.1:P` (Admin API base URL).
    pub admin_endpoint: String,
    /// `http://127.0.0.1:P/token`.
    pub token_endpoint: String,
    /// `127.0.0.1:M` (for `GCE_METADATA_HOST`).
    pub metadata_host: String,
    /// `http://127.0.0.1:P/emulator/v1`.
    pub control_endpoint: String,
    /// Path of the service-account key file.
    pub service_account_file: String,
    /// Path of the authorized-user file.
    pub authorized_user_file: String,
    /// The service account's email.
    pub service_account_email: String,
    /// The instances.
    pub instances: Vec<ReadyInstance>,
}

/// A started emulator.
pub struct Running {
    /// What to tell clients.
    pub ready: Ready,
    /// The shared state (for in-process tests and embedding).
    pub state: SharedState,
    stop: watch::Sender<bool>,
    http_tasks: Vec<JoinHandle<()>>,
    proxy_tasks: Vec<JoinHandle<()>>,
    temp_state_dir: Option<PathBuf>,
}

impl Running {
    /// Stops every listener, waits briefly for HTTP servers to finish, and removes the
    /// state dir if the emulator created it.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in &self.proxy_tasks {
            t.abort();
        }
        for t in self.http_tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        if let Some(dir) = self.temp_state_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Logs method, path (no query: it may carry scopes or worse) and status. Never headers
/// or bodies, which hold tokens, keys and assertions.
async fn log_requests(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    eprintln!("{method} {path} {}", resp.status().as_u16());
    resp
}

fn fresh_temp_dir() -> PathBuf {
    let suffix: u64 = rand::random();
    std::env::temp_dir().join(format!("gcp-emulator-{}-{suffix:016x}", std::process::id()))
}

async fn bind_local() -> Result<TcpListener, String> {
    TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))
}

/// Starts the emulator described by `opts`.
pub async fn start(opts: Options) -> Result<Running, String> {
    // Keys first: service account, unrelated CA, then each instance's.
    let needed = 2 + opts
        .instances
        .iter()
        .map(|i| InstanceKeys::count(i.ca_mode))
        .sum::<usize>();
    let mut keys = tokio::task::spawn_blocking(move || generate_rsa_keys(needed))
        .await
        .map_err(|e| format!("key generation task failed: {e}"))??;
    let sa_key = keys.pop().ok_or("no service account key")?;
    let unrelated_key = keys.pop().ok_or("no unrelated CA key")?;
    let credentials = Credentials::generate(&sa_key)?;
    let unrelated = CertAuthority::unrelated(&unrelated_key)?;

    let admin_listener = bind_local().await?;
    let metadata_listener = bind_local().await?;
    let admin_addr = admin_listener.local_addr().map_err(|e| e.to_string())?;
    let metadata_addr = metadata_listener.local_addr().map_err(|e| e.to_string())?;
    let admin_endpoint = format!("http://{admin_addr}");
    let token_uri = format!("{admin_endpoint}/token");

    let mut instances = Vec::new();
    let mut proxy_listeners = Vec::new();
    for spec in &opts.instances {
        let dns_name = (spec.ca_mode == CaMode::Cas).then(|| generate_dns_name(&spec.region));
        let ikeys = InstanceKeys::take(spec.ca_mode, &mut keys)?;
        let certs = InstanceCerts::build(spec, dns_name.as_deref(), ikeys, &unrelated)?;
        let listener = proxy::bind(spec.public_ip).await?;
        let ip = listener.local_addr().map_err(|e| e.to_string())?.ip();
        let private = match spec.private_ip {
            Some(choice) => Some(proxy::bind(choice.fixed()).await?),
            None => None,
        };
        let private_ip = private
            .as_ref()
            .map(|l| l.local_addr().map(|a| a.ip()))
            .transpose()
            .map_err(|e| e.to_string())?;
        let psc_listener = match spec.psc {
            true => Some(proxy::bind(None).await?),
            false => None,
        };
        let psc = psc_listener
            .as_ref()
            .map(|l| l.local_addr().map(|a| a.ip()))
            .transpose()
            .map_err(|e| e.to_string())?
            .map(|ip| PscEndpoint {
                ip,
                dns_name: generate_psc_dns_name(&spec.region),
            });
        let inst = Arc::new(Instance::new(
            spec.clone(),
            ip,
            private_ip,
            psc,
            dns_name,
            certs,
        )?);
        proxy_listeners.push((listener, inst.clone()));
        for l in [private, psc_listener].into_iter().flatten() {
            proxy_listeners.push((l, inst.clone()));
        }
        instances.push(inst);
    }

    let (state_dir, temp_state_dir) = match &opts.state_dir {
        Some(d) => (d.clone(), None),
        None => {
            let d = fresh_temp_dir();
            (d.clone(), Some(d))
        }
    };
    let (sa_file, user_file) = credentials
        .write_files(&state_dir, &token_uri)
        .map_err(|e| format!("cannot write credentials to {}: {e}", state_dir.display()))?;

    let ready = Ready {
        admin_endpoint: admin_endpoint.clone(),
        token_endpoint: token_uri.clone(),
        metadata_host: metadata_addr.to_string(),
        control_endpoint: format!("{admin_endpoint}/emulator/v1"),
        service_account_file: sa_file.display().to_string(),
        authorized_user_file: user_file.display().to_string(),
        service_account_email: SERVICE_ACCOUNT_EMAIL.to_string(),
        instances: instances
            .iter()
            .map(|i| ReadyInstance {
                name: i.spec.connection_name(),
                public_ip: i.public_ip.to_string(),
                private_ip: i.private_ip.map(|ip| ip.to_string()),
                psc_ip: i.psc.as_ref().map(|p| p.ip.to_string()),
                psc_dns_name: i.psc.as_ref().map(|p| p.dns_name.clone()),
                dns_name: i.dns_name.clone(),
                ca_mode: i.spec.ca_mode.as_str().to_string(),
            })
            .collect(),
    };

    let tokens = TokenStore::new(Duration::from_secs(opts.token_lifetime_secs));
    let state: SharedState = Arc::new(AppState::new(instances, tokens, credentials, token_uri));

    let admin_app = Router::new()
        .route("/token", post(oauth::token))
        .nest("/emulator/v1", control::router())
        .fallback(admin::handle)
        .layer(middleware::from_fn(log_requests))
        .with_state(state.clone());
    let metadata_app = metadata::router(state.clone()).layer(middleware::from_fn(log_requests));

    let (stop, stop_rx) = watch::channel(false);
    let http_tasks = vec![
        spawn_http(admin_listener, admin_app, stop_rx.clone()),
        spawn_http(metadata_listener, metadata_app, stop_rx),
    ];
    let proxy_tasks = proxy_listeners
        .into_iter()
        .map(|(l, inst)| tokio::spawn(proxy::serve(l, inst, state.clone())))
        .collect();

    Ok(Running {
        ready,
        state,
        stop,
        http_tasks,
        proxy_tasks,
        temp_state_dir,
    })
}

fn spawn_http(
    listener: TcpListener,
    app: Router,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            eprintln!("HTTP server failed: {e}");
        }
    })
}
