#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::policy::config::OnRemoval;

fn groups(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

/// The rows of [`Config::explain_policy`] as they go over the bus: (key, value, source).
fn rows(c: &Config, user: &str, g: &[&str]) -> Vec<(String, String, String)> {
    c.explain_policy(user, &groups(g))
        .into_iter()
        .map(|i| (i.key, i.value, i.source.to_string()))
        .collect()
}

/// (value, source) of the row `key`; the row must be there exactly once.
fn row(c: &Config, user: &str, g: &[&str], key: &str) -> (String, String) {
    let all = rows(c, user, g);
    let found: Vec<_> = all.iter().filter(|r| r.0 == key).collect();
    assert_eq!(found.len(), 1, "{key} in {all:?}");
    (found[0].1.clone(), found[0].2.clone())
}

fn vs(value: &str, source: &str) -> (String, String) {
    (value.to_owned(), source.to_owned())
}

#[test]
fn an_empty_file_shows_every_rule_with_its_default() {
    let c = Config::parse("").unwrap();
    let expected = [
        ("lifetime", "15m"),
        ("max_lifetime", "8h"),
        ("idle_timeout", "0s"),
        ("single_use", "false"),
        ("revoke_on_removal", "true"),
        ("max_live_per_user", "32"),
        ("audience", "\"tessera\""),
        ("min_refresh_interval", "10s"),
        ("piv.allow_pinless", "false"),
        ("fido.rp_id", "\"pam://tessera\""),
        ("fido.user_verification", "\"preferred\""),
        ("fido.pin_required", "false"),
        ("fido.algorithms", "[\"es256\"]"),
        ("fido.check_sign_count", "true"),
        ("pam.reuse", "true"),
        ("pam.max_age", "15m"),
        ("session.on_removal", "\"lock\""),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned(), "default".to_owned()))
        .collect();
    assert_eq!(rows(&c, "alice", &["wheel"]), expected);
}

#[test]
fn the_token_rows_come_first_and_unchanged() {
    let c = Config::parse("[token]\nlifetime = \"5m\"\n[users.alice.token]\nsingle_use = true\n")
        .unwrap();
    let token = c.explain_token_policy("alice", &[]);
    let all = c.explain_policy("alice", &[]);
    assert_eq!(all[..token.len()], token[..]);
    assert_eq!(all[0].source, Source::Global(ConfigTable::Token));
    assert_eq!(
        all[3].source,
        Source::User("alice".into(), ConfigTable::Token)
    );
}

const SESSIONS: &str = r#"
[session]
on_removal = "none"
[groups.a.session]
on_removal = "lock"
[groups.b.session]
on_removal = "terminate"
[groups.c.session]
on_removal = "terminate"
[users.alice.session]
on_removal = "none"
"#;

#[test]
fn session_on_removal_user_beats_the_strictest_group_beats_session() {
    let c = Config::parse(SESSIONS).unwrap();
    let key = "session.on_removal";
    assert_eq!(
        row(&c, "alice", &["b"], key),
        vs("\"none\"", "[users.alice.session]")
    );
    assert_eq!(
        row(&c, "bob", &["a", "b"], key),
        vs("\"terminate\"", "[groups.b.session]")
    );
    assert_eq!(
        row(&c, "bob", &["a"], key),
        vs("\"lock\"", "[groups.a.session]")
    );
    assert_eq!(row(&c, "bob", &["x"], key), vs("\"none\"", "[session]"));
    // Equally strict groups: the one whose name sorts first, whatever the membership order.
    assert_eq!(
        row(&c, "bob", &["c", "b", "a"], key),
        vs("\"terminate\"", "[groups.b.session]")
    );
    // [session] repeating the default counts as the default.
    let c = Config::parse("[session]\non_removal = \"lock\"\n").unwrap();
    assert_eq!(row(&c, "bob", &[], key), vs("\"lock\"", "default"));
    let c = Config::parse("[session]\non_removal = \"terminate\"\n").unwrap();
    assert_eq!(row(&c, "bob", &[], key), vs("\"terminate\"", "[session]"));
}

const FIDO: &str = r#"
[fido]
rp_id = "pam://example"
user_verification = "discouraged"
algorithms = ["eddsa", "es256"]
check_sign_count = false
[groups.a.fido]
user_verification = "preferred"
pin_required = false
[groups.b.fido]
user_verification = "required"
pin_required = true
[groups.c.fido]
user_verification = "required"
pin_required = true
[users.alice.fido]
pin_required = false
"#;

#[test]
fn fido_rules_user_beats_the_strictest_group_beats_fido() {
    let c = Config::parse(FIDO).unwrap();
    let (uv, pin) = ("fido.user_verification", "fido.pin_required");
    let all = ["c", "b", "a"];
    assert_eq!(
        row(&c, "bob", &all, uv),
        vs("\"required\"", "[groups.b.fido]")
    );
    assert_eq!(row(&c, "bob", &all, pin), vs("true", "[groups.b.fido]"));
    assert_eq!(
        row(&c, "alice", &all, uv),
        vs("\"required\"", "[groups.b.fido]")
    );
    assert_eq!(
        row(&c, "alice", &all, pin),
        vs("false", "[users.alice.fido]")
    );
    assert_eq!(
        row(&c, "bob", &["a"], uv),
        vs("\"preferred\"", "[groups.a.fido]")
    );
    assert_eq!(row(&c, "bob", &["a"], pin), vs("false", "[groups.a.fido]"));
    assert_eq!(row(&c, "bob", &[], uv), vs("\"discouraged\"", "[fido]"));
    assert_eq!(row(&c, "bob", &[], pin), vs("false", "default"));
}

#[test]
fn fido_global_keys_show_fido_or_the_default() {
    let c = Config::parse(FIDO).unwrap();
    assert_eq!(
        row(&c, "bob", &[], "fido.rp_id"),
        vs("\"pam://example\"", "[fido]")
    );
    assert_eq!(
        row(&c, "bob", &[], "fido.algorithms"),
        vs("[\"eddsa\", \"es256\"]", "[fido]")
    );
    assert_eq!(
        row(&c, "bob", &[], "fido.check_sign_count"),
        vs("false", "[fido]")
    );
    let c = Config::parse("[fido]\nalgorithms = [\"es256\"]\ncheck_sign_count = true\n").unwrap();
    assert_eq!(
        row(&c, "bob", &[], "fido.algorithms"),
        vs("[\"es256\"]", "default")
    );
    assert_eq!(
        row(&c, "bob", &[], "fido.check_sign_count"),
        vs("true", "default")
    );
}

const PAM: &str = r#"
[pam]
max_age = "5m"
[pam.services.sudo]
reuse = false
[pam.services.login]
max_age = "1m"
[pam.services."my service"]
reuse = true
max_age = "30s"
"#;

#[test]
fn pam_rows_show_pam_then_each_service_as_it_applies() {
    let c = Config::parse(PAM).unwrap();
    let pam: Vec<_> = rows(&c, "bob", &[])
        .into_iter()
        .filter(|r| r.0.starts_with("pam."))
        .collect();
    let expected = [
        ("pam.reuse", "true", "default"),
        ("pam.max_age", "5m", "[pam]"),
        ("pam.services.login.reuse", "true", "default"),
        ("pam.services.login.max_age", "1m", "[pam.services.login]"),
        (
            "pam.services.\"my service\".reuse",
            "true",
            "[pam.services.\"my service\"]",
        ),
        (
            "pam.services.\"my service\".max_age",
            "30s",
            "[pam.services.\"my service\"]",
        ),
        ("pam.services.sudo.reuse", "false", "[pam.services.sudo]"),
        ("pam.services.sudo.max_age", "5m", "[pam]"),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(k, v, s)| ((*k).to_owned(), (*v).to_owned(), (*s).to_owned()))
        .collect();
    assert_eq!(pam, expected);
}

#[test]
fn piv_allow_pinless_user_beats_groups_beats_piv() {
    let c = Config::parse(
        "[piv]\nallow_pinless = true\n[groups.a.piv]\nallow_pinless = true\n\
         [groups.b.piv]\nallow_pinless = false\n[users.alice.piv]\nallow_pinless = true\n",
    )
    .unwrap();
    let key = "piv.allow_pinless";
    assert_eq!(
        row(&c, "alice", &["b"], key),
        vs("true", "[users.alice.piv]")
    );
    assert_eq!(
        row(&c, "bob", &["a", "b"], key),
        vs("false", "[groups.b.piv]")
    );
    assert_eq!(row(&c, "bob", &["a"], key), vs("true", "[groups.a.piv]"));
    assert_eq!(row(&c, "bob", &[], key), vs("true", "[piv]"));
}

/// The view shows what the service enforces: each row's value is what `Config::*_for` decides, for
/// every combination of the groups and a user with and without a table of their own.
#[test]
fn every_row_agrees_with_the_rule_the_service_applies() {
    let text = format!(
        "{SESSIONS}{}{}",
        FIDO.replace(
            "[users.alice.fido]",
            "[users.alice.fido]\nuser_verification = \"discouraged\""
        ),
        "[piv]\nallow_pinless = true\n[groups.b.piv]\nallow_pinless = false\n"
    );
    let c = Config::parse(&text).unwrap();
    let names = ["a", "b", "c"];
    for user in ["alice", "bob"] {
        for mask in 0..8 {
            let g: Vec<&str> = (0..3)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| names[i])
                .collect();
            let gs = groups(&g);
            let fido = c.fido_rules_for(user, &gs);
            let on_removal = row(&c, user, &g, "session.on_removal").0;
            assert_eq!(
                OnRemoval::from_name(on_removal.trim_matches('"')),
                Some(c.on_removal_for(user, &gs)),
                "{user} {g:?}"
            );
            let uv = row(&c, user, &g, "fido.user_verification").0;
            assert_eq!(uv, format!("\"{}\"", uv_name(fido.user_verification)));
            assert_eq!(
                row(&c, user, &g, "fido.pin_required").0,
                fido.pin_required.to_string(),
                "{user} {g:?}"
            );
            assert_eq!(
                row(&c, user, &g, "piv.allow_pinless").0,
                c.allow_pinless_for(user, &gs).to_string(),
                "{user} {g:?}"
            );
        }
    }
    let c = Config::parse(PAM).unwrap();
    for service in ["sudo", "login", "my service"] {
        let rules = c.reuse_rules_for(Some(service));
        let prefix = format!("pam.services.{}", toml_key(service));
        let reuse = row(&c, "bob", &[], &format!("{prefix}.reuse")).0;
        assert_eq!(reuse, rules.reuse.to_string());
        let max_age = row(&c, "bob", &[], &format!("{prefix}.max_age")).0;
        assert_eq!(max_age, fmt_duration(rules.max_age));
    }
    // An unnamed or unconfigured service gets [pam].
    let rules = c.reuse_rules_for(Some("su"));
    assert_eq!(rules, c.reuse_rules_for(None));
    assert_eq!(
        row(&c, "bob", &[], "pam.max_age").0,
        fmt_duration(rules.max_age)
    );
    assert_eq!(rules.max_age, std::time::Duration::from_secs(300));
}

#[test]
fn sources_name_their_table() {
    let cases = [
        (Source::Global(ConfigTable::Session), "[session]"),
        (Source::Global(ConfigTable::Fido), "[fido]"),
        (Source::Global(ConfigTable::Pam), "[pam]"),
        (Source::Global(ConfigTable::Piv), "[piv]"),
        (
            Source::Group("wheel".into(), ConfigTable::Session),
            "[groups.wheel.session]",
        ),
        (
            Source::User("alice".into(), ConfigTable::Fido),
            "[users.alice.fido]",
        ),
        (Source::PamService("sudo".into()), "[pam.services.sudo]"),
        (Source::PamService("a b".into()), "[pam.services.\"a b\"]"),
    ];
    for (source, shown) in cases {
        assert_eq!(source.to_string(), shown);
    }
}
