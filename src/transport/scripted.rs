//! Test doubles for [`CardTransport`], not cards: a script of expected commands and their answers,
//! a card that answers everything alike, and one that is gone. Card behaviour itself is simulated by
//! `tessera-sim`; these pin down the exact bytes the protocol layers send.

// Compiled only for tests (`#[cfg(test)]` at its `mod` line): test doubles that cannot do what the test
// scripted is a broken test, so panicking is its error handling; no device or bus input reaches it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;

use super::CardTransport;
use crate::{Error, Result};

/// Bytes from hex, spaces allowed.
pub fn hex(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).unwrap()
}

/// Replays a script of (expected command, response) byte pairs and fails the test on any other
/// command, or on one more than the script holds.
pub struct ScriptedCard {
    script: VecDeque<(Vec<u8>, Vec<u8>)>,
}

impl ScriptedCard {
    /// A script in hex, spaces allowed.
    pub fn new(script: &[(&str, &str)]) -> Self {
        Self {
            script: script.iter().map(|(c, r)| (hex(c), hex(r))).collect(),
        }
    }

    pub fn with(script: Vec<(Vec<u8>, Vec<u8>)>) -> Self {
        Self {
            script: script.into(),
        }
    }

    /// Fails the test unless every scripted command was sent.
    pub fn assert_done(&self) {
        assert!(
            self.script.is_empty(),
            "{} scripted exchanges not sent",
            self.script.len()
        );
    }
}

impl CardTransport for ScriptedCard {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>> {
        let (want, resp) = self.script.pop_front().expect("unexpected extra command");
        assert_eq!(
            hex::encode_upper(command),
            hex::encode_upper(&want),
            "command"
        );
        Ok(resp)
    }
}

/// A hostile card that gives the same answer to every command, counting them.
pub struct RepeatingCard {
    pub reply: Vec<u8>,
    pub calls: usize,
}

impl CardTransport for RepeatingCard {
    fn transmit(&mut self, _command: &[u8]) -> Result<Vec<u8>> {
        self.calls += 1;
        Ok(self.reply.clone())
    }
}

/// A card pulled out: every command fails with [`Error::DeviceRemoved`].
pub struct RemovedCard;

impl CardTransport for RemovedCard {
    fn transmit(&mut self, _command: &[u8]) -> Result<Vec<u8>> {
        Err(Error::DeviceRemoved)
    }
}
