//! Policy: the administrator's configuration and the accounts and groups it is applied to.

pub mod config;
pub mod users;
