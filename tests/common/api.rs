//! The server's core in-process over a temp data dir (for actix's test service), and
//! tokens minted with that data dir's secret.

use medledger::api::auth::{self, Claims, Role};
use medledger::serve::{Core, ServeConfig};

pub struct Env {
    pub dir: tempfile::TempDir,
    pub core: Core,
    pub secret: Vec<u8>,
}

impl Env {
    /// The embedded defaults on a temp dir with one worker, then `configure`.
    pub fn with(configure: impl FnOnce(&mut ServeConfig)) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            workers: 1,
            ..ServeConfig::new(dir.path().to_path_buf())
        };
        configure(&mut config);
        let core = Core::open(&config).unwrap();
        let (secret, _) = auth::load_or_create_secret(dir.path()).unwrap();
        Env { dir, core, secret }
    }

    pub fn new() -> Env {
        Env::with(|_| {})
    }

    /// `Bearer <token>` for this caller, valid for an hour.
    pub fn token(&self, role: Role, sub: &str, hospital: Option<&str>) -> String {
        bearer_with(&self.secret, role, sub, hospital)
    }
}

/// `Bearer <token>` minted with the JWT secret of the data dir `dir`, valid for an hour.
pub fn bearer(dir: &std::path::Path, role: Role, sub: &str, hospital: Option<&str>) -> String {
    let (secret, _) = auth::load_or_create_secret(dir).unwrap();
    bearer_with(&secret, role, sub, hospital)
}

fn bearer_with(secret: &[u8], role: Role, sub: &str, hospital: Option<&str>) -> String {
    let claims = Claims {
        sub: sub.into(),
        role,
        hospital: hospital.map(Into::into),
        exp: auth::now_secs() + 3600,
    };
    format!("Bearer {}", auth::mint(secret, &claims).unwrap())
}
