//! Who is calling, and what they may do: bearer JWTs (HS256 with the data dir's secret, or
//! RS256 with a configured public key), and every access rule in one place.

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

/// How tokens are checked.
pub struct Auth {
    key: DecodingKey,
    validation: Validation,
    /// Tokens whose signature this key verified, with their claims. A client sends the
    /// same token with every request; checking the signature and parsing the claims again
    /// was ~5% of a worker's time per request. Expiry is checked on every use; a token
    /// that fails verification is never remembered.
    verified: Mutex<HashMap<String, Claims>>,
}

impl Auth {
    /// HS256 with `secret`.
    pub fn hs256(secret: &[u8]) -> Auth {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        Auth::new(DecodingKey::from_secret(secret), validation)
    }

    /// RS256 with a PEM public key.
    pub fn rs256(public_key_pem: &[u8]) -> Result<Auth, String> {
        let key = DecodingKey::from_rsa_pem(public_key_pem)
            .map_err(|e| format!("the RS256 public key is not a PEM RSA key: {e}"))?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = 5;
        Ok(Auth::new(key, validation))
    }

    fn new(key: DecodingKey, validation: Validation) -> Auth {
        Auth {
            key,
            validation,
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
                let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
                    .map(|d| d.claims)
                    .map_err(|e| ApiError::unauthorized(format!("invalid bearer token: {e}")))?;
                let mut verified = self.verified();
                if verified.len() >= VERIFIED_TOKENS_MAX {
                    verified.clear();
                }
                verified.insert(token.to_owned(), claims.clone());
                claims
            }
        };
        // jsonwebtoken's rule: expired when `exp < now - leeway`.
        if claims.exp < now.saturating_sub(self.validation.leeway) {
            return Err(ApiError::unauthorized(
                "invalid bearer token: ExpiredSignature",
            ));
        }
        Ok(claims)
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, HashMap<String, Claims>> {
        // The map holds only verified tokens: one a panicking thread left is still right.
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The HS256 secret of `data_dir`, created (32 random bytes, mode 0600) if missing.
/// Returns the secret and whether it was just created.
pub fn load_or_create_secret(data_dir: &Path) -> Result<(Vec<u8>, bool), String> {
    let path: PathBuf = data_dir.join(SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => hex::decode(text.trim())
            .ok()
            .filter(|s| s.len() >= 32)
            .map(|s| (s, false))
            .ok_or_else(|| format!("{} is not a hex secret of 32 bytes or more", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir)
                .map_err(|e| format!("creating {}: {e}", data_dir.display()))?;
            let mut secret = vec![0u8; 32];
            getrandom::fill(&mut secret).map_err(|e| format!("no randomness: {e}"))?;
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
            file.write_all(hex::encode(&secret).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
            Ok((secret, true))
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
    let token = text.strip_prefix("Bearer ").ok_or_else(|| {
        ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
    })?;
    state.auth.check(token.trim()).map(Caller)
}

// ---- The rules, in one place. ----

impl Caller {
    pub fn role(&self) -> Role {
        self.0.role
    }

    pub fn id(&self) -> &str {
        &self.0.sub
    }

    fn hospital(&self) -> Option<&str> {
        self.0.hospital.as_deref()
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

    #[test]
    fn a_remembered_token_gives_the_same_claims_until_it_expires() {
        let auth = Auth::hs256(SECRET);
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
        assert!(e.message.contains("ExpiredSignature"), "{}", e.message);
    }

    #[test]
    fn a_token_that_fails_verification_is_never_remembered() {
        let auth = Auth::hs256(SECRET);
        let now = now_secs();
        let good = token(now + 60);
        auth.check_at(&good, now).unwrap();
        // The same claims under another signature.
        let at = good.rfind('.').unwrap() + 5;
        let other = if &good[at..=at] == "x" { "y" } else { "x" };
        let forged = format!("{}{other}{}", &good[..at], &good[at + 1..]);
        assert!(auth.check_at(&forged, now).is_err());
        assert!(Auth::hs256(b"another secret of thirty-two bytes!")
            .check_at(&good, now)
            .is_err());
        let expired = token(now - 60);
        assert!(auth.check_at(&expired, now).is_err());
        assert_eq!(auth.verified().len(), 1);
    }

    #[test]
    fn the_memory_of_verified_tokens_is_bounded() {
        let auth = Auth::hs256(SECRET);
        let now = now_secs();
        for i in 0..VERIFIED_TOKENS_MAX as u64 + 10 {
            auth.check_at(&token(now + 60 + i), now).unwrap();
            assert!(auth.verified().len() <= VERIFIED_TOKENS_MAX);
        }
    }
}
