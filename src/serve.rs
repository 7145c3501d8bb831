//! `medledger serve`: the ledger, the orderer, the views and their projector, and the HTTP
//! API, on embedded defaults (data dir `./medledger-data`, `127.0.0.1:8080`).
//!
//! Shutdown on SIGTERM or SIGINT is graceful: the server stops accepting, lets in-flight
//! requests finish (their submissions drain through the orderer and are fsynced), then the
//! orderer, the projector, the views and the ledger close in that order.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::Service;
use actix_web::middleware::Compress;
use actix_web::{web, App, HttpServer};

use medledger_storage::views::Backend;
use medledger_storage::{Ledger, LedgerOptions};

use crate::api::auth::{self, Auth};
use crate::api::{self, AppState};
use crate::orderer::{Orderer, OrdererConfig};
use crate::projector::Projector;
use crate::rebuild::open_views;

/// Everything `serve` needs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub backend: Backend,
    pub orderer: OrdererConfig,
    /// RS256 public key (PEM); without it, HS256 with the data dir's secret.
    pub jwt_public_key: Option<PathBuf>,
    /// HTTP worker threads (0: one per core).
    pub workers: usize,
}

/// The running parts behind the HTTP layer.
pub struct Core {
    pub state: web::Data<AppState>,
}

impl Core {
    /// Opens the ledger, starts the orderer and the projector, and prepares the
    /// authentication key. Prints how to mint a token when it creates the secret.
    pub fn open(config: &ServeConfig) -> Result<Core, String> {
        config.orderer.validate()?;
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| format!("creating {}: {e}", config.data_dir.display()))?;
        let (ledger, recovery) = Ledger::open(&config.data_dir, LedgerOptions::default())
            .map_err(|e| format!("opening the ledger in {}: {e}", config.data_dir.display()))?;
        if let Some(t) = &recovery.truncated {
            tracing::warn!(?t, "recovered an unacknowledged torn tail");
        }
        let ledger = Arc::new(ledger);
        let views = open_views(&config.data_dir, config.backend).map_err(|e| e.to_string())?;
        let projector = Arc::new(Projector::start(ledger.clone(), views.clone())?);
        let orderer = Arc::new(Orderer::start(ledger.clone(), config.orderer.clone())?);
        let auth = match &config.jwt_public_key {
            Some(path) => {
                let pem =
                    std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
                Auth::rs256(&pem)?
            }
            None => {
                let (secret, created) = auth::load_or_create_secret(&config.data_dir)?;
                if created {
                    eprintln!(
                        "medledger: created an HS256 secret in {}; mint a token with\n  medledger token --data-dir {} --role clinician --sub dr-1 --hospital h-1",
                        config.data_dir.join(auth::SECRET_FILE).display(),
                        config.data_dir.display()
                    );
                }
                Auth::hs256(&secret)
            }
        };
        let state = web::Data::new(AppState {
            ledger,
            orderer,
            views,
            projector,
            auth,
            metrics: api::metrics::Metrics::default(),
        });
        Ok(Core { state })
    }

    /// Drains and closes everything, in order.
    pub fn close(&self) {
        self.state.orderer.shutdown();
        self.state.projector.nudge();
        let height = self.state.ledger.tip().height;
        let _ = self
            .state
            .projector
            .wait_for_height(height, Duration::from_secs(10));
        self.state.projector.shutdown();
        if let Err(e) = self.state.views.flush() {
            tracing::error!(error = %e, "flushing the views");
        }
        if let Err(e) = self.state.ledger.close() {
            tracing::error!(error = %e, "closing the ledger");
        }
    }
}

/// The actix application over `state`, as `serve` runs it (tests use it too).
pub fn app(
    state: web::Data<AppState>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .wrap_fn(|req, srv| {
            let started = Instant::now();
            let method = req.method().to_string();
            let state = req.app_data::<web::Data<AppState>>().cloned();
            let fut = srv.call(req);
            async move {
                let res = fut.await?;
                if let Some(state) = state {
                    let route = res
                        .request()
                        .match_pattern()
                        .unwrap_or_else(|| "unmatched".into());
                    state.metrics.observe(
                        &method,
                        &route,
                        res.status().as_u16(),
                        started.elapsed().as_secs_f64(),
                    );
                }
                Ok(res.map_into_boxed_body())
            }
        })
        .wrap(Compress::default())
        .configure(api::configure)
}

/// Runs the server until SIGTERM or SIGINT.
pub fn run(config: ServeConfig) -> Result<(), String> {
    let core = Core::open(&config)?;
    let state = core.state.clone();
    let workers = if config.workers == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        config.workers
    };
    let result = actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || app(state.clone()))
            .workers(workers)
            .backlog(4096)
            .max_connections(25_000)
            .client_request_timeout(Duration::from_secs(30))
            .shutdown_timeout(30)
            .bind(config.listen)
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        eprintln!(
            "medledger: serving on http://{} (data dir {})",
            config.listen,
            config.data_dir.display()
        );
        server.run().await.map_err(|e| e.to_string())
    });
    core.close();
    result
}
