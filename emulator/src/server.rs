//! Startup: makes keys and certificates, binds every listener, writes the credential
//! files and runs the HTTP servers and proxies until shut down.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use std::collections::HashSet;

use crate::alloydb::instance::{AlloyDbInstance, ClusterCas, ALLOYDB_PROXY_PORT};
use crate::app::{self, App, Instances};
use crate::certs::{generate_rsa_keys, CertAuthority};
use crate::cloudsql::certs::InstanceKeys;
use crate::cloudsql::instance::{Instance, SERVER_PROXY_PORT};
use crate::config::{Options, Spec};
use crate::credentials::{
    impersonation_url, write_private, Credentials, DELEGATE_SA_EMAIL, SERVICE_ACCOUNT_EMAIL,
    TARGET_SA_EMAIL, UNIVERSE_DOMAIN,
};
use crate::idp::Idp;
use crate::state::{AppState, SharedState};
use crate::tokens::TokenStore;
use crate::workload_identity::{
    self, external_account_file_json, external_account_url_json, DEFAULT_SUBJECT,
    EXTERNAL_ACCOUNT_FILE, EXTERNAL_ACCOUNT_URL_FILE, SUBJECT_TOKEN_FILE,
};
use crate::{control, dns, doh, metadata, oauth, proxy, sts};

/// One instance in the ready line.
#[derive(Debug, Clone, Serialize)]
pub struct ReadyInstance {
    /// `cloudsql` or `alloydb`.
    pub kind: &'static str,
    /// `project:region:name` (Cloud SQL) or the instance URI (AlloyDB).
    pub name: String,
    /// The port its proxy listens on at each address: 3307 (Cloud SQL) or 5433 (AlloyDB).
    pub port: u16,
    /// Its public IP: always there for Cloud SQL, only if enabled for AlloyDB.
    pub public_ip: Option<String>,
    /// Its private IP, if it has one (AlloyDB instances always do).
    pub private_ip: Option<String>,
    /// Where its PSC endpoint listens, if enabled.
    pub psc_ip: Option<String>,
    /// Its PSC DNS name (trailing dot): clients must resolve it to `psc_ip`.
    pub psc_dns_name: Option<String>,
    /// Its DNS name (Cloud SQL CAS only, with the trailing dot), else `null`.
    pub dns_name: Option<String>,
    /// `legacy` or `cas` for Cloud SQL; `null` for AlloyDB.
    pub ca_mode: Option<String>,
    /// AlloyDB's `instanceUid` (absent for Cloud SQL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_uid: Option<String>,
}

impl ReadyInstance {
    fn cloudsql(i: &Instance) -> Self {
        Self {
            kind: "cloudsql",
            name: i.spec.connection_name(),
            port: SERVER_PROXY_PORT,
            public_ip: Some(i.public_ip.to_string()),
            private_ip: i.private_ip.map(|ip| ip.to_string()),
            psc_ip: i.psc.as_ref().map(|p| p.ip.to_string()),
            psc_dns_name: i.psc.as_ref().map(|p| p.dns_name.clone()),
            dns_name: i.dns_name.clone(),
            ca_mode: Some(i.spec.ca_mode.as_str().to_string()),
            instance_uid: None,
        }
    }

    fn alloydb(i: &AlloyDbInstance) -> Self {
        Self {
            kind: "alloydb",
            name: i.uri().to_string(),
            port: ALLOYDB_PROXY_PORT,
            public_ip: i.public_ip.map(|ip| ip.to_string()),
            private_ip: Some(i.private_ip.to_string()),
            psc_ip: i.psc.as_ref().map(|p| p.ip.to_string()),
            psc_dns_name: i.psc.as_ref().map(|p| p.dns_name.clone()),
            dns_name: None,
            ca_mode: None,
            instance_uid: Some(i.uid.clone()),
        }
    }
}

/// The JSON line printed once everything listens.
#[derive(Debug, Clone, Serialize)]
pub struct Ready {
    /// `http://127.0.0.1:P` (Cloud SQL Admin API base URL).
    pub admin_endpoint: String,
    /// The AlloyDB Admin API base URL: the same server as `admin_endpoint`.
    pub alloydb_admin_endpoint: String,
    /// `http://127.0.0.1:P/token`.
    pub token_endpoint: String,
    /// `127.0.0.1:M` (for `GCE_METADATA_HOST`).
    pub metadata_host: String,
    /// `http://127.0.0.1:P/emulator/v1`.
    pub control_endpoint: String,
    /// The DNS-over-HTTPS (RFC 8484) endpoint, `http://127.0.0.1:P/dns-query`.
    pub dns_endpoint: String,
    /// Path of the service-account key file.
    pub service_account_file: String,
    /// Path of the authorized-user file.
    pub authorized_user_file: String,
    /// The service account's email.
    pub service_account_email: String,
    /// STS's token exchange endpoint, `http://127.0.0.1:P/v1/token` (Google's
    /// `https://sts.googleapis.com/v1/token`).
    pub sts_endpoint: String,
    /// The IAM Credentials base URL, the admin server (Google's
    /// `https://iamcredentials.googleapis.com`): `generateAccessToken` is at
    /// `{it}/v1/projects/-/serviceAccounts/{email}:generateAccessToken`.
    pub iam_credentials_endpoint: String,
    /// The `impersonated_service_account` file whose source is the service-account key.
    pub impersonated_service_account_file: String,
    /// The `impersonated_service_account` file whose source is the authorized user, with
    /// the delegate service account in `delegates`.
    pub impersonated_user_file: String,
    /// The `external_account` file with a file source, impersonating the target.
    pub external_account_file: String,
    /// The `external_account` file with a URL source and STS client authentication, no
    /// impersonation.
    pub external_account_url_file: String,
    /// The subject token (a JWT, as text) the file source reads.
    pub subject_token_file: String,
    /// Where the URL source gets the subject token (`GET`, header `Metadata: True`).
    pub subject_token_url: String,
    /// The identity provider's issuer URL (`iss` of subject tokens).
    pub oidc_issuer: String,
    /// The STS `audience`: the workload identity pool provider.
    pub workload_identity_audience: String,
    /// The principal of the default subject's federated tokens (`principal://…`).
    pub workload_principal: String,
    /// The service account the impersonation files impersonate.
    pub target_service_account_email: String,
    /// The service account the user's impersonation goes through.
    pub delegate_service_account_email: String,
    /// `googleapis.com`, as the credential files say.
    pub universe_domain: String,
    /// The instances.
    pub instances: Vec<ReadyInstance>,
}

/// A started emulator.
pub struct Running {
    /// What to tell clients.
    pub ready: Ready,
    /// The shared state (for in-process tests and embedding).
    pub state: SharedState,
    /// Both services' instances (likewise).
    pub instances: Arc<Instances>,
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

/// How many RSA keys `specs` need: per Cloud SQL instance as its CA mode says; per AlloyDB
/// instance as its cluster says.
fn keys_needed(specs: &[Spec]) -> usize {
    let mut clusters = HashSet::new();
    specs
        .iter()
        .map(|s| match s {
            Spec::CloudSql(c) => InstanceKeys::count(c.ca_mode),
            Spec::AlloyDb(a) => AlloyDbInstance::keys_needed(a, &mut clusters),
        })
        .sum()
}

/// Starts the emulator described by `opts`.
pub async fn start(opts: Options) -> Result<Running, String> {
    // Keys first: service account, unrelated CA, identity provider, then each instance's.
    let needed = 3 + keys_needed(&opts.instances);
    let mut keys = tokio::task::spawn_blocking(move || generate_rsa_keys(needed))
        .await
        .map_err(|e| format!("key generation task failed: {e}"))??;
    let sa_key = keys.pop().ok_or("no service account key")?;
    let unrelated_key = keys.pop().ok_or("no unrelated CA key")?;
    let idp_key = keys.pop().ok_or("no identity provider key")?;
    let credentials = Credentials::generate(&sa_key)?;
    let unrelated = CertAuthority::unrelated(&unrelated_key)?;

    let admin_listener = bind_local().await?;
    let metadata_listener = bind_local().await?;
    let admin_addr = admin_listener.local_addr().map_err(|e| e.to_string())?;
    let metadata_addr = metadata_listener.local_addr().map_err(|e| e.to_string())?;
    let admin_endpoint = format!("http://{admin_addr}");
    let token_uri = format!("{admin_endpoint}/token");

    // In the order given, so the ready line lists them that way.
    let mut ready_instances = Vec::new();
    let mut cloudsql_instances = Vec::new();
    let mut alloydb_instances = Vec::new();
    let mut cloudsql_listeners = Vec::new();
    let mut alloydb_listeners = Vec::new();
    let mut clusters = ClusterCas::new();
    for spec in &opts.instances {
        match spec {
            Spec::CloudSql(spec) => {
                let (inst, listeners) = Instance::launch(spec, &mut keys, &unrelated).await?;
                let inst = Arc::new(inst);
                ready_instances.push(ReadyInstance::cloudsql(&inst));
                cloudsql_listeners.extend(listeners.into_iter().map(|l| (l, inst.clone())));
                cloudsql_instances.push(inst);
            }
            Spec::AlloyDb(spec) => {
                let (inst, listeners) =
                    AlloyDbInstance::launch(spec, &mut keys, &mut clusters, &unrelated).await?;
                let inst = Arc::new(inst);
                ready_instances.push(ReadyInstance::alloydb(&inst));
                alloydb_listeners.extend(listeners.into_iter().map(|l| (l, inst.clone())));
                alloydb_instances.push(inst);
            }
        }
    }

    let (state_dir, temp_state_dir) = match &opts.state_dir {
        Some(d) => (d.clone(), None),
        None => {
            let d = fresh_temp_dir();
            (d.clone(), Some(d))
        }
    };
    let control_endpoint = format!("{admin_endpoint}/emulator/v1");
    let sts_endpoint = format!("{admin_endpoint}/v1/token");
    let subject_token_url = control::subject_token_url(&control_endpoint);
    let files = credentials
        .write_files(&state_dir, &token_uri, &admin_endpoint)
        .map_err(|e| format!("cannot write credentials to {}: {e}", state_dir.display()))?;
    let subject_token_path = state_dir.join(SUBJECT_TOKEN_FILE);
    let idp = Idp::new(
        idp_key,
        control::oidc_issuer(&control_endpoint),
        subject_token_path.clone(),
        DEFAULT_SUBJECT,
    )
    .map_err(|e| {
        format!(
            "cannot write the subject token to {}: {e}",
            state_dir.display()
        )
    })?;
    let external_file = state_dir.join(EXTERNAL_ACCOUNT_FILE);
    let external_url_file = state_dir.join(EXTERNAL_ACCOUNT_URL_FILE);
    let target_url = impersonation_url(&admin_endpoint, TARGET_SA_EMAIL);
    let subject_token_file = subject_token_path.display().to_string();
    write_private(
        &external_file,
        &external_account_file_json(&sts_endpoint, &subject_token_file, &target_url),
    )
    .and_then(|()| {
        write_private(
            &external_url_file,
            &external_account_url_json(
                &sts_endpoint,
                &subject_token_url,
                &credentials.sts_client_id,
                &credentials.sts_client_secret,
            ),
        )
    })
    .map_err(|e| format!("cannot write credentials to {}: {e}", state_dir.display()))?;

    let path = |p: &std::path::Path| p.display().to_string();
    let ready = Ready {
        admin_endpoint: admin_endpoint.clone(),
        alloydb_admin_endpoint: admin_endpoint.clone(),
        token_endpoint: token_uri.clone(),
        metadata_host: metadata_addr.to_string(),
        oidc_issuer: idp.issuer().to_string(),
        control_endpoint,
        dns_endpoint: format!("{admin_endpoint}{}", dns::DOH_PATH),
        service_account_file: path(&files.service_account),
        authorized_user_file: path(&files.authorized_user),
        service_account_email: SERVICE_ACCOUNT_EMAIL.to_string(),
        sts_endpoint,
        iam_credentials_endpoint: admin_endpoint.clone(),
        impersonated_service_account_file: path(&files.impersonated_sa),
        impersonated_user_file: path(&files.impersonated_user),
        external_account_file: path(&external_file),
        external_account_url_file: path(&external_url_file),
        subject_token_file,
        subject_token_url,
        workload_identity_audience: workload_identity::audience(),
        workload_principal: workload_identity::principal(DEFAULT_SUBJECT),
        target_service_account_email: TARGET_SA_EMAIL.to_string(),
        delegate_service_account_email: DELEGATE_SA_EMAIL.to_string(),
        universe_domain: UNIVERSE_DOMAIN.to_string(),
        instances: ready_instances,
    };

    let tokens = TokenStore::new(Duration::from_secs(opts.token_lifetime_secs));
    let instances = Arc::new(Instances::new(&cloudsql_instances, &alloydb_instances));
    let state: SharedState = Arc::new(
        AppState::new(instances.projects(), tokens, credentials, idp, token_uri)
            .with_cert_lifetime(opts.cert_lifetime_secs.map(Duration::from_secs))
            .with_dns(&opts.dns),
    );

    let admin_app = Router::new()
        .route("/token", post(oauth::token))
        .route("/v1/token", post(sts::token))
        .route(dns::DOH_PATH, get(doh::doh_get).post(doh::doh_post))
        .nest("/emulator/v1", control::router())
        .fallback(app::admin_api)
        .layer(middleware::from_fn(log_requests))
        .with_state(App {
            state: state.clone(),
            instances: instances.clone(),
        });
    let metadata_app = metadata::router(state.clone()).layer(middleware::from_fn(log_requests));

    let (stop, stop_rx) = watch::channel(false);
    let http_tasks = vec![
        spawn_http(admin_listener, admin_app, stop_rx.clone()),
        spawn_http(metadata_listener, metadata_app, stop_rx),
    ];
    let proxy_tasks = cloudsql_listeners
        .into_iter()
        .map(|(l, inst)| tokio::spawn(proxy::serve(l, inst, state.clone())))
        .chain(
            alloydb_listeners
                .into_iter()
                .map(|(l, inst)| tokio::spawn(proxy::serve(l, inst, state.clone()))),
        )
        .collect();

    Ok(Running {
        ready,
        state,
        instances,
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
