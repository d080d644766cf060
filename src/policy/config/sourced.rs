//! Where a rule's value came from ([`Source`]), and the precedence every per-user rule follows to
//! get there: the user's table, else the strictest of the user's groups' tables, else the global
//! table, else the built-in default.
//!
//! The rules are enforced and shown (`tessera policy show`) from the same [`Sourced`] values, so
//! the view cannot drift from what the service does.

use std::collections::BTreeMap;
use std::fmt;

use super::toml_key;

/// Where a value of the effective policy came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The built-in default: the global table leaves it as it is (a line repeating the default
    /// counts as the default, so this also holds for a [`Config`](super::Config) built in code).
    Default,
    /// The global table: `[token]`, `[piv]`, `[fido]`, `[pam]`, `[session]`.
    Global(ConfigTable),
    /// `[groups.NAME.TABLE]`.
    Group(String, ConfigTable),
    /// `[users.NAME.TABLE]`.
    User(String, ConfigTable),
    /// `[pam.services.NAME]`.
    PamService(String),
}

/// The tables of the configuration file whose rules the effective policy shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigTable {
    /// `[token]`.
    Token,
    /// `[piv]`.
    Piv,
    /// `[fido]`.
    Fido,
    /// `[pam]`.
    Pam,
    /// `[session]`.
    Session,
}

impl ConfigTable {
    /// The table's name as written in the file.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            ConfigTable::Token => "token",
            ConfigTable::Piv => "piv",
            ConfigTable::Fido => "fido",
            ConfigTable::Pam => "pam",
            ConfigTable::Session => "session",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::Global(t) => write!(f, "[{}]", t.name()),
            Source::Group(g, t) => write!(f, "[groups.{}.{}]", toml_key(g), t.name()),
            Source::User(u, t) => write!(f, "[users.{}.{}]", toml_key(u), t.name()),
            Source::PamService(s) => write!(f, "[pam.services.{}]", toml_key(s)),
        }
    }
}

/// A rule's value and where it came from, while resolving.
#[derive(Debug, Clone)]
pub(super) struct Sourced<T> {
    pub(super) value: T,
    pub(super) source: Source,
}

impl<T: PartialEq> Sourced<T> {
    /// The global table's `value`, reported as the default when it equals `default`.
    pub(super) fn global(table: ConfigTable, value: T, default: &T) -> Self {
        let source = if value == *default {
            Source::Default
        } else {
            Source::Global(table)
        };
        Sourced { value, source }
    }
}

impl<T> Sourced<T> {
    pub(super) fn new(value: T, source: Source) -> Self {
        Sourced { value, source }
    }

    /// Takes `value` from `source` if it is set.
    pub(super) fn set(&mut self, value: Option<T>, source: impl Fn() -> Source) {
        if let Some(v) = value {
            *self = Sourced::new(v, source());
        }
    }

    /// Takes the groups' value, if one of them set it.
    pub(super) fn set_from(&mut self, value: Option<Sourced<T>>) {
        if let Some(v) = value {
            *self = v;
        }
    }

    /// The user's own table value, if set, over what the groups and the global table say.
    pub(super) fn set_by_user(&mut self, table: ConfigTable, user: &str, value: Option<T>) {
        self.set(value, || Source::User(user.to_owned(), table));
    }
}

/// The strictest of the values `groups` set for one key of `table`, with its group; on equal
/// strictness the earlier group wins (callers pass them in name order). `None` if none sets it.
pub(super) fn strictest<'a, T>(
    table: ConfigTable,
    groups: impl IntoIterator<Item = (&'a String, T)>,
    stricter: impl Fn(&T, &T) -> bool,
) -> Option<Sourced<T>> {
    let mut best: Option<Sourced<T>> = None;
    for (name, v) in groups {
        if best.as_ref().is_none_or(|b| stricter(&v, &b.value)) {
            best = Some(Sourced::new(v, Source::Group(name.clone(), table)));
        }
    }
    best
}

/// The entries of `tables` (by group name) for the groups the user is in, in name order.
pub(super) fn of_member_groups<'a, V>(
    tables: &'a BTreeMap<String, V>,
    groups: &'a [String],
) -> impl Iterator<Item = (&'a String, &'a V)> {
    tables.iter().filter(|(name, _)| groups.contains(name))
}
