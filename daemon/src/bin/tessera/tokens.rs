//! Tokens on the command line: reading one from an argument or standard input, printing claims,
//! and the key ids of a JWK Set.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, IsTerminal};

use tessera_client::Error;
use zbus::zvariant::OwnedValue;
use zeroize::Zeroizing;

use crate::output;

/// A token from the argument, or from standard input for "-" or none. With none and a terminal
/// on standard input, says what it waits for.
pub fn read_token(arg: Option<&str>, verb: &str) -> Result<Zeroizing<String>, Error> {
    match arg {
        Some(t) if t != "-" => return Ok(Zeroizing::new(t.to_owned())),
        None if std::io::stdin().is_terminal() => {
            eprintln!(
                "tessera {verb}: reading the token from standard input; paste it and press Enter \
                 (or give it as an argument, or pipe it in)"
            );
        }
        _ => {}
    }
    let mut line = Zeroizing::new(String::new());
    std::io::stdin().lock().read_line(&mut line)?;
    // An empty token goes to the daemon like any other, which calls it invalid.
    Ok(Zeroizing::new(line.trim().to_owned()))
}

/// Claims: JSON with `--json`, else one "key  value" line each, times local.
pub fn print_claims(claims: &HashMap<String, OwnedValue>, json: bool) {
    if json {
        println!("{}", output::json(claims));
    } else {
        println!(
            "{}",
            output::text(
                claims,
                &["sub", "aud", "iss", "iat", "nbf", "exp", "amr", "jti", "sid", "enr", "cnf"],
            )
        );
    }
}

/// The key ids ("kid") of a JWK Set.
pub fn key_ids(jwks: &str) -> HashSet<String> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(jwks) else {
        return HashSet::new();
    };
    v.get("keys")
        .and_then(|k| k.as_array())
        .map(|keys| {
            keys.iter()
                .filter_map(|k| k.get("kid").and_then(|s| s.as_str()).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
