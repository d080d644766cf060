#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::authenticator::UserVerification;

const MIN: u64 = 60;
const TOKEN: ConfigTable = ConfigTable::Token;
const HOUR: u64 = 3600;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn parse_err(text: &str) -> String {
    match Config::parse(text) {
        Ok(c) => panic!("{text:?} parsed: {c:?}"),
        Err(Error::Config(msg)) => msg,
        Err(other) => panic!("{text:?}: not a configuration error: {other:?}"),
    }
}

fn groups(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

/// (key, value, source) triples of [`Config::explain_token_policy`].
fn explain(c: &Config, user: &str, g: &[&str]) -> Vec<(&'static str, String, Source)> {
    c.explain_token_policy(user, &groups(g))
        .into_iter()
        .map(|i| {
            // The token rows are named by their bare [token] key.
            let key = TOKEN_KEYS.iter().find(|k| **k == i.key).unwrap();
            (*key, i.value, i.source)
        })
        .collect()
}

fn source_of(c: &Config, user: &str, g: &[&str], key: &str) -> (String, Source) {
    let item = c
        .explain_token_policy(user, &groups(g))
        .into_iter()
        .find(|i| i.key == key)
        .unwrap();
    (item.value, item.source)
}

// --- parsing and defaults ---------------------------------------------------------------------

#[test]
fn empty_file_gives_the_documented_defaults() {
    let c = Config::parse("").unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(
        c.token,
        TokenPolicy {
            lifetime: secs(15 * MIN),
            max_lifetime: secs(8 * HOUR),
            idle_timeout: None,
            single_use: false,
            revoke_on_removal: true,
            max_live_per_user: 32,
            audience: "tessera".into(),
            min_refresh_interval: secs(10),
        }
    );
    assert!(c.pin.keep_last_retry);
    assert_eq!(
        c.auth,
        AuthPolicy {
            max_failures: 5,
            failure_window: secs(5 * MIN),
            lockout: secs(MIN),
        }
    );
    assert_eq!(c.keys.rotate_every, secs(30 * 86_400));
    assert_eq!(c.device.timeout, secs(10));
    assert_eq!(c.device.insert_timeout, secs(60));
    assert_eq!(c.device.pin_timeout, secs(60));
    assert_eq!(c.device.touch_timeout, secs(30));
    assert!(c.users.is_empty() && c.groups.is_empty());
    assert!(!c.piv.allow_pinless);
    assert!(!c.allow_pinless_for("alice", &groups(&["wheel"])));
}

#[test]
fn allow_pinless_user_beats_groups_beat_piv_and_false_wins_among_groups() {
    let c = Config::parse(
        "[piv]\nallow_pinless = true\n\
         [users.alice.piv]\nallow_pinless = false\n\
         [users.bob.piv]\n\
         [groups.staff.piv]\nallow_pinless = true\n\
         [groups.guests.piv]\nallow_pinless = false\n",
    )
    .unwrap();
    assert!(c.piv.allow_pinless);
    assert!(
        !c.allow_pinless_for("alice", &groups(&["staff"])),
        "user wins"
    );
    // bob's table leaves the key out: his groups decide, then [piv].
    assert!(c.allow_pinless_for("bob", &groups(&["staff"])));
    assert!(!c.allow_pinless_for("bob", &groups(&["staff", "guests"])));
    assert!(c.allow_pinless_for("carol", &groups(&["other"])), "[piv]");
    let c = Config::parse("[groups.staff.piv]\nallow_pinless = true\n").unwrap();
    assert!(c.allow_pinless_for("dave", &groups(&["staff"])));
    assert!(!c.allow_pinless_for("erin", &[]), "default false");
    let e = parse_err("[piv]\nallow_pinless = \"yes\"\n");
    assert!(
        e.starts_with("piv.allow_pinless: expected true or false"),
        "{e}"
    );
    let e = parse_err("[users.alice.piv]\npinless = true\n");
    assert!(e.starts_with("users.alice.piv.pinless: unknown key"), "{e}");
}

#[test]
fn example_file_is_the_defaults_plus_its_three_overrides() {
    let c = Config::parse(include_str!("../../tessera.toml.example")).unwrap();
    let mut expected = Config::default();
    expected.pam.services.insert(
        "sudo".into(),
        PamOverride {
            reuse: Some(true),
            max_age: Some(secs(5 * MIN)),
        },
    );
    expected.users.insert(
        "alice".into(),
        TokenOverride {
            single_use: Some(true),
            ..TokenOverride::default()
        },
    );
    expected.groups.insert(
        "wheel".into(),
        TokenOverride {
            lifetime: Some(secs(5 * MIN)),
            ..TokenOverride::default()
        },
    );
    assert_eq!(c, expected);
}

#[test]
fn example_file_writes_every_key() {
    let t: toml::Table = toml::from_str(include_str!("../../tessera.toml.example")).unwrap();
    for (section, keys) in [
        ("token", TOKEN_KEYS),
        ("pin", PIN_KEYS),
        ("piv", PIV_KEYS),
        ("auth", AUTH_KEYS),
        ("keys", KEYS_KEYS),
        ("device", DEVICE_KEYS),
        ("fido", FIDO_KEYS),
        ("pam", PAM_KEYS),
        ("session", SESSION_KEYS),
    ] {
        let table = t[section].as_table().unwrap();
        // Off by default, so only described in a comment.
        for key in keys.iter().filter(|k| **k != "simulated_hid_dir") {
            assert!(table.contains_key(*key), "example lacks {section}.{key}");
        }
    }
    for section in TOP_KEYS {
        assert!(t.contains_key(*section), "example lacks [{section}]");
    }
}

#[test]
fn every_key_is_read() {
    let c = Config::parse(
        r#"
[token]
lifetime = "90s"
max_lifetime = "2h"
idle_timeout = "10m"
single_use = true
revoke_on_removal = false
max_live_per_user = 4
audience = "login"
[pin]
keep_last_retry = false
[auth]
max_failures = 3
failure_window = "2m"
lockout = "30s"
[keys]
rotate_every = "7d"
[device]
timeout = "2s"
insert_timeout = "5m"
pin_timeout = "45s"
touch_timeout = "15s"
[users.bob.token]
idle_timeout = "0s"
audience = "bob's"
[groups.staff.token]
max_lifetime = "1h"
max_live_per_user = 2
revoke_on_removal = true
"#,
    )
    .unwrap();
    assert_eq!(
        c.token,
        TokenPolicy {
            lifetime: secs(90),
            max_lifetime: secs(2 * HOUR),
            idle_timeout: Some(secs(10 * MIN)),
            single_use: true,
            revoke_on_removal: false,
            max_live_per_user: 4,
            audience: "login".into(),
            min_refresh_interval: secs(10),
        }
    );
    assert!(!c.pin.keep_last_retry);
    assert_eq!(
        c.auth,
        AuthPolicy {
            max_failures: 3,
            failure_window: secs(2 * MIN),
            lockout: secs(30),
        }
    );
    assert_eq!(c.keys.rotate_every, secs(7 * 86_400));
    assert_eq!(c.device.timeout, secs(2));
    assert_eq!(c.device.insert_timeout, secs(5 * MIN));
    assert_eq!(c.device.pin_timeout, secs(45));
    assert_eq!(c.device.touch_timeout, secs(15));
    assert_eq!(
        c.users["bob"],
        TokenOverride {
            idle_timeout: Some(None),
            audience: Some("bob's".into()),
            ..TokenOverride::default()
        }
    );
    assert_eq!(
        c.groups["staff"],
        TokenOverride {
            max_lifetime: Some(secs(HOUR)),
            max_live_per_user: Some(2),
            revoke_on_removal: Some(true),
            ..TokenOverride::default()
        }
    );
}

#[test]
fn dotted_and_inline_tables_are_the_same_file() {
    let headers = Config::parse("[users.alice.token]\nsingle_use = true\n").unwrap();
    for text in [
        "[users]\nalice.token.single_use = true\n",
        "users.alice.token.single_use = true\n",
        "[users.alice]\ntoken = { single_use = true }\n",
    ] {
        assert_eq!(Config::parse(text).unwrap(), headers, "{text}");
    }
    // Dotted keys have no spans, but the message still names the key.
    assert_eq!(
        parse_err("[users]\nalice.token.lifetime = \"0s\"\n"),
        "users.alice.token.lifetime: must be longer than 0s"
    );
}

#[test]
fn an_empty_user_table_is_no_override() {
    let c = Config::parse("[users.alice]\n").unwrap();
    assert!(c.users.is_empty());
    let c = Config::parse("[users.alice.token]\n").unwrap();
    assert_eq!(c.users["alice"], TokenOverride::default());
}

// --- precedence -------------------------------------------------------------------------------

#[test]
fn defaults_and_global_values_are_told_apart() {
    let c = Config::parse("[token]\nlifetime = \"5m\"\n").unwrap();
    assert_eq!(
        explain(&c, "alice", &[]),
        vec![
            ("lifetime", "5m".to_owned(), Source::Global(TOKEN)),
            ("max_lifetime", "8h".to_owned(), Source::Default),
            ("idle_timeout", "0s".to_owned(), Source::Default),
            ("single_use", "false".to_owned(), Source::Default),
            ("revoke_on_removal", "true".to_owned(), Source::Default),
            ("max_live_per_user", "32".to_owned(), Source::Default),
            ("audience", "\"tessera\"".to_owned(), Source::Default),
            ("min_refresh_interval", "10s".to_owned(), Source::Default),
        ]
    );
    assert_eq!(c.token_policy_for("alice", &[]), c.token);
}

#[test]
fn min_refresh_interval_is_a_token_key_where_the_longest_group_value_wins() {
    let c = Config::parse(
        r#"
[token]
min_refresh_interval = "30s"
[groups.a.token]
min_refresh_interval = "1m"
[groups.b.token]
min_refresh_interval = "2m"
[users.alice.token]
min_refresh_interval = "0s"
"#,
    )
    .unwrap();
    assert_eq!(c.token.min_refresh_interval, secs(30));
    assert_eq!(
        source_of(&c, "bob", &[], "min_refresh_interval"),
        ("30s".into(), Source::Global(TOKEN))
    );
    // The longest interval is the strictest.
    assert_eq!(
        c.token_policy_for("bob", &groups(&["a", "b"]))
            .min_refresh_interval,
        secs(2 * MIN)
    );
    assert_eq!(
        source_of(&c, "bob", &["a", "b"], "min_refresh_interval"),
        ("2m".into(), Source::Group("b".into(), TOKEN))
    );
    // "0s" turns the limit off, here for one user only.
    assert_eq!(
        c.token_policy_for("alice", &groups(&["a"]))
            .min_refresh_interval,
        Duration::ZERO
    );
    assert_eq!(
        source_of(&c, "alice", &["a"], "min_refresh_interval"),
        ("0s".into(), Source::User("alice".into(), TOKEN))
    );
    let e = parse_err(
        "[token]
min_refresh_interval = 10
",
    );
    assert!(
        e.starts_with("token.min_refresh_interval: expected a duration string"),
        "{e}"
    );
}

#[test]
fn user_beats_group_beats_global_beats_default() {
    let c = Config::parse(
        r#"
[token]
lifetime = "10m"
max_lifetime = "4h"
[groups.wheel.token]
lifetime = "5m"
single_use = true
[users.alice.token]
lifetime = "1m"
"#,
    )
    .unwrap();
    let p = c.token_policy_for("alice", &groups(&["wheel"]));
    assert_eq!(p.lifetime, secs(MIN));
    assert!(p.single_use);
    assert_eq!(p.max_lifetime, secs(4 * HOUR));
    assert_eq!(p.audience, "tessera");
    let e = explain(&c, "alice", &["wheel"]);
    assert_eq!(
        e[0],
        ("lifetime", "1m".into(), Source::User("alice".into(), TOKEN))
    );
    assert_eq!(e[1], ("max_lifetime", "4h".into(), Source::Global(TOKEN)));
    assert_eq!(
        e[3],
        (
            "single_use",
            "true".into(),
            Source::Group("wheel".into(), TOKEN)
        )
    );
    assert_eq!(e[6], ("audience", "\"tessera\"".into(), Source::Default));

    // Without the user table the group decides; outside the group, [token].
    assert_eq!(
        source_of(&c, "bob", &["wheel"], "lifetime"),
        ("5m".into(), Source::Group("wheel".into(), TOKEN))
    );
    assert_eq!(
        source_of(&c, "bob", &["users", "audio"], "lifetime"),
        ("10m".into(), Source::Global(TOKEN))
    );
    // A user table applies to its user only.
    assert_eq!(c.token_policy_for("bob", &[]).lifetime, secs(10 * MIN));
}

#[test]
fn a_group_may_relax_the_global_rule() {
    let c = Config::parse("[token]\nsingle_use = true\n[groups.kiosk.token]\nsingle_use = false\n")
        .unwrap();
    assert!(!c.token_policy_for("k", &groups(&["kiosk"])).single_use);
    assert!(c.token_policy_for("k", &[]).single_use);
}

const SEVERAL_GROUPS: &str = r#"
[groups.a.token]
lifetime = "30m"
max_lifetime = "2h"
idle_timeout = "0s"
single_use = false
revoke_on_removal = false
max_live_per_user = 8
audience = "from-a"

[groups.b.token]
lifetime = "10m"
max_lifetime = "4h"
idle_timeout = "20m"
single_use = true
max_live_per_user = 3
audience = "from-b"

[groups.c.token]
idle_timeout = "5m"
revoke_on_removal = true
max_live_per_user = 3
"#;

#[test]
fn several_groups_the_most_restrictive_value_wins_key_by_key() {
    let c = Config::parse(SEVERAL_GROUPS).unwrap();
    let all = ["c", "b", "a", "not-configured"];
    assert_eq!(
        explain(&c, "u", &all),
        vec![
            (
                "lifetime",
                "10m".to_owned(),
                Source::Group("b".into(), TOKEN)
            ),
            (
                "max_lifetime",
                "2h".to_owned(),
                Source::Group("a".into(), TOKEN)
            ),
            (
                "idle_timeout",
                "5m".to_owned(),
                Source::Group("c".into(), TOKEN)
            ),
            (
                "single_use",
                "true".to_owned(),
                Source::Group("b".into(), TOKEN)
            ),
            (
                "revoke_on_removal",
                "true".to_owned(),
                Source::Group("c".into(), TOKEN)
            ),
            // A tie goes to the group whose name sorts first.
            (
                "max_live_per_user",
                "3".to_owned(),
                Source::Group("b".into(), TOKEN)
            ),
            // No order on audiences: the first group by name.
            (
                "audience",
                "\"from-a\"".to_owned(),
                Source::Group("a".into(), TOKEN)
            ),
            ("min_refresh_interval", "10s".to_owned(), Source::Default),
        ]
    );
    assert_eq!(
        c.token_policy_for("u", &groups(&all)),
        TokenPolicy {
            lifetime: secs(10 * MIN),
            max_lifetime: secs(2 * HOUR),
            idle_timeout: Some(secs(5 * MIN)),
            single_use: true,
            revoke_on_removal: true,
            max_live_per_user: 3,
            audience: "from-a".into(),
            min_refresh_interval: secs(10),
        }
    );
}

#[test]
fn several_groups_idle_timeout_is_off_only_if_all_say_off() {
    let c = Config::parse(SEVERAL_GROUPS).unwrap();
    // a says "0s" (off), b says 20m: 20m wins over off.
    assert_eq!(
        source_of(&c, "u", &["a", "b"], "idle_timeout"),
        ("20m".into(), Source::Group("b".into(), TOKEN))
    );
    let c = Config::parse(
        "[token]\nidle_timeout = \"1h\"\n[groups.x.token]\nidle_timeout = \"0s\"\n\
         [groups.y.token]\nidle_timeout = \"0s\"\n",
    )
    .unwrap();
    assert_eq!(
        c.token_policy_for("u", &groups(&["x", "y"])).idle_timeout,
        None
    );
    assert_eq!(
        source_of(&c, "u", &["y", "x"], "idle_timeout"),
        ("0s".into(), Source::Group("x".into(), TOKEN))
    );
}

#[test]
fn several_groups_false_loses_to_true_whatever_the_order() {
    let c = Config::parse(SEVERAL_GROUPS).unwrap();
    // a says false, b true; c says true for revoke_on_removal, a false.
    for order in [["a", "b"], ["b", "a"]] {
        assert!(c.token_policy_for("u", &groups(&order)).single_use);
    }
    for order in [["a", "c"], ["c", "a"]] {
        assert!(c.token_policy_for("u", &groups(&order)).revoke_on_removal);
    }
    assert!(!c.token_policy_for("u", &groups(&["a"])).revoke_on_removal);
}

#[test]
fn a_user_table_over_group_tables_cannot_outlive_the_session() {
    let c = Config::parse(
        "[groups.short.token]\nmax_lifetime = \"30m\"\n[users.alice.token]\nlifetime = \"1h\"\n",
    )
    .unwrap();
    let p = c.token_policy_for("alice", &groups(&["short"]));
    assert_eq!(
        (p.lifetime, p.max_lifetime),
        (secs(30 * MIN), secs(30 * MIN))
    );
    assert_eq!(
        source_of(&c, "alice", &["short"], "lifetime"),
        ("30m".into(), Source::Group("short".into(), TOKEN))
    );
    // Outside the group the user's lifetime stands.
    assert_eq!(c.token_policy_for("alice", &[]).lifetime, secs(HOUR));
}

#[test]
fn source_display_names_the_table() {
    assert_eq!(Source::Default.to_string(), "default");
    assert_eq!(Source::Global(TOKEN).to_string(), "[token]");
    assert_eq!(
        Source::Group("wheel".into(), TOKEN).to_string(),
        "[groups.wheel.token]"
    );
    assert_eq!(
        Source::User("alice".into(), TOKEN).to_string(),
        "[users.alice.token]"
    );
    assert_eq!(
        Source::User("a b".into(), TOKEN).to_string(),
        "[users.\"a b\".token]"
    );
}

#[test]
fn values_are_formatted_as_written() {
    assert_eq!(fmt_duration(Duration::ZERO), "0s");
    assert_eq!(fmt_duration(secs(90)), "90s");
    assert_eq!(fmt_duration(secs(15 * MIN)), "15m");
    assert_eq!(fmt_duration(secs(8 * HOUR)), "8h");
    assert_eq!(fmt_duration(secs(30 * 86_400)), "30d");
    assert_eq!(fmt_duration(secs(25 * HOUR)), "25h");
    assert_eq!(fmt_duration(Duration::from_millis(1500)), "1s500ms");
    let c = Config::parse("[token]\naudience = \"say \\\"hi\\\"\"\n").unwrap();
    let (value, _) = source_of(&c, "u", &[], "audience");
    // toml picks the literal form for a string with quotes; either way it reads back as written.
    assert_eq!(value, r#"'say "hi"'"#);
    let back: toml::Table = toml::from_str(&format!("audience = {value}")).unwrap();
    assert_eq!(back["audience"].as_str(), Some(r#"say "hi""#));
    // Every formatted duration reads back as itself.
    for d in [
        secs(90),
        secs(15 * MIN),
        secs(25 * HOUR),
        Duration::from_millis(1500),
    ] {
        assert_eq!(humantime::parse_duration(&fmt_duration(d)).unwrap(), d);
    }
}

// --- validation: one message per kind of mistake ----------------------------------------------

#[test]
fn syntax_errors_keep_tomls_message() {
    let e = parse_err("[token\n");
    assert!(e.starts_with("TOML parse error at line 1"), "{e}");
    let e = parse_err("[token]\nlifetime = \"1m\"\nlifetime = \"2m\"\n");
    assert!(e.contains("duplicate key"), "{e}");
}

#[test]
fn unknown_keys_and_sections() {
    let e = parse_err("[token]\nlifetim = \"1m\"\n");
    assert!(
        e.starts_with(
            "token.lifetim: unknown key; expected one of `lifetime`, `max_lifetime`, \
             `idle_timeout`, `single_use`, `revoke_on_removal`, `max_live_per_user`, `audience`"
        ),
        "{e}"
    );
    assert!(e.contains("at line 2, column 1"), "{e}");
    let e = parse_err("[tokn]\n");
    assert!(
        e.starts_with("tokn: unknown key; expected one of `token`, `pin`, `piv`, `auth`, `keys`"),
        "{e}"
    );
    let e = parse_err("[auth]\nmax_failure = 3\n");
    assert!(
        e.starts_with("auth.max_failure: unknown key; expected one of `max_failures`"),
        "{e}"
    );
    let e = parse_err("[users.alice.token]\nsingle_us = true\n");
    assert!(
        e.starts_with("users.alice.token.single_us: unknown key"),
        "{e}"
    );
    let e = parse_err("[groups.\"domain users\".token]\nx = 1\n");
    assert!(
        e.starts_with("groups.\"domain users\".token.x: unknown key"),
        "{e}"
    );
}

#[test]
fn only_a_token_table_under_a_user_or_group() {
    let e = parse_err("[users.alice.pin]\nkeep_last_retry = false\n");
    assert!(
        e.starts_with(
            "users.alice.pin: unknown key; only `token`, `piv`, `fido` and `session` are allowed under [users.alice]"
        ),
        "{e}"
    );
    let e = parse_err("[groups.wheel]\nlifetime = \"5m\"\n");
    assert!(
        e.starts_with(
            "groups.wheel.lifetime: unknown key; only `token`, `piv`, `fido` and `session` are allowed under [groups.wheel]"
        ),
        "{e}"
    );
}

#[test]
fn wrong_types() {
    for (text, want) in [
        (
            "[token]\nlifetime = 5\n",
            "token.lifetime: expected a duration string like \"15m\", found integer 5",
        ),
        (
            "[token]\nsingle_use = \"yes\"\n",
            "token.single_use: expected true or false, found string \"yes\"",
        ),
        (
            "[token]\nmax_live_per_user = \"32\"\n",
            "token.max_live_per_user: expected a whole number, found string \"32\"",
        ),
        (
            "[token]\nmax_live_per_user = 3.5\n",
            "token.max_live_per_user: expected a whole number, found a float",
        ),
        (
            "[token]\naudience = [\"a\"]\n",
            "token.audience: expected a string, found an array",
        ),
        (
            "[pin]\nkeep_last_retry = 1\n",
            "pin.keep_last_retry: expected true or false, found integer 1",
        ),
        (
            "[auth]\nlockout = 1979-05-27\n",
            "auth.lockout: expected a duration string like \"15m\", found a datetime",
        ),
        ("token = 1\n", "token: expected a table, found integer 1"),
        (
            "users = \"alice\"\n",
            "users: expected a table of names, found string \"alice\"",
        ),
        (
            "[users]\nalice = true\n",
            "users.alice: expected a table, found boolean true",
        ),
        (
            "[groups.wheel]\ntoken = 5\n",
            "groups.wheel.token: expected a table, found integer 5",
        ),
    ] {
        let e = parse_err(text);
        assert!(e.starts_with(want), "{text:?}:\n{e}");
    }
}

#[test]
fn unparseable_durations_say_how_to_write_one() {
    for (text, key, value) in [
        (
            "[token]\nlifetime = \"soon\"\n",
            "token.lifetime",
            "\"soon\"",
        ),
        (
            "[token]\nidle_timeout = \"15\"\n",
            "token.idle_timeout",
            "\"15\"",
        ),
        (
            "[keys]\nrotate_every = \"30 dayz\"\n",
            "keys.rotate_every",
            "\"30 dayz\"",
        ),
        (
            "[groups.g.token]\nmax_lifetime = \"\"\n",
            "groups.g.token.max_lifetime",
            "\"\"",
        ),
    ] {
        let e = parse_err(text);
        assert!(
            e.starts_with(&format!("{key}: invalid duration {value} (")),
            "{e}"
        );
        assert!(
            e.contains("write it like \"90s\", \"15m\", \"8h\" or \"30d\""),
            "{e}"
        );
    }
}

#[test]
fn zero_where_zero_is_meaningless() {
    for key in [
        "token.lifetime",
        "token.max_lifetime",
        "auth.failure_window",
        "auth.lockout",
        "keys.rotate_every",
        "device.timeout",
        "device.insert_timeout",
        "device.pin_timeout",
        "device.touch_timeout",
        "users.alice.token.lifetime",
        "groups.wheel.token.max_lifetime",
    ] {
        let (table, name) = key.rsplit_once('.').unwrap();
        let e = parse_err(&format!("[{table}]\n{name} = \"0s\"\n"));
        assert!(
            e.starts_with(&format!("{key}: must be longer than 0s")),
            "{e}"
        );
    }
    // Zero is "off" for the idle timeout.
    assert_eq!(
        Config::parse("[token]\nidle_timeout = \"0s\"\n")
            .unwrap()
            .token
            .idle_timeout,
        None
    );
}

#[test]
fn lifetime_longer_than_max_lifetime() {
    for (text, want) in [
        (
            "[token]\nlifetime = \"9h\"\n",
            "token.lifetime: lifetime 9h (token.lifetime) is longer than max_lifetime 8h (the default)",
        ),
        (
            "[token]\nmax_lifetime = \"10m\"\n",
            "token.max_lifetime: lifetime 15m (the default) is longer than max_lifetime 10m (token.max_lifetime)",
        ),
        (
            "[token]\nlifetime = \"2h\"\nmax_lifetime = \"1h\"\n",
            "token.lifetime: lifetime 2h (token.lifetime) is longer than max_lifetime 1h (token.max_lifetime)",
        ),
        (
            "[token]\nmax_lifetime = \"1h\"\n[groups.wheel.token]\nlifetime = \"2h\"\n",
            "groups.wheel.token.lifetime: lifetime 2h (groups.wheel.token.lifetime) is longer than max_lifetime 1h (token.max_lifetime)",
        ),
        (
            "[token]\nlifetime = \"1h\"\n[users.bob.token]\nmax_lifetime = \"30m\"\n",
            "users.bob.token.max_lifetime: lifetime 1h (token.lifetime) is longer than max_lifetime 30m (users.bob.token.max_lifetime)",
        ),
        (
            "[users.bob.token]\nmax_lifetime = \"10m\"\n",
            "users.bob.token.max_lifetime: lifetime 15m (the default) is longer than max_lifetime 10m (users.bob.token.max_lifetime)",
        ),
    ] {
        let e = parse_err(text);
        assert!(e.starts_with(want), "{text:?}:\n{e}");
        assert!(e.contains("a token cannot outlive its session"), "{e}");
    }
    // Equal is fine, and an override may fix what [token] alone would not allow.
    Config::parse("[token]\nlifetime = \"8h\"\n").unwrap();
    Config::parse("[token]\nmax_lifetime = \"1h\"\n[users.a.token]\nmax_lifetime = \"2h\"\n")
        .unwrap();
}

#[test]
fn counts_must_be_at_least_one() {
    let e = parse_err("[token]\nmax_live_per_user = 0\n");
    assert!(
        e.starts_with(
            "token.max_live_per_user: must be at least 1 (0 would revoke every token as it is issued)"
        ),
        "{e}"
    );
    let e = parse_err("[users.a.token]\nmax_live_per_user = 0\n");
    assert!(
        e.starts_with("users.a.token.max_live_per_user: must be at least 1"),
        "{e}"
    );
    let e = parse_err("[auth]\nmax_failures = 0\n");
    assert!(
        e.starts_with(
            "auth.max_failures: must be at least 1 (0 would lock every user out before their first attempt)"
        ),
        "{e}"
    );
    let e = parse_err("[auth]\nmax_failures = -3\n");
    assert!(e.starts_with("auth.max_failures: -3 is negative"), "{e}");
}

#[test]
fn empty_audience() {
    let e = parse_err("[token]\naudience = \"\"\n");
    assert!(e.starts_with("token.audience: must not be empty"), "{e}");
    let e = parse_err("[groups.g.token]\naudience = \"\"\n");
    assert!(
        e.starts_with("groups.g.token.audience: must not be empty"),
        "{e}"
    );
}

#[test]
fn absurd_values() {
    for (text, want) in [
        (
            "[keys]\nrotate_every = \"3651d\"\n",
            "keys.rotate_every: \"3651d\" is absurdly long; the limit is 10 years (3650d)",
        ),
        (
            "[token]\nidle_timeout = \"11y\"\n",
            "token.idle_timeout: \"11y\" is absurdly long",
        ),
        (
            "[device]\ntimeout = \"99999999999999999s\"\n",
            "device.timeout: \"99999999999999999s\" is absurdly long",
        ),
        (
            "[token]\nmax_live_per_user = 1000001\n",
            "token.max_live_per_user: 1000001 is absurdly large; the limit is 1000000",
        ),
        (
            "[auth]\nmax_failures = 9223372036854775807\n",
            "auth.max_failures: 9223372036854775807 is absurdly large",
        ),
    ] {
        let e = parse_err(text);
        assert!(e.starts_with(want), "{text:?}:\n{e}");
    }
    // The limits themselves are allowed.
    let c = Config::parse(
        "[token]\nmax_lifetime = \"3650d\"\nmax_live_per_user = 1000000\n[auth]\nmax_failures = 1000000\n",
    )
    .unwrap();
    assert_eq!(c.token.max_lifetime, MAX_DURATION);
    assert_eq!(c.token.max_live_per_user, 1_000_000);
}

#[test]
fn every_kind_of_mistake_has_its_own_message() {
    // The distinguishing phrase of each kind; each bad file must show its own and no other.
    let kinds = [
        ("[token]\nlifetim = \"1m\"\n", "unknown key"),
        ("[token]\nlifetime = 5\n", "expected a duration string"),
        ("[token]\nlifetime = \"soon\"\n", "invalid duration"),
        ("[token]\nlifetime = \"0s\"\n", "must be longer than 0s"),
        ("[token]\nlifetime = \"9h\"\n", "cannot outlive its session"),
        (
            "[token]\nmax_live_per_user = 0\n",
            "0 would revoke every token",
        ),
        ("[auth]\nmax_failures = 0\n", "0 would lock every user out"),
        ("[token]\naudience = \"\"\n", "must not be empty"),
        ("[token]\nlifetime = \"11y\"\n", "absurdly long"),
        ("[token]\nmax_live_per_user = 2000000\n", "absurdly large"),
        ("[token]\nmax_live_per_user = -1\n", "is negative"),
        ("[fido]\nuser_verification = \"always\"\n", "unknown value"),
        ("[fido]\nalgorithms = [\"rs256\"]\n", "unknown algorithm"),
        ("[fido]\nalgorithms = []\n", "must name at least one"),
        (
            "[fido]\nalgorithms = [\"es256\", \"es256\"]\n",
            "listed twice",
        ),
        (
            "[device]\nsimulated_hid_dir = \"run/keys\"\n",
            "not an absolute path",
        ),
    ];
    for (text, phrase) in kinds {
        let e = parse_err(text);
        for (_, other) in kinds {
            assert_eq!(
                e.contains(other),
                other == phrase,
                "{text:?} / {other:?}:\n{e}"
            );
        }
    }
}

#[test]
fn messages_point_at_the_line() {
    let e = parse_err("[pin]\nkeep_last_retry = true\n\n[token]\nlifetime = \"soon\"\n");
    assert!(
        e.ends_with(
            "\n at line 5, column 12:\n  |\n5 | lifetime = \"soon\"\n  |            ^^^^^^"
        ),
        "{e}"
    );
}

// --- files ------------------------------------------------------------------------------------

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.toml");
    let e = Config::load(&missing).unwrap_err().to_string();
    assert!(
        e.contains(&format!("{}: cannot read", missing.display())),
        "{e}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[users.alice.token]\nlifetime = \"0s\"\n").unwrap();
    let e = Config::load(&bad).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "configuration error: {}: users.alice.token.lifetime: must be longer than 0s",
            bad.display()
        )),
        "{e}"
    );

    let good = dir.path().join("good.toml");
    std::fs::write(&good, include_str!("../../tessera.toml.example")).unwrap();
    assert_eq!(
        Config::load(&good).unwrap().groups["wheel"].lifetime,
        Some(secs(5 * MIN))
    );
}

// --- [fido] and [device] simulated_hid_dir ----------------------------------------------------

#[test]
fn fido_defaults() {
    let c = Config::parse("").unwrap();
    assert_eq!(c.fido.rp_id, "pam://tessera");
    assert_eq!(c.fido.user_verification, UserVerification::Preferred);
    assert!(!c.fido.pin_required);
    assert_eq!(c.fido.algorithms, vec!["es256".to_owned()]);
    assert!(c.fido.check_sign_count);
    assert_eq!(c.device.simulated_hid_dir, None);
    let rules = c.fido_rules_for("alice", &groups(&["wheel"]));
    assert_eq!(
        rules,
        FidoRules {
            user_verification: UserVerification::Preferred,
            pin_required: false,
        }
    );
    assert!(!rules.demands_verification());
}

#[test]
fn fido_keys_are_read() {
    let c = Config::parse(
        r#"
[device]
simulated_hid_dir = "/run/tessera-sim"
[fido]
rp_id = "pam://office"
user_verification = "discouraged"
pin_required = true
algorithms = ["eddsa", "es256"]
check_sign_count = false
[users.alice.fido]
user_verification = "required"
[groups.wheel.fido]
pin_required = false
"#,
    )
    .unwrap();
    assert_eq!(
        c.device.simulated_hid_dir.as_deref(),
        Some(Path::new("/run/tessera-sim"))
    );
    assert_eq!(c.fido.rp_id, "pam://office");
    assert_eq!(c.fido.user_verification, UserVerification::Discouraged);
    assert!(c.fido.pin_required);
    assert_eq!(c.fido.algorithms, vec!["eddsa".to_owned(), "es256".into()]);
    assert!(!c.fido.check_sign_count);
    assert_eq!(
        c.fido.users["alice"],
        FidoOverride {
            user_verification: Some(UserVerification::Required),
            pin_required: None,
        }
    );
    assert_eq!(c.fido.groups["wheel"].pin_required, Some(false));
}

#[test]
fn fido_rules_user_beats_groups_beat_fido_and_the_strictest_group_wins() {
    let c = Config::parse(
        r#"
[fido]
user_verification = "discouraged"
[users.alice.fido]
user_verification = "preferred"
[groups.a.fido]
user_verification = "required"
[groups.b.fido]
user_verification = "discouraged"
pin_required = true
[groups.c.fido]
pin_required = false
"#,
    )
    .unwrap();
    let uv = |user: &str, g: &[&str]| c.fido_rules_for(user, &groups(g)).user_verification;
    let pin = |user: &str, g: &[&str]| c.fido_rules_for(user, &groups(g)).pin_required;
    assert_eq!(
        uv("alice", &["a"]),
        UserVerification::Preferred,
        "user table"
    );
    assert_eq!(uv("bob", &["a", "b"]), UserVerification::Required);
    assert_eq!(uv("bob", &["b", "a"]), UserVerification::Required);
    assert_eq!(uv("bob", &["b"]), UserVerification::Discouraged);
    assert_eq!(uv("bob", &[]), UserVerification::Discouraged, "[fido]");
    assert!(pin("bob", &["c", "b"]), "true wins among groups");
    assert!(!pin("bob", &["c"]));
    assert!(!pin("alice", &[]), "default");
    assert!(c
        .fido_rules_for("bob", &groups(&["a"]))
        .demands_verification());
    assert!(c
        .fido_rules_for("bob", &groups(&["b"]))
        .demands_verification());
}

#[test]
fn fido_mistakes() {
    for (text, want) in [
        ("[fido]\nrp_id = \"\"\n", "fido.rp_id: must not be empty"),
        (
            "[fido]\nrp_id = \" pam://x\"\n",
            "fido.rp_id: has leading or trailing spaces",
        ),
        (
            "[fido]\nrp_id = 5\n",
            "fido.rp_id: expected a string, found integer 5",
        ),
        (
            "[fido]\nuser_verification = \"always\"\n",
            "fido.user_verification: unknown value \"always\"; expected \"required\", \
             \"preferred\" or \"discouraged\"",
        ),
        (
            "[fido]\nuser_verification = true\n",
            "fido.user_verification: expected \"required\", \"preferred\" or \"discouraged\", \
             found boolean true",
        ),
        (
            "[fido]\nalgorithms = \"es256\"\n",
            "fido.algorithms: expected an array of algorithm names",
        ),
        (
            "[fido]\nalgorithms = []\n",
            "fido.algorithms: must name at least one algorithm",
        ),
        (
            "[fido]\nalgorithms = [\"es256\", \"rs256\"]\n",
            "fido.algorithms: unknown algorithm \"rs256\"; expected \"es256\" or \"eddsa\"",
        ),
        (
            "[fido]\nalgorithms = [\"es256\", 7]\n",
            "fido.algorithms: expected algorithm names (strings), found integer 7",
        ),
        (
            "[fido]\nalgorithms = [\"eddsa\", \"eddsa\"]\n",
            "fido.algorithms: \"eddsa\" is listed twice",
        ),
        (
            "[fido]\ncheck_sign_count = \"no\"\n",
            "fido.check_sign_count: expected true or false",
        ),
        (
            "[fido]\nrpid = \"x\"\n",
            "fido.rpid: unknown key; expected one of `rp_id`",
        ),
        (
            "[users.alice.fido]\nrp_id = \"x\"\n",
            "users.alice.fido.rp_id: unknown key; expected one of `user_verification`, \
             `pin_required`",
        ),
        (
            "[groups.wheel.fido]\nuser_verification = \"maybe\"\n",
            "groups.wheel.fido.user_verification: unknown value \"maybe\"",
        ),
        (
            "[device]\nsimulated_hid_dir = \"keys\"\n",
            "device.simulated_hid_dir: \"keys\" is not an absolute path",
        ),
        (
            "[device]\nsimulated_hid_dir = \"\"\n",
            "device.simulated_hid_dir: must not be empty",
        ),
        (
            "[device]\nsimulated_hid_dir = true\n",
            "device.simulated_hid_dir: expected a path string, found boolean true",
        ),
    ] {
        let e = parse_err(text);
        assert!(e.starts_with(want), "{text:?}:\n{e}");
    }
    let e = parse_err("[fido]\nalgorithms = [\"es256\",\n  \"rs256\"]\n");
    assert!(
        e.contains("at line 3, column 3"),
        "points at the bad item:\n{e}"
    );
}

#[test]
fn pam_and_session_are_read_and_resolved() {
    let c = Config::parse(
        r#"
[pam]
reuse = false
max_age = "10m"
[pam.services.sudo]
reuse = true
max_age = "5m"
[pam.services."polkit-1"]
max_age = "1m"
[session]
on_removal = "none"
[users.alice.session]
on_removal = "terminate"
[groups.staff.session]
on_removal = "lock"
[groups.ops.session]
on_removal = "terminate"
[groups.lax.session]
on_removal = "none"
"#,
    )
    .unwrap();
    let rules = |s: Option<&str>| {
        let r = c.reuse_rules_for(s);
        (r.reuse, r.max_age)
    };
    assert_eq!(rules(None), (false, secs(10 * MIN)));
    assert_eq!(rules(Some("login")), (false, secs(10 * MIN)));
    assert_eq!(rules(Some("sudo")), (true, secs(5 * MIN)));
    assert_eq!(rules(Some("polkit-1")), (false, secs(MIN)));
    assert_eq!(c.on_removal_for("bob", &[]), OnRemoval::None);
    assert_eq!(c.on_removal_for("bob", &groups(&["lax"])), OnRemoval::None);
    assert_eq!(
        c.on_removal_for("bob", &groups(&["lax", "staff"])),
        OnRemoval::Lock
    );
    assert_eq!(
        c.on_removal_for("bob", &groups(&["staff", "ops", "lax"])),
        OnRemoval::Terminate,
        "the strictest group wins"
    );
    // The user's own table beats every group.
    assert_eq!(
        c.on_removal_for("alice", &groups(&["lax"])),
        OnRemoval::Terminate
    );
}

#[test]
fn pam_and_session_defaults() {
    let c = Config::default();
    let r = c.reuse_rules_for(Some("sudo"));
    assert_eq!((r.reuse, r.max_age), (true, secs(15 * MIN)));
    assert_eq!(
        c.on_removal_for("root", &groups(&["root"])),
        OnRemoval::Lock
    );
}

#[test]
fn pam_and_session_mistakes_name_their_key() {
    for (text, start) in [
        ("[pam]\nreuse = \"yes\"\n", "pam.reuse: "),
        (
            "[pam]\nmax_age = \"0s\"\n",
            "pam.max_age: must be longer than 0s",
        ),
        ("[pam]\nmax_age = 300\n", "pam.max_age: "),
        ("[pam]\nmaxage = \"5m\"\n", "pam.maxage: unknown key"),
        (
            "[pam.services.sudo]\nservices = 1\n",
            "pam.services.sudo.services: unknown key",
        ),
        (
            "[pam.services.sudo]\nmax_age = \"1x\"\n",
            "pam.services.sudo.max_age: ",
        ),
        ("[pam]\nservices = 3\n", "pam.services: "),
        (
            "[session]\non_removal = \"logout\"\n",
            "session.on_removal: \"logout\" is not one of",
        ),
        ("[session]\non_removal = true\n", "session.on_removal: "),
        ("[session]\nlock = true\n", "session.lock: unknown key"),
        (
            "[users.alice.session]\non_removal = \"off\"\n",
            "users.alice.session.on_removal: ",
        ),
        (
            "[groups.wheel.session]\nonremoval = \"lock\"\n",
            "groups.wheel.session.onremoval: unknown key",
        ),
    ] {
        let e = parse_err(text);
        assert!(e.starts_with(start), "{text:?}: {e}");
    }
}
