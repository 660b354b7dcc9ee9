//! The built-in chat page: its files, embedded in the binary, and how a
//! browser signs in. `opzero-host open` (holding the secret) asks for a
//! one-time code, valid 60 s; the page trades it for a session cookie
//! (`HttpOnly`, `SameSite=Strict`); the cookie then stands for the secret,
//! but only in a request from the bridge's own origin.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub const COOKIE: &str = "opzero_session";
pub const CODE_LIFETIME: Duration = Duration::from_secs(60);
/// Codes and signed-in browsers remembered at most; the oldest go first.
const MAX_CODES: usize = 100;
const MAX_SESSIONS: usize = 64;

/// The page: `(path, content type, body)`.
pub const ASSETS: [(&str, &str, &str); 3] = [
    ("/", "text/html; charset=utf-8", include_str!("../web/index.html")),
    ("/app.js", "text/javascript; charset=utf-8", include_str!("../web/app.js")),
    ("/app.css", "text/css; charset=utf-8", include_str!("../web/app.css")),
];

/// Only the page's own files run, and nothing frames it.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

type Digest32 = [u8; 32];

fn digest(s: &str) -> Digest32 {
    Sha256::digest(s.as_bytes()).into()
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("OS randomness");
    hex::encode(bytes)
}

struct Code {
    digest: Digest32,
    expires: Instant,
    used: bool,
}

#[derive(Debug, PartialEq)]
pub enum CodeError {
    Unknown,
    Used,
    Expired,
}

impl std::fmt::Display for CodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CodeError::Unknown => "this sign-in link is not valid",
            CodeError::Used => "this sign-in link has already been used",
            CodeError::Expired => "this sign-in link has expired (links last 60 seconds)",
        })
    }
}

/// Sign-in codes and the browsers signed in with them, kept as digests.
/// Nothing here runs on a timer: a code's age is checked when it is used.
#[derive(Default)]
pub struct SignIn {
    codes: Mutex<VecDeque<Code>>,
    sessions: Mutex<VecDeque<Digest32>>,
}

impl SignIn {
    /// A new one-time code.
    pub fn new_code(&self) -> String {
        let code = random_hex();
        let mut codes = self.codes.lock().unwrap();
        if codes.len() == MAX_CODES {
            codes.pop_front();
        }
        codes.push_back(Code { digest: digest(&code), expires: Instant::now() + CODE_LIFETIME, used: false });
        code
    }

    /// Spends `code` on a new session; returns the session's token.
    pub fn redeem(&self, code: &str) -> Result<String, CodeError> {
        let wanted = digest(code);
        {
            let mut codes = self.codes.lock().unwrap();
            let code = codes.iter_mut().find(|c| c.digest == wanted).ok_or(CodeError::Unknown)?;
            if code.used {
                return Err(CodeError::Used);
            }
            code.used = true;
            if Instant::now() > code.expires {
                return Err(CodeError::Expired);
            }
        }
        let token = random_hex();
        let mut sessions = self.sessions.lock().unwrap();
        if sessions.len() == MAX_SESSIONS {
            sessions.pop_front();
        }
        sessions.push_back(digest(&token));
        Ok(token)
    }

    /// Whether a `Cookie` header holds a signed-in session.
    pub fn signed_in(&self, cookie_header: &str) -> bool {
        let tokens: Vec<Digest32> = cookie::Cookie::split_parse(cookie_header)
            .flatten()
            .filter(|c| c.name() == COOKIE)
            .map(|c| digest(c.value()))
            .collect();
        let sessions = self.sessions.lock().unwrap();
        tokens.iter().any(|t| sessions.contains(t))
    }
}

/// The `Set-Cookie` value for a session: no `Secure`, since the bridge is
/// plain HTTP on loopback.
pub fn session_cookie(token: String) -> String {
    cookie::Cookie::build((COOKIE, token))
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .path("/")
        .build()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_works_once_and_its_session_is_recognized() {
        let s = SignIn::default();
        let code = s.new_code();
        assert_eq!(s.redeem("nope"), Err(CodeError::Unknown));
        let token = s.redeem(&code).unwrap();
        assert_eq!(s.redeem(&code), Err(CodeError::Used));
        assert!(s.signed_in(&format!("a=b; {COOKIE}={token}")));
        assert!(!s.signed_in(&format!("{COOKIE}=x{token}")));
        s.codes.lock().unwrap().back_mut().unwrap().used = false;
        s.codes.lock().unwrap().back_mut().unwrap().expires = Instant::now() - Duration::from_secs(1);
        assert_eq!(s.redeem(&code), Err(CodeError::Expired));
        assert_eq!(session_cookie("t".into()), "opzero_session=t; HttpOnly; SameSite=Strict; Path=/");
    }
}
