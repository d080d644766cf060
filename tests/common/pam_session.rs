//! PAM login sessions in the end-to-end tests: a login service whose session phase names a mock
//! logind session (XDG_SESSION_ID) and a runtime directory in its PAM environment, pamtester run
//! inside one of the mock's sessions (tests/common/logind.rs), and the token file the module
//! writes for the user.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::logind::SESSION_ENV;
use super::pam::{pamtester_cmd, PamRun, PamService};
use super::run;
use super::stack::Stack;

/// How long one pamtester run of a login story may take.
pub const PAM_WAIT: Duration = Duration::from_secs(60);

/// The runtime directory the test's PAM environment names (root's, 0700).
pub fn runtime_dir(stack: &Stack) -> PathBuf {
    let dir = stack.path("run-user");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    dir
}

/// A service whose session phase has XDG_SESSION_ID=`session` and XDG_RUNTIME_DIR in its PAM
/// environment (pam_env with a file of the test's own), then pam_tessera.
pub fn login_service(stack: &Stack, session: &str, auth_args: &str) -> PamService {
    let env_file = stack.path("pam_env.conf");
    std::fs::write(
        &env_file,
        format!(
            "XDG_SESSION_ID DEFAULT={session}\nXDG_RUNTIME_DIR DEFAULT={}\n",
            runtime_dir(stack).display()
        ),
    )
    .unwrap();
    PamService::new(&format!(
        "auth required {{module}} {auth_args}\n\
         account required pam_permit.so\n\
         session required pam_env.so readenv=0 user_readenv=0 conffile={}\n\
         session required {{module}}\n\
         session optional pam_exec.so stdout /usr/bin/env\n",
        env_file.display()
    ))
}

/// pamtester in the mock's login session `session`.
pub fn pamtester_in(
    stack: &Stack,
    session: &str,
    service: &PamService,
    user: &str,
    ops: &[&str],
    stdin: &str,
) -> PamRun {
    let mut cmd = pamtester_cmd(stack.bus_address(), service, user, ops, &[]);
    cmd.env(SESSION_ENV, session);
    PamRun {
        output: run(&mut cmd, stdin.as_bytes(), PAM_WAIT),
    }
}

/// Where the module puts the session token for the user of [`runtime_dir`].
pub fn token_file(stack: &Stack) -> PathBuf {
    runtime_dir(stack).join("tessera").join("token")
}

/// The token in `path`, trimmed.
pub fn read_token(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// A `reuse` authentication of root in `session` through `sudo`: it must succeed without asking
/// for a PIN (no device is asked).
pub fn assert_reuse_asks_nothing(stack: &Stack, session: &str, sudo: &PamService) -> PamRun {
    let reuse = pamtester_in(stack, session, sudo, "root", &["authenticate"], "");
    reuse.assert_ok();
    assert!(!reuse.text().contains("PIN for"), "{}", reuse.text());
    reuse
}
