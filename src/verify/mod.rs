//! Verification: fresh challenges and the checks of a device's signature over them.

pub mod challenge;
