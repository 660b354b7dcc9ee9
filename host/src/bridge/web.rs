//! The built-in chat page: its files, embedded in the binary, and how a
//! browser signs in. `opzero-host open` (holding the secret) asks for a
//! one-time code, valid 60 s; the page trades it for a token that lasts
//! `[bridge] sign_in_hours`. The page keeps the token in `sessionStorage`,
//! which browsers keep per scheme, host and port, and sends it in a header:
//! unlike a cookie, it never reaches another port of the same host.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const CODE_LIFETIME: Duration = Duration::from_secs(60);
/// Codes and signed-in browsers remembered at most; the oldest go first.
const MAX_CODES: usize = 100;
const MAX_SESSIONS: usize = 64;

/// The page: `(path, content type, body)`.
pub const ASSETS: [(&str, &str, &str); 3] = [
    ("/", "text/html; charset=utf-8", include_str!("../../web/index.html")),
    ("/app.js", "text/javascript; charset=utf-8", include_str!("../../web/app.js")),
    ("/app.css", "text/css; charset=utf-8", include_str!("../../web/app.css")),
];

/// Only the page's own files run, and nothing frames it.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub type Digest32 = [u8; 32];

fn digest(s: &str) -> Digest32 {
    Sha256::digest(s.as_bytes()).into()
}

fn random_hex() -> String {
    crate::private::random_hex().expect("OS randomness")
}

struct Code {
    digest: Digest32,
    expires: Instant,
    used: bool,
    /// The page `open` hands the browser, which redirects to the link: it
    /// goes once the code is used, or expires.
    file: Option<PathBuf>,
}

impl Code {
    fn remove_file(&mut self) {
        if let Some(file) = self.file.take() {
            let _ = std::fs::remove_file(file);
        }
    }
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum CodeError {
    #[error("this sign-in link is not valid")]
    Unknown,
    #[error("this sign-in link has already been used")]
    Used,
    #[error("this sign-in link has expired (links last 60 seconds)")]
    Expired,
}

/// What a page's token is worth.
#[derive(Debug, PartialEq)]
pub enum Token {
    /// Signed in; the digest names the sign-in (for sign-out).
    Valid(Digest32),
    Expired,
    Unknown,
}

struct SignedIn {
    digest: Digest32,
    expires: Instant,
}

/// Sign-in codes and the browsers signed in with them, kept as digests.
/// Nothing here runs on a timer but a code's link page: a code's or a
/// token's age is checked when it is used.
pub struct SignIn {
    lifetime: Duration,
    /// Where link pages go (`$OPZERO_HOME/signin`), named for the session.
    link_dir: PathBuf,
    session_id: String,
    codes: Arc<Mutex<VecDeque<Code>>>,
    sessions: Mutex<VecDeque<SignedIn>>,
}

impl SignIn {
    pub fn new(lifetime: Duration, link_dir: PathBuf, session_id: String) -> SignIn {
        SignIn { lifetime, link_dir, session_id, codes: Arc::default(), sessions: Mutex::default() }
    }

    /// How long a sign-in lasts.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A new one-time code.
    pub fn new_code(&self) -> String {
        self.add_code(None)
    }

    fn add_code(&self, file: Option<PathBuf>) -> String {
        let code = random_hex();
        let mut codes = self.codes.lock().unwrap();
        if codes.len() == MAX_CODES
            && let Some(mut old) = codes.pop_front()
        {
            old.remove_file();
        }
        codes.push_back(Code { digest: digest(&code), expires: Instant::now() + CODE_LIFETIME, used: false, file });
        code
    }

    /// A new one-time code, and a private page (0600, in a 0700 directory)
    /// that sends a browser on to `base/#code=CODE`: what `open` hands the
    /// browser, so that the code is never on a command line. The page is
    /// removed once the code is used, or when it expires.
    pub fn new_code_with_page(&self, base: &str) -> std::io::Result<(String, PathBuf)> {
        crate::private::create_dir(&self.link_dir)?;
        let path = self.link_dir.join(format!("{}-{}.html", self.session_id, &random_hex()[..16]));
        let code = self.add_code(Some(path.clone()));
        let wanted = digest(&code);
        if let Err(e) = crate::private::write_file(&path, link_page(&format!("{base}/#code={code}")).as_bytes()) {
            // Nobody will have this code: forget it.
            self.codes.lock().unwrap().retain(|c| c.digest != wanted);
            return Err(e);
        }
        let codes = self.codes.clone();
        tokio::spawn(async move {
            tokio::time::sleep(CODE_LIFETIME).await;
            let mut codes = codes.lock().unwrap();
            if let Some(code) = codes.iter_mut().find(|c| c.digest == wanted) {
                code.remove_file();
            }
        });
        Ok((code, path))
    }

    /// Removes the link pages still waiting: the host is exiting.
    pub fn remove_pages(&self) {
        for code in self.codes.lock().unwrap().iter_mut() {
            code.remove_file();
        }
    }

    /// Spends `code` on a new sign-in; returns its token.
    pub fn redeem(&self, code: &str) -> Result<String, CodeError> {
        let wanted = digest(code);
        {
            let mut codes = self.codes.lock().unwrap();
            let code = codes.iter_mut().find(|c| bool::from(c.digest.ct_eq(&wanted))).ok_or(CodeError::Unknown)?;
            if code.used {
                return Err(CodeError::Used);
            }
            code.used = true;
            code.remove_file();
            if Instant::now() > code.expires {
                return Err(CodeError::Expired);
            }
        }
        let token = random_hex();
        let mut sessions = self.sessions.lock().unwrap();
        sessions.retain(|s| s.expires > Instant::now());
        if sessions.len() == MAX_SESSIONS {
            sessions.pop_front();
        }
        sessions.push_back(SignedIn { digest: digest(&token), expires: Instant::now() + self.lifetime });
        Ok(token)
    }

    /// What `token` is worth now.
    pub fn check(&self, token: &[u8]) -> Token {
        let Ok(token) = std::str::from_utf8(token) else { return Token::Unknown };
        let wanted = digest(token);
        let sessions = self.sessions.lock().unwrap();
        match sessions.iter().find(|s| bool::from(s.digest.ct_eq(&wanted))) {
            Some(s) if Instant::now() < s.expires => Token::Valid(s.digest),
            Some(_) => Token::Expired,
            None => Token::Unknown,
        }
    }

    /// Ends a sign-in.
    pub fn sign_out(&self, signed_in: &Digest32) {
        self.sessions.lock().unwrap().retain(|s| s.digest != *signed_in);
    }
}

/// A page that sends the browser on to `url` at once.
fn link_page(url: &str) -> String {
    let url = url.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;");
    format!(
        "<!doctype html>\n<meta charset=\"utf-8\">\n<meta name=\"referrer\" content=\"no-referrer\">\n\
<meta http-equiv=\"refresh\" content=\"0; url={url}\">\n<title>Signing in to opzero-host</title>\n\
<p><a href=\"{url}\">Continue to the chat page</a></p>\n"
    )
}

/// Removes link pages of this session left by a host that did not exit
/// cleanly.
pub fn sweep_pages(link_dir: &Path, session_id: &str) {
    let Ok(entries) = std::fs::read_dir(link_dir) else { return };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&format!("{session_id}-")) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign_in() -> SignIn {
        SignIn::new(Duration::from_secs(3600), std::env::temp_dir(), "s".into())
    }

    #[test]
    fn a_code_works_once_and_its_token_lasts_until_sign_out() {
        let s = sign_in();
        let code = s.new_code();
        assert_eq!(s.redeem("nope"), Err(CodeError::Unknown));
        let token = s.redeem(&code).unwrap();
        assert_eq!(s.redeem(&code), Err(CodeError::Used));
        let Token::Valid(signed_in) = s.check(token.as_bytes()) else { panic!("not signed in") };
        assert_eq!(s.check(format!("x{token}").as_bytes()), Token::Unknown);
        s.codes.lock().unwrap().back_mut().unwrap().used = false;
        s.codes.lock().unwrap().back_mut().unwrap().expires = Instant::now() - Duration::from_secs(1);
        assert_eq!(s.redeem(&code), Err(CodeError::Expired));
        s.sign_out(&signed_in);
        assert_eq!(s.check(token.as_bytes()), Token::Unknown);
    }

    #[test]
    fn a_token_expires() {
        let s = sign_in();
        let token = s.redeem(&s.new_code()).unwrap();
        s.sessions.lock().unwrap().back_mut().unwrap().expires = Instant::now() - Duration::from_secs(1);
        assert_eq!(s.check(token.as_bytes()), Token::Expired);
    }

    #[test]
    fn the_link_page_escapes_what_it_links_to() {
        let page = link_page("http://a/#code=1&\"<x>");
        assert!(page.contains("url=http://a/#code=1&amp;&quot;&lt;x&gt;\""), "{page}");
    }
}
