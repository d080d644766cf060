//! Tests of `ctaphid.rs`.
