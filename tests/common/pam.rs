//! PAM in the end-to-end tests: a test service in /etc/pam.d that loads the freshly built
//! `target/<profile>/libpam_tessera.so` by its absolute path, and `pamtester` runs against it with
//! the conversation on stdin and `DBUS_SYSTEM_BUS_ADDRESS` set to the test's private bus (pamtester
//! is not setuid, so the module honours it).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::restore::PAM_SERVICE_PREFIX;
use super::{bin, run};

/// One test PAM service, removed on drop (and by `scripts/test-cleanup.sh` if the test is killed).
pub struct PamService {
    name: String,
    path: PathBuf,
}

impl PamService {
    /// A service whose configuration is `lines`, where `{module}` stands for the module's absolute
    /// path.
    pub fn new(lines: &str) -> PamService {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = PathBuf::from(format!(
            "{PAM_SERVICE_PREFIX}{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("service name")
            .to_owned();
        let module = module();
        let text = lines.replace("{module}", module.to_str().expect("module path"));
        fs::write(&path, text).unwrap_or_else(|e| {
            panic!("write {} (the e2e tests run as root): {e}", path.display())
        });
        PamService { name, path }
    }

    /// `auth required <module> <args>`, `account required pam_permit.so`.
    pub fn auth(args: &str) -> PamService {
        PamService::new(&format!(
            "auth required {{module}} {args}\naccount required pam_permit.so\n"
        ))
    }

    /// The service name (`pamtester`'s first argument; PAM_SERVICE).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The token audience the module asks for by default.
    pub fn audience(&self) -> String {
        format!("pam:{}", self.name)
    }
}

impl Drop for PamService {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// `target/<profile>/libpam_tessera.so`.
pub fn module() -> PathBuf {
    bin("libpam_tessera.so")
}

/// What pamtester printed, and how it ended.
pub struct PamRun {
    pub output: Output,
}

impl PamRun {
    /// Everything pamtester and the module's conversation printed (stdout then stderr).
    pub fn text(&self) -> String {
        format!(
            "{}{}",
            String::from_utf8_lossy(&self.output.stdout),
            String::from_utf8_lossy(&self.output.stderr)
        )
    }

    /// Whether pamtester reported success of every operation.
    pub fn succeeded(&self) -> bool {
        self.output.status.success()
    }

    /// Panics unless pamtester failed with `code`'s message (pam_strerror's text).
    pub fn assert_failed(&self, code: PamCode) {
        let text = self.text();
        assert!(
            !self.succeeded() && text.contains(code.message()),
            "expected {code:?} ({:?}), got {}:\n{text}",
            code.message(),
            self.output.status
        );
    }

    /// Panics unless pamtester succeeded.
    pub fn assert_ok(&self) {
        assert!(self.succeeded(), "pamtester failed:\n{}", self.text());
    }
}

/// The PAM codes the module returns on failure, as pam_strerror (Linux-PAM) words them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PamCode {
    ServiceErr,
    AuthErr,
    AuthinfoUnavail,
    UserUnknown,
    MaxTries,
    ConvErr,
    CredErr,
}

impl PamCode {
    pub fn message(self) -> &'static str {
        match self {
            PamCode::ServiceErr => "Error in service module",
            PamCode::AuthErr => "Authentication failure",
            PamCode::AuthinfoUnavail => {
                "Authentication service cannot retrieve authentication info"
            }
            PamCode::UserUnknown => "User not known to the underlying authentication module",
            PamCode::MaxTries => "Have exhausted maximum number of retries for service",
            PamCode::ConvErr => "Conversation error",
            PamCode::CredErr => "Failure setting user credentials",
        }
    }
}

/// The pamtester command for `service`, `user` and `ops` ("authenticate", "open_session", ...)
/// on the bus at `bus`; `extra` goes before the service (e.g. `-I rhost=host`).
pub fn pamtester_cmd(
    bus: &str,
    service: &PamService,
    user: &str,
    ops: &[&str],
    extra: &[&str],
) -> Command {
    let mut cmd = Command::new("pamtester");
    cmd.env("DBUS_SYSTEM_BUS_ADDRESS", bus)
        .arg("-v")
        .args(extra)
        .arg(service.name())
        .arg(user)
        .args(ops);
    cmd
}

/// Runs pamtester to its end with `stdin` as the conversation's answers.
pub fn pamtester(
    bus: &str,
    service: &PamService,
    user: &str,
    ops: &[&str],
    extra: &[&str],
    stdin: &str,
    timeout: Duration,
) -> PamRun {
    let output = run(
        &mut pamtester_cmd(bus, service, user, ops, extra),
        stdin.as_bytes(),
        timeout,
    );
    PamRun { output }
}

/// Whether `path` exists (for files the session phase writes).
pub fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}
