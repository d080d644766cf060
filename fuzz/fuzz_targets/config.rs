//! The configuration file (`tessera.toml`), which an administrator writes but a mistake in it must
//! never crash the daemon: `Config::parse` and what the daemon asks of a parsed configuration.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera::policy::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse(text) else {
        return;
    };
    let groups = ["wheel".to_owned(), "admins".to_owned()];
    for user in ["alice", "root", ""] {
        let _ = config.token_policy_for(user, &groups);
        let _ = config.explain_token_policy(user, &groups);
    }
});
