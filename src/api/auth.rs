//! Who is calling, and what they may do: bearer JWTs (HS256 with the data dir's secret, or
//! RS256 with a configured public key, with an issuer and audience when the identity
//! provider sets them), and every access rule in one place.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use medledger_chaincode::contract::{GrantState, RecordState};
use medledger_chaincode::Timestamp;

use super::error::ApiError;
use super::AppState;

/// The file in the data dir that holds the HS256 secret (hex, mode 0600).
pub const SECRET_FILE: &str = "jwt-secret";
/// The secret a rotation replaced, still accepted until its end of grace:
/// `<hex secret> <unix seconds>`, mode 0600; removed once the grace is over.
pub const PREVIOUS_SECRET_FILE: &str = "jwt-secret.previous";
/// The longest grace a rotated secret may get: a week.
pub const JWT_GRACE_SECS_MAX: u64 = 7 * 24 * 3600;
/// The longest token accepted.
const TOKEN_BYTES_MAX: usize = 8 * 1024;

/// A caller's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Patient,
    Clinician,
    Auditor,
    Admin,
}

impl Role {
    /// The role's name in tokens and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Patient => "patient",
            Role::Clinician => "clinician",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "patient" => Some(Role::Patient),
            "clinician" => Some(Role::Clinician),
            "auditor" => Some(Role::Auditor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The token's claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The caller's id: a patient id, a clinician id, ...
    pub sub: String,
    pub role: Role,
    /// The caller's hospital (clinicians).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hospital: Option<String>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
}

/// Tokens remembered as verified, at most (then the memory starts over).
const VERIFIED_TOKENS_MAX: usize = 4096;

/// Where the claims this server needs are found in a token: a claim's name, or a dotted
/// path into nested objects (Keycloak's `realm_access.roles`). A name that holds dots
/// itself (an Auth0-style `https://hospital.example/role`) is tried whole first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimPaths {
    /// The caller's id (default `sub`; Entra ID's stable user id is `oid`).
    pub subject: String,
    /// The caller's role: a string, or an array holding exactly one of this server's
    /// role names (default `role`).
    pub role: String,
    /// The caller's hospital (default `hospital`).
    pub hospital: String,
}

impl Default for ClaimPaths {
    fn default() -> Self {
        ClaimPaths {
            subject: "sub".into(),
            role: "role".into(),
            hospital: "hospital".into(),
        }
    }
}

/// Seconds of clock difference allowed between a token's issuer and this server, for
/// `exp`, `nbf` and `iat`, by default.
pub const CLOCK_SKEW_SECS_DEFAULT: u64 = 5;
/// The most clock difference `--jwt-clock-skew-secs` may allow.
pub const CLOCK_SKEW_SECS_MAX: u64 = 300;
/// The longest `--jwt-max-lifetime-secs` (a year: `medledger token` mints at most that).
pub const TOKEN_LIFETIME_SECS_MAX: u64 = 366 * 24 * 3600;

/// What a token must say besides its signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRules {
    /// `--jwt-issuer`: the `iss` every token must carry.
    pub issuer: Option<String>,
    /// `--jwt-audience`: a value the token's `aud` must hold. Without it, `aud` is not
    /// checked (a token minted by `medledger token` has none; one from an identity
    /// provider usually names its client).
    pub audience: Option<String>,
    /// Where the subject, role and hospital are.
    pub claims: ClaimPaths,
    /// Clock difference allowed, at most [`CLOCK_SKEW_SECS_MAX`].
    pub clock_skew_secs: u64,
    /// `--jwt-max-lifetime-secs`: a token must carry `iat` and live at most this long
    /// (`exp - iat`). None: any lifetime.
    pub max_lifetime_secs: Option<u64>,
}

impl Default for TokenRules {
    fn default() -> Self {
        TokenRules {
            issuer: None,
            audience: None,
            claims: ClaimPaths::default(),
            clock_skew_secs: CLOCK_SKEW_SECS_DEFAULT,
            max_lifetime_secs: None,
        }
    }
}

/// How tokens are checked.
pub struct Auth {
    keys: std::sync::RwLock<Keys>,
    rules: TokenRules,
    /// The data dir whose HS256 secret this server may rotate (none: a key set, or a
    /// cluster's secret derived from the cluster's).
    rotatable: Option<PathBuf>,
    /// The JWKS file the key set came from, and the bytes last read from it.
    jwks: Option<(PathBuf, Mutex<Vec<u8>>)>,
    /// Tokens whose signature this key verified, with their claims. A client sends the
    /// same token with every request; checking the signature and parsing the claims again
    /// was ~5% of a worker's time per request. Expiry is checked on every use; a token
    /// that fails verification is never remembered.
    verified: Mutex<HashMap<String, Claims>>,
}

/// The keys tokens are verified with.
enum Keys {
    /// HS256: the current secret, and after a rotation the previous one until its end of
    /// grace (unix seconds).
    Secret {
        current: DecodingKey,
        previous: Option<(DecodingKey, u64)>,
    },
    /// Public keys, each with its one algorithm: `--jwt-public-key` (one RS256 key) or a
    /// JWKS document.
    Set(super::jwks::KeySet),
}

/// The checks of one algorithm under `rules`: only that algorithm (so an HS256 token
/// signed with an RS256 public key as its secret, or `alg: none`, is refused), `exp`
/// required and `nbf` honoured within the clock skew, and the issuer and audience the
/// rules name.
fn validation(algorithm: Algorithm, rules: &TokenRules) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = rules.clock_skew_secs;
    validation.validate_nbf = true;
    let mut required = vec!["exp"];
    match &rules.audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    if let Some(issuer) = &rules.issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    validation.set_required_spec_claims(&required);
    validation
}

/// Why a token was refused, in words of our own: the library's messages are internals.
fn refusal(error: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "the bearer token has expired",
        ErrorKind::ImmatureSignature => "the bearer token is not valid yet (nbf)",
        ErrorKind::InvalidAudience => "the bearer token is not for this service (aud)",
        ErrorKind::InvalidIssuer => "the bearer token is from another issuer (iss)",
        ErrorKind::MissingRequiredClaim(_) => "the bearer token lacks a required claim",
        ErrorKind::InvalidSignature => "the bearer token's signature does not verify",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => ALGORITHM_REFUSED,
        _ => "the bearer token is not a valid JWT with the claims this server needs",
    }
}

const ALGORITHM_REFUSED: &str =
    "the bearer token is signed with another algorithm than this server accepts";

/// The value at `path` in a token's claims (see [`ClaimPaths`]).
fn claim_at<'v>(claims: &'v serde_json::Value, path: &str) -> Option<&'v serde_json::Value> {
    claims
        .get(path)
        .or_else(|| path.split('.').try_fold(claims, |v, part| v.get(part)))
        .filter(|v| !v.is_null())
}

/// A numeric date claim (`exp`, `iat`) in whole seconds.
fn seconds(claims: &serde_json::Value, name: &str) -> Option<u64> {
    let v = claims.get(name)?;
    v.as_u64()
        .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

/// The caller a verified token names, under `rules`, at `now`.
fn claims_of(token: &serde_json::Value, rules: &TokenRules, now: u64) -> Result<Claims, String> {
    use medledger_chaincode::limits::ID_LEN_MAX;
    let paths = &rules.claims;
    // The caller's id and hospital go into the events it causes (a write, a read on the
    // ledger): the ledger's rule for ids.
    let id = |v: &serde_json::Value| {
        v.as_str()
            .filter(|s| medledger_chaincode::is_valid_id(s))
            .map(str::to_owned)
    };
    let sub = claim_at(token, &paths.subject)
        .and_then(id)
        .ok_or_else(|| {
            format!(
            "the bearer token's subject (`{}`) is missing or not an id (1 to {ID_LEN_MAX} bytes of letters, digits and . _ : @ -)",
            paths.subject
        )
        })?;
    let mut roles: Vec<Role> = match claim_at(token, &paths.role) {
        Some(serde_json::Value::String(s)) => Role::parse(s).into_iter().collect(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().and_then(Role::parse))
            .collect(),
        _ => Vec::new(),
    };
    roles.dedup();
    let role = match roles.as_slice() {
        [role] => *role,
        _ => {
            return Err(format!(
                "the bearer token's `{}` claim must name exactly one role of patient, clinician, auditor, admin",
                paths.role
            ))
        }
    };
    let hospital = match claim_at(token, &paths.hospital) {
        None => None,
        Some(v) => Some(id(v).ok_or_else(|| {
            format!(
                "the bearer token's hospital (`{}`) is not an id (1 to {ID_LEN_MAX} bytes of letters, digits and . _ : @ -)",
                paths.hospital
            )
        })?),
    };
    // Required and numeric: the validation checked it.
    let exp = seconds(token, "exp").unwrap_or(0);
    match seconds(token, "iat") {
        Some(iat) if iat > now + rules.clock_skew_secs => {
            return Err("the bearer token was issued in the future (iat)".into())
        }
        Some(iat) => {
            if let Some(max) = rules.max_lifetime_secs {
                if exp.saturating_sub(iat) > max {
                    return Err(format!(
                        "the bearer token lives longer than this server accepts ({max} s)"
                    ));
                }
            }
        }
        None if token.get("iat").is_some() => {
            return Err("the bearer token's iat is not a date".into())
        }
        None if rules.max_lifetime_secs.is_some() => {
            return Err("the bearer token lacks a required claim (iat)".into())
        }
        None => {}
    }
    Ok(Claims {
        sub,
        role,
        hospital,
        exp,
    })
}

impl Auth {
    /// HS256 with `secret`.
    pub fn hs256(secret: &[u8], rules: &TokenRules) -> Auth {
        Auth::new(
            Keys::Secret {
                current: DecodingKey::from_secret(secret),
                previous: None,
            },
            rules,
        )
    }

    /// HS256 with the secret of `data_dir` (created if missing; true when created), and
    /// the secret a rotation replaced while its grace lasts. This server may rotate it.
    pub fn hs256_of(data_dir: &Path, rules: &TokenRules) -> Result<(Auth, bool), String> {
        let (secret, created) = load_or_create_secret(data_dir)?;
        let previous = load_previous_secret(data_dir, now_secs())?;
        let mut auth = Auth::new(
            Keys::Secret {
                current: DecodingKey::from_secret(&secret),
                previous: previous.map(|(s, until)| (DecodingKey::from_secret(&s), until)),
            },
            rules,
        );
        auth.rotatable = Some(data_dir.to_path_buf());
        Ok((auth, created))
    }

    /// Replaces the data dir's HS256 secret with a new random one; tokens signed with the
    /// old one stay accepted for `grace_secs` (at most [`JWT_GRACE_SECS_MAX`]). Durable
    /// when it returns: the old secret is written to [`PREVIOUS_SECRET_FILE`] first, then
    /// the new one replaces [`SECRET_FILE`] (a crash between leaves the old one current).
    /// Returns the end of grace (unix seconds).
    pub fn rotate_hs256(&self, grace_secs: u64) -> Result<u64, String> {
        let Some(dir) = &self.rotatable else {
            return Err("this server's tokens are not checked with a secret it owns".into());
        };
        if grace_secs > JWT_GRACE_SECS_MAX {
            return Err(format!("the grace is at most {JWT_GRACE_SECS_MAX} seconds"));
        }
        let (old, _) = load_or_create_secret(dir)?;
        let mut new = vec![0u8; 32];
        getrandom::fill(&mut new).map_err(|e| format!("no randomness: {e}"))?;
        let until = now_secs() + grace_secs;
        write_durably(
            &dir.join(PREVIOUS_SECRET_FILE),
            format!("{} {until}", hex::encode(&old)).as_bytes(),
        )?;
        write_durably(&dir.join(SECRET_FILE), hex::encode(&new).as_bytes())?;
        *self.keys_mut() = Keys::Secret {
            current: DecodingKey::from_secret(&new),
            previous: Some((DecodingKey::from_secret(&old), until)),
        };
        // Tokens remembered as verified were verified with the old secret.
        self.verified().clear();
        Ok(until)
    }

    /// Whether [`Auth::rotate_hs256`] may run here.
    pub fn is_rotatable(&self) -> bool {
        self.rotatable.is_some()
    }

    fn keys(&self) -> std::sync::RwLockReadGuard<'_, Keys> {
        self.keys.read().unwrap_or_else(|e| e.into_inner())
    }

    fn keys_mut(&self) -> std::sync::RwLockWriteGuard<'_, Keys> {
        self.keys.write().unwrap_or_else(|e| e.into_inner())
    }

    /// RS256 with a PEM public key.
    pub fn rs256(public_key_pem: &[u8], rules: &TokenRules) -> Result<Auth, String> {
        let key = DecodingKey::from_rsa_pem(public_key_pem)
            .map_err(|e| format!("the RS256 public key is not a PEM RSA key: {e}"))?;
        let set = super::jwks::KeySet {
            keys: vec![super::jwks::SetKey {
                kid: None,
                algorithm: Algorithm::RS256,
                key,
            }],
            skipped: 0,
        };
        Ok(Auth::new(Keys::Set(set), rules))
    }

    /// The keys of a JWKS file (`--jwks-file`), re-read by [`Auth::reload_jwks`].
    pub fn jwks_file(path: &Path, rules: &TokenRules) -> Result<Auth, String> {
        let bytes = crate::disk::read_bounded(path, super::jwks::JWKS_BYTES_MAX as u64, "key set")?;
        let set = super::jwks::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut auth = Auth::new(Keys::Set(set), rules);
        auth.jwks = Some((path.to_path_buf(), Mutex::new(bytes)));
        Ok(auth)
    }

    /// Re-reads the JWKS file: when it changed and parses, its keys replace the set
    /// (and tokens remembered as verified are forgotten: a key removed from the set
    /// verifies nothing from now on). Returns the number of keys taken, or none when
    /// nothing changed (or the keys are not from a file). A file that does not read or
    /// parse leaves the set as it was.
    pub fn reload_jwks(&self) -> Result<Option<(usize, usize)>, String> {
        let Some((path, last)) = &self.jwks else {
            return Ok(None);
        };
        let bytes = crate::disk::read_bounded(path, super::jwks::JWKS_BYTES_MAX as u64, "key set")?;
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        if *last == bytes {
            return Ok(None);
        }
        let set = super::jwks::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        let taken = (set.keys.len(), set.skipped);
        *self.keys_mut() = Keys::Set(set);
        self.verified().clear();
        *last = bytes;
        Ok(Some(taken))
    }

    /// The keys' kind and count, for the start-up line.
    pub fn describe(&self) -> String {
        match (&*self.keys(), &self.jwks) {
            (Keys::Secret { .. }, _) => "HS256 secret".into(),
            (Keys::Set(set), Some((path, _))) => format!(
                "{} key(s) of {} ({} skipped)",
                set.keys.len(),
                path.display(),
                set.skipped
            ),
            (Keys::Set(_), None) => "an RS256 public key".into(),
        }
    }

    fn new(keys: Keys, rules: &TokenRules) -> Auth {
        Auth {
            keys: std::sync::RwLock::new(keys),
            rules: rules.clone(),
            rotatable: None,
            jwks: None,
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// The claims of a valid token.
    pub fn check(&self, token: &str) -> Result<Claims, ApiError> {
        self.check_at(token, now_secs())
    }

    /// [`Auth::check`] at `now` (seconds since the epoch) for a token verified before; a
    /// new token's signature and expiry are checked by `jsonwebtoken` against the clock.
    fn check_at(&self, token: &str, now: u64) -> Result<Claims, ApiError> {
        if token.len() > TOKEN_BYTES_MAX {
            return Err(ApiError::unauthorized("the bearer token is too long"));
        }
        let remembered = self.verified().get(token).cloned();
        let claims = match remembered {
            Some(claims) => claims,
            None => {
                let claims = self.verify(token, now)?;
                let mut verified = self.verified();
                if verified.len() >= VERIFIED_TOKENS_MAX {
                    verified.clear();
                }
                verified.insert(token.to_owned(), claims.clone());
                claims
            }
        };
        // jsonwebtoken's rule: expired when `exp < now - leeway`.
        if claims.exp < now.saturating_sub(self.rules.clock_skew_secs) {
            return Err(ApiError::unauthorized("the bearer token has expired"));
        }
        Ok(claims)
    }

    /// Verifies a token's signature and claims: with the current secret or, while its
    /// grace lasts, the previous one (a token of the previous secret is then treated as
    /// expiring at the end of grace at the latest); or with the key of the set its header
    /// names, for that key's one algorithm.
    fn verify(&self, token: &str, now: u64) -> Result<Claims, ApiError> {
        let refused = |e: jsonwebtoken::errors::Error| ApiError::unauthorized(refusal(&e));
        let header = jsonwebtoken::decode_header(token).map_err(refused)?;
        let keys = self.keys();
        let (value, until) = match &*keys {
            Keys::Secret { current, previous } => {
                let validation = validation(Algorithm::HS256, &self.rules);
                match jsonwebtoken::decode::<serde_json::Value>(token, current, &validation) {
                    Ok(d) => (d.claims, None),
                    Err(e) => match (e.kind(), previous) {
                        (
                            jsonwebtoken::errors::ErrorKind::InvalidSignature,
                            Some((previous, until)),
                        ) if now <= *until => {
                            let d = jsonwebtoken::decode(token, previous, &validation)
                                .map_err(refused)?;
                            (d.claims, Some(*until))
                        }
                        _ => return Err(refused(e)),
                    },
                }
            }
            Keys::Set(set) => {
                let key = set
                    .pick(header.kid.as_deref())
                    .map_err(ApiError::unauthorized)?;
                if header.alg != key.algorithm {
                    return Err(ApiError::unauthorized(ALGORITHM_REFUSED));
                }
                let validation = validation(key.algorithm, &self.rules);
                let d = jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &validation)
                    .map_err(refused)?;
                (d.claims, None)
            }
        };
        let mut claims = claims_of(&value, &self.rules, now).map_err(ApiError::unauthorized)?;
        if let Some(until) = until {
            claims.exp = claims.exp.min(until);
        }
        Ok(claims)
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, HashMap<String, Claims>> {
        // The map holds only verified tokens: one a panicking thread left is still right.
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Writes `bytes` to `path` (mode 0600) through a temporary file renamed over it, with
/// the file and its directory fsynced.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let fail = |e: std::io::Error| format!("writing {}: {e}", path.display());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(fail)
}

/// The secret a rotation replaced and its end of grace, if its grace lasts at `now`; an
/// expired one's file is removed (the old secret is destroyed).
pub fn load_previous_secret(data_dir: &Path, now: u64) -> Result<Option<(Vec<u8>, u64)>, String> {
    let path = data_dir.join(PREVIOUS_SECRET_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    let parsed = text.split_once(' ').and_then(|(secret, until)| {
        Some((
            hex::decode(secret.trim()).ok()?,
            until.trim().parse::<u64>().ok()?,
        ))
    });
    let Some((secret, until)) = parsed else {
        return Err(format!(
            "{} is not `<hex secret> <unix seconds>`",
            path.display()
        ));
    };
    if now > until {
        std::fs::remove_file(&path).map_err(|e| format!("removing {}: {e}", path.display()))?;
        return Ok(None);
    }
    Ok(Some((secret, until)))
}

/// The HS256 secret of `data_dir`, created (32 random bytes, mode 0600) if missing.
/// Returns the secret and whether it was just created.
pub fn load_or_create_secret(data_dir: &Path) -> Result<(Vec<u8>, bool), String> {
    let mut secret = vec![0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| format!("no randomness: {e}"))?;
    install_secret(data_dir, &secret)
}

/// The data dir's secret, or `secret` written there (mode 0600) when it has none; true
/// when written.
pub fn install_secret(data_dir: &Path, secret: &[u8]) -> Result<(Vec<u8>, bool), String> {
    let path: PathBuf = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => hex::decode(text.trim())
            .ok()
            .filter(|s| s.len() >= 32)
            .map(|s| (s, false))
            .ok_or_else(|| format!("{} is not a hex secret of 32 bytes or more", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            medledger_storage::ledger::fs::create_dir_durably(data_dir)
                .map_err(|e| format!("creating {}: {e}", data_dir.display()))?;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut file = opts
                .open(&path)
                .map_err(|e| format!("creating {}: {e}", path.display()))?;
            file.write_all(hex::encode(secret).as_bytes())
                .and_then(|()| file.sync_all())
                .and_then(|()| medledger_payload::fsutil::sync_parent_dir(&path))
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
            Ok((secret.to_vec(), true))
        }
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

/// Mints an HS256 token valid for `ttl_secs`.
pub fn mint(secret: &[u8], claims: &Claims) -> Result<String, String> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| e.to_string())
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An authenticated caller (the extractor answers 401 without a valid token).
#[derive(Clone, Debug)]
pub struct Caller(pub Claims);

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(caller(req))
    }
}

fn caller(req: &HttpRequest) -> Result<Caller, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::internal("no application state"))?;
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::unauthorized("an `Authorization: Bearer <token>` header is required")
        })?;
    let text = header
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?;
    state.auth.check(bearer_token(text)?).map(Caller)
}

/// The token of an `Authorization: Bearer <token>` header; the scheme's name is
/// case-insensitive (RFC 9110, section 11.1).
fn bearer_token(header: &str) -> Result<&str, ApiError> {
    let malformed = || ApiError::unauthorized("the Authorization header must be `Bearer <token>`");
    let (scheme, token) = header.trim().split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(malformed());
    }
    Ok(token.trim())
}

// ---- The rules, in one place. ----

impl Caller {
    pub fn role(&self) -> Role {
        self.0.role
    }

    pub fn id(&self) -> &str {
        &self.0.sub
    }

    pub fn hospital(&self) -> Option<&str> {
        self.0.hospital.as_deref()
    }

    /// Refuses (403) a caller that is not an admin: `what` "is for the admin role".
    pub fn admin_only(&self, what: &str) -> Result<(), ApiError> {
        if self.role() == Role::Admin {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("{what} is for the admin role")))
        }
    }

    /// May create or change records of `hospital_id`: a clinician of that hospital, or an
    /// admin.
    pub fn may_write_records_of(&self, hospital_id: &str) -> bool {
        match self.role() {
            Role::Admin => true,
            Role::Clinician => self.hospital() == Some(hospital_id),
            Role::Patient | Role::Auditor => false,
        }
    }

    /// May read a record's metadata: its patient; a clinician of its hospital or one the
    /// patient granted (unexpired, in scope); an auditor; an admin.
    pub fn may_read_record(
        &self,
        record: &RecordState,
        grant: Option<&GrantState>,
        now: Timestamp,
    ) -> bool {
        match self.role() {
            Role::Admin | Role::Auditor => true,
            Role::Patient => self.id() == record.patient_id,
            Role::Clinician => {
                self.hospital() == Some(record.hospital_id.as_str())
                    || grant.is_some_and(|g| {
                        g.grantee_id == self.id() && g.allows(&record.record_type, now)
                    })
            }
        }
    }

    /// May manage (grant, revoke, list) the grants of `patient_id`: that patient or an
    /// admin.
    pub fn may_manage_grants_of(&self, patient_id: &str) -> bool {
        match self.role() {
            Role::Admin => true,
            Role::Patient => self.id() == patient_id,
            Role::Clinician | Role::Auditor => false,
        }
    }

    /// May list a patient's timeline (items are still filtered by
    /// [`Caller::may_read_record`]): the patient, any clinician (who sees only what they
    /// may read), an auditor, an admin.
    pub fn may_list_patient(&self, patient_id: &str) -> bool {
        match self.role() {
            Role::Admin | Role::Auditor | Role::Clinician => true,
            Role::Patient => self.id() == patient_id,
        }
    }

    /// May list a hospital's records: its clinicians, auditors, admins.
    pub fn may_list_hospital(&self, hospital_id: &str) -> bool {
        match self.role() {
            Role::Admin | Role::Auditor => true,
            Role::Clinician => self.hospital() == Some(hospital_id),
            Role::Patient => false,
        }
    }

    /// May use the block explorer (chain, blocks, transactions, proofs, checkpoints):
    /// auditors and admins.
    pub fn may_explore(&self) -> bool {
        matches!(self.role(), Role::Admin | Role::Auditor)
    }

    /// May read who read a patient's records (the accounting of disclosures): that
    /// patient, auditors, admins.
    pub fn may_read_access_log_of(&self, patient_id: &str) -> bool {
        match self.role() {
            Role::Admin | Role::Auditor => true,
            Role::Patient => self.id() == patient_id,
            Role::Clinician => false,
        }
    }

    /// May list a clinician's records: that clinician, auditors, admins.
    pub fn may_list_clinician(&self, clinician_id: &str) -> bool {
        match self.role() {
            Role::Admin | Role::Auditor => true,
            Role::Clinician => self.id() == clinician_id,
            Role::Patient => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn token(exp: u64) -> String {
        let claims = Claims {
            sub: "dr-1".into(),
            role: Role::Clinician,
            hospital: Some("h-1".into()),
            exp,
        };
        mint(SECRET, &claims).unwrap()
    }

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "dr-1".into(),
            role: Role::Clinician,
            hospital: Some("h-1".into()),
            exp,
        }
    }

    #[test]
    fn a_rotated_secret_is_accepted_until_its_grace_ends_then_destroyed() {
        let dir = tempfile::tempdir().unwrap();
        let (auth, _) = Auth::hs256_of(dir.path(), &TokenRules::default()).unwrap();
        let (old_secret, _) = load_or_create_secret(dir.path()).unwrap();
        let now = now_secs();
        let old = mint(&old_secret, &claims(now + 3600)).unwrap();
        let remembered = mint(&old_secret, &claims(now + 3599)).unwrap();
        auth.check_at(&remembered, now).unwrap();
        let until = auth.rotate_hs256(100).unwrap();
        assert!((now + 100..=now + 102).contains(&until));
        // The new secret is the data dir's: `medledger token` mints with it.
        let (new_secret, created) = load_or_create_secret(dir.path()).unwrap();
        assert!(!created);
        assert_ne!(new_secret, old_secret);
        let new = mint(&new_secret, &claims(now + 3600)).unwrap();
        auth.check_at(&new, now).unwrap();
        // An old token: accepted during the grace, capped at its end, then refused.
        auth.check_at(&old, now).unwrap();
        auth.check_at(&remembered, now).unwrap();
        assert!(auth.check_at(&old, until + 10).is_err());
        assert!(auth.check_at(&remembered, until + 10).is_err());
        assert!(auth.check_at(&new, until + 10).is_ok());
        // A server started during the grace accepts old tokens too...
        let (restarted, _) = Auth::hs256_of(dir.path(), &TokenRules::default()).unwrap();
        restarted.check_at(&old, now).unwrap();
        // ... and once it is over, the old secret's file is removed.
        let previous = dir.path().join(PREVIOUS_SECRET_FILE);
        assert!(previous.exists());
        assert_eq!(load_previous_secret(dir.path(), until + 1).unwrap(), None);
        assert!(!previous.exists());
        let (later, _) = Auth::hs256_of(dir.path(), &TokenRules::default()).unwrap();
        assert!(later.check_at(&old, now).is_err());
        // Bounds, and a server whose secret is not its own cannot rotate.
        assert!(auth.rotate_hs256(JWT_GRACE_SECS_MAX + 1).is_err());
        assert!(Auth::hs256(SECRET, &TokenRules::default())
            .rotate_hs256(10)
            .is_err());
    }

    #[test]
    fn a_remembered_token_gives_the_same_claims_until_it_expires() {
        let auth = Auth::hs256(SECRET, &TokenRules::default());
        let now = now_secs();
        let t = token(now + 60);
        let first = auth.check_at(&t, now).unwrap();
        assert_eq!(auth.verified().len(), 1);
        assert_eq!(auth.check_at(&t, now + 10).unwrap(), first);
        // Within the leeway (5 s) past `exp` it still passes; past it, it does not,
        // although its signature was verified before.
        assert!(auth.check_at(&t, now + 65).is_ok());
        let e = auth.check_at(&t, now + 66).unwrap_err();
        assert_eq!(e.status, actix_web::http::StatusCode::UNAUTHORIZED);
        assert_eq!(e.message, "the bearer token has expired");
    }

    #[test]
    fn a_token_that_fails_verification_is_never_remembered() {
        let auth = Auth::hs256(SECRET, &TokenRules::default());
        let now = now_secs();
        let good = token(now + 60);
        auth.check_at(&good, now).unwrap();
        // The same claims under another signature.
        let at = good.rfind('.').unwrap() + 5;
        let other = if &good[at..=at] == "x" { "y" } else { "x" };
        let forged = format!("{}{other}{}", &good[..at], &good[at + 1..]);
        assert!(auth.check_at(&forged, now).is_err());
        assert!(Auth::hs256(
            b"another secret of thirty-two bytes!",
            &TokenRules::default()
        )
        .check_at(&good, now)
        .is_err());
        let expired = token(now - 60);
        assert!(auth.check_at(&expired, now).is_err());
        assert_eq!(auth.verified().len(), 1);
    }

    #[test]
    fn the_memory_of_verified_tokens_is_bounded() {
        let auth = Auth::hs256(SECRET, &TokenRules::default());
        let now = now_secs();
        for i in 0..VERIFIED_TOKENS_MAX as u64 + 10 {
            auth.check_at(&token(now + 60 + i), now).unwrap();
            assert!(auth.verified().len() <= VERIFIED_TOKENS_MAX);
        }
    }

    /// Tokens as an identity provider mints them: any claims, RS256 with the test key
    /// (fixtures/jwt/), or whatever header the test forges.
    fn rs256_token(claims: &serde_json::Value) -> String {
        let key =
            EncodingKey::from_rsa_pem(include_bytes!("../../fixtures/jwt/test-rsa.pem")).unwrap();
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &key).unwrap()
    }

    fn provider_auth() -> Auth {
        let rules = TokenRules {
            issuer: Some("https://idp.example/realms/hospital".into()),
            audience: Some("medledger".into()),
            ..TokenRules::default()
        };
        Auth::rs256(
            include_bytes!("../../fixtures/jwt/test-rsa.pub.pem"),
            &rules,
        )
        .unwrap()
    }

    fn provider_claims(now: u64) -> serde_json::Value {
        serde_json::json!({
            "sub": "dr-7", "role": "clinician", "hospital": "h-1",
            "iss": "https://idp.example/realms/hospital",
            "aud": ["account", "medledger"],
            "iat": now, "nbf": now, "exp": now + 300,
        })
    }

    #[test]
    fn a_provider_token_is_checked_for_issuer_audience_and_validity_window() {
        let auth = provider_auth();
        let now = now_secs();
        let good = provider_claims(now);
        assert_eq!(auth.check_at(&rs256_token(&good), now).unwrap().sub, "dr-7");
        let refused = |claims: serde_json::Value| {
            let e = auth.check_at(&rs256_token(&claims), now).unwrap_err();
            assert_eq!(e.status, actix_web::http::StatusCode::UNAUTHORIZED);
            e.message
        };
        let with = |key: &str, value: serde_json::Value| {
            let mut claims = good.clone();
            claims[key] = value;
            claims
        };
        let without = |key: &str| {
            let mut claims = good.clone();
            claims.as_object_mut().unwrap().remove(key);
            claims
        };
        assert_eq!(
            refused(with("aud", serde_json::json!("another-service"))),
            "the bearer token is not for this service (aud)"
        );
        assert_eq!(
            refused(without("aud")),
            "the bearer token lacks a required claim"
        );
        assert_eq!(
            refused(with("iss", serde_json::json!("https://evil.example"))),
            "the bearer token is from another issuer (iss)"
        );
        assert_eq!(
            refused(without("iss")),
            "the bearer token lacks a required claim"
        );
        assert_eq!(
            refused(with("nbf", serde_json::json!(now + 60))),
            "the bearer token is not valid yet (nbf)"
        );
        assert_eq!(
            refused(with("exp", serde_json::json!(now - 60))),
            "the bearer token has expired"
        );
        // Within the clock skew, a token from a slightly fast issuer passes.
        assert!(auth
            .check_at(&rs256_token(&with("nbf", serde_json::json!(now + 3))), now)
            .is_ok());
    }

    #[test]
    fn forged_algorithms_are_refused() {
        let auth = provider_auth();
        let now = now_secs();
        let claims = provider_claims(now);
        // The classic confusion: HS256 with the server's RS256 public key as the secret.
        let confused = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(include_bytes!("../../fixtures/jwt/test-rsa.pub.pem")),
        )
        .unwrap();
        assert_eq!(
            auth.check_at(&confused, now).unwrap_err().message,
            "the bearer token is signed with another algorithm than this server accepts"
        );
        // `alg: none`, no signature.
        use base64::Engine as _;
        let b64 = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let none = format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg": "none", "typ": "JWT"})),
            b64(&claims)
        );
        assert!(auth.check_at(&none, now).is_err());
        // An RS256 signature with one character changed.
        let good = rs256_token(&claims);
        let at = good.rfind('.').unwrap() + 10;
        let other = if &good[at..=at] == "A" { "B" } else { "A" };
        let forged = format!("{}{other}{}", &good[..at], &good[at + 1..]);
        assert_eq!(
            auth.check_at(&forged, now).unwrap_err().message,
            "the bearer token's signature does not verify"
        );
        // No message echoes the library.
        for token in ["", "a.b.c", "not a token"] {
            let message = auth.check_at(token, now).unwrap_err().message;
            assert!(message.starts_with("the bearer token"), "{message}");
        }
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc").unwrap(), "abc");
        assert_eq!(bearer_token("bearer abc").unwrap(), "abc");
        assert_eq!(bearer_token("BEARER  abc ").unwrap(), "abc");
        for bad in ["Basic abc", "Bearer", "Bearer ", "abc", "Bearerabc"] {
            assert!(bearer_token(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn without_rules_an_audience_claim_is_not_a_refusal() {
        // `medledger token` mints no `aud`; a provider's token names its client. With no
        // `--jwt-audience`, neither is refused for it.
        let auth = Auth::rs256(
            include_bytes!("../../fixtures/jwt/test-rsa.pub.pem"),
            &TokenRules::default(),
        )
        .unwrap();
        let now = now_secs();
        assert!(auth
            .check_at(&rs256_token(&provider_claims(now)), now)
            .is_ok());
    }

    /// A key set of the three test keys, each with its kid: `rsa`, `ec`, `ed`.
    fn key_set_file(dir: &Path, kids: &[&str]) -> PathBuf {
        let jwk = |kid: &str| {
            let text = match kid {
                "rsa" => include_str!("../../fixtures/jwt/test-rsa.pub.jwk.json"),
                "ec" => include_str!("../../fixtures/jwt/test-ec.pub.jwk.json"),
                "ed" => include_str!("../../fixtures/jwt/test-ed25519.pub.jwk.json"),
                _ => unreachable!(),
            };
            let mut jwk: serde_json::Value = serde_json::from_str(text).unwrap();
            jwk["kid"] = kid.into();
            jwk
        };
        let keys: Vec<_> = kids.iter().map(|k| jwk(k)).collect();
        let path = dir.join("jwks.json");
        std::fs::write(&path, serde_json::json!({ "keys": keys }).to_string()).unwrap();
        path
    }

    /// A token signed by the test key `kid` names, with that kid in its header.
    fn signed(kid: &str, claims: &serde_json::Value) -> String {
        let (algorithm, key) = match kid {
            "rsa" => (
                Algorithm::RS256,
                EncodingKey::from_rsa_pem(include_bytes!("../../fixtures/jwt/test-rsa.pem")),
            ),
            "ec" => (
                Algorithm::ES256,
                EncodingKey::from_ec_pem(include_bytes!("../../fixtures/jwt/test-ec.pem")),
            ),
            "ed" => (
                Algorithm::EdDSA,
                EncodingKey::from_ed_pem(include_bytes!("../../fixtures/jwt/test-ed25519.pem")),
            ),
            _ => unreachable!(),
        };
        let mut header = Header::new(algorithm);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, &key.unwrap()).unwrap()
    }

    #[test]
    fn a_key_set_verifies_rs256_es256_and_eddsa_tokens_by_kid() {
        let dir = tempfile::tempdir().unwrap();
        let path = key_set_file(dir.path(), &["rsa", "ec", "ed"]);
        let rules = TokenRules {
            issuer: Some("https://idp.example/realms/hospital".into()),
            audience: Some("medledger".into()),
            ..TokenRules::default()
        };
        let auth = Auth::jwks_file(&path, &rules).unwrap();
        let now = now_secs();
        let claims = provider_claims(now);
        for kid in ["rsa", "ec", "ed"] {
            assert_eq!(
                auth.check_at(&signed(kid, &claims), now).unwrap().sub,
                "dr-7"
            );
        }
        // A token that names a kid the set lacks.
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("retired".into());
        let key =
            EncodingKey::from_rsa_pem(include_bytes!("../../fixtures/jwt/test-rsa.pem")).unwrap();
        let unknown = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        assert_eq!(
            auth.check_at(&unknown, now).unwrap_err().message,
            "the bearer token's key (kid) is not in this server's key set"
        );
        // No kid, several keys.
        assert_eq!(
            auth.check_at(&rs256_token(&claims), now)
                .unwrap_err()
                .message,
            "the bearer token names no key (kid) and this server has several"
        );
        // The RSA key's kid on an ES256 header: the key verifies RS256 only.
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("rsa".into());
        let ec =
            EncodingKey::from_ec_pem(include_bytes!("../../fixtures/jwt/test-ec.pem")).unwrap();
        let crossed = jsonwebtoken::encode(&header, &claims, &ec).unwrap();
        assert_eq!(
            auth.check_at(&crossed, now).unwrap_err().message,
            ALGORITHM_REFUSED
        );
        // HS256 with the RSA key's public JWK as the secret: the confusion attack.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa".into());
        let confused = jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(include_bytes!("../../fixtures/jwt/test-rsa.pub.jwk.json")),
        )
        .unwrap();
        assert_eq!(
            auth.check_at(&confused, now).unwrap_err().message,
            ALGORITHM_REFUSED
        );
    }

    #[test]
    fn claims_are_found_where_the_identity_provider_puts_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = key_set_file(dir.path(), &["ec"]);
        // Keycloak: roles under realm_access.roles among the realm's own; the hospital a
        // user attribute mapped into a nested claim; the id in preferred_username.
        let rules = TokenRules {
            claims: ClaimPaths {
                subject: "preferred_username".into(),
                role: "realm_access.roles".into(),
                hospital: "org.hospital".into(),
            },
            ..TokenRules::default()
        };
        let auth = Auth::jwks_file(&path, &rules).unwrap();
        let now = now_secs();
        let token = |roles: serde_json::Value| {
            signed(
                "ec",
                &serde_json::json!({
                    "sub": "f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
                    "preferred_username": "dr-9",
                    "realm_access": {"roles": roles},
                    "org": {"hospital": "h-3"},
                    "exp": now + 300,
                }),
            )
        };
        let claims = auth
            .check_at(
                &token(serde_json::json!(["offline_access", "clinician"])),
                now,
            )
            .unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.role, claims.hospital.as_deref()),
            ("dr-9", Role::Clinician, Some("h-3"))
        );
        let message = |roles| auth.check_at(&token(roles), now).unwrap_err().message;
        for roles in [
            serde_json::json!(["clinician", "admin"]),
            serde_json::json!(["offline_access"]),
            serde_json::json!([]),
            serde_json::json!(7),
        ] {
            assert_eq!(
                message(roles),
                "the bearer token's `realm_access.roles` claim must name exactly one role of patient, clinician, auditor, admin"
            );
        }
        // A claim name with dots is taken whole (Auth0's namespaced claims).
        let auth = Auth::jwks_file(
            &path,
            &TokenRules {
                claims: ClaimPaths {
                    role: "https://hospital.example/role".into(),
                    ..ClaimPaths::default()
                },
                ..TokenRules::default()
            },
        )
        .unwrap();
        let t = signed(
            "ec",
            &serde_json::json!({"sub": "au-2", "https://hospital.example/role": "auditor", "exp": now + 60}),
        );
        assert_eq!(auth.check_at(&t, now).unwrap().role, Role::Auditor);
        // A subject that is no id.
        let t = signed(
            "ec",
            &serde_json::json!({"sub": "x".repeat(129), "https://hospital.example/role": "auditor", "exp": now + 60}),
        );
        assert!(auth
            .check_at(&t, now)
            .unwrap_err()
            .message
            .contains("subject (`sub`)"));
        // Nor one with a character the ledger's ids do not take.
        let t = signed(
            "ec",
            &serde_json::json!({"sub": "dr+1@hospital.example", "https://hospital.example/role": "auditor", "exp": now + 60}),
        );
        assert!(auth
            .check_at(&t, now)
            .unwrap_err()
            .message
            .contains("not an id"));
    }

    #[test]
    fn a_token_lives_no_longer_than_the_server_allows() {
        let dir = tempfile::tempdir().unwrap();
        let path = key_set_file(dir.path(), &["ed"]);
        let auth = Auth::jwks_file(
            &path,
            &TokenRules {
                max_lifetime_secs: Some(3600),
                clock_skew_secs: 30,
                ..TokenRules::default()
            },
        )
        .unwrap();
        let now = now_secs();
        let token = |iat: Option<u64>, exp: u64| {
            let mut claims = serde_json::json!({"sub": "p-1", "role": "patient", "exp": exp});
            if let Some(iat) = iat {
                claims["iat"] = iat.into();
            }
            signed("ed", &claims)
        };
        assert!(auth.check_at(&token(Some(now), now + 3600), now).is_ok());
        let refused = |t: String| auth.check_at(&t, now).unwrap_err().message;
        assert_eq!(
            refused(token(Some(now), now + 3601)),
            "the bearer token lives longer than this server accepts (3600 s)"
        );
        assert_eq!(
            refused(token(None, now + 60)),
            "the bearer token lacks a required claim (iat)"
        );
        assert_eq!(
            refused(token(Some(now + 31), now + 600)),
            "the bearer token was issued in the future (iat)"
        );
        // Within the configured skew: 30 s.
        assert!(auth
            .check_at(&token(Some(now + 30), now + 600), now)
            .is_ok());
    }

    #[test]
    fn a_changed_key_set_replaces_the_keys_and_a_broken_one_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let path = key_set_file(dir.path(), &["rsa"]);
        let auth = Auth::jwks_file(&path, &TokenRules::default()).unwrap();
        let now = now_secs();
        let claims = serde_json::json!({"sub": "admin-1", "role": "admin", "exp": now + 60});
        let (rsa, ed) = (signed("rsa", &claims), signed("ed", &claims));
        auth.check_at(&rsa, now).unwrap();
        assert!(auth.check_at(&ed, now).is_err());
        assert_eq!(auth.reload_jwks().unwrap(), None, "unchanged");
        // The provider rolls over: the new key is published beside the old, then alone.
        key_set_file(dir.path(), &["rsa", "ed"]);
        assert_eq!(auth.reload_jwks().unwrap(), Some((2, 0)));
        auth.check_at(&ed, now).unwrap();
        key_set_file(dir.path(), &["ed"]);
        assert_eq!(auth.reload_jwks().unwrap(), Some((1, 0)));
        // The old key's token was remembered as verified: forgotten with its key.
        assert!(auth.check_at(&rsa, now).is_err());
        auth.check_at(&ed, now).unwrap();
        // A broken file, or none, leaves the keys as they were.
        std::fs::write(&path, b"{\"keys\": [").unwrap();
        assert!(auth.reload_jwks().unwrap_err().contains("not JSON"));
        auth.check_at(&ed, now).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(auth.reload_jwks().is_err());
        auth.check_at(&ed, now).unwrap();
        assert!(Auth::jwks_file(&path, &TokenRules::default()).is_err());
    }
}
