//! Listing and removing enrollments (ListEnrollments, RemoveEnrollment): how a lost card stops
//! working. Making an enrollment is [`super::enroll`].

use super::{Caller, Service};
use crate::policy::users::Account;
use crate::store::{DeviceKind, KeyAlgorithm, WriteOp};
use crate::{Error, Result};

/// The reason TokenRevoked gives for the tokens of a removed enrollment.
pub const UNENROLLED: &str = "unenrolled";

/// The longest enrollment id accepted from a caller (ours are 22 characters).
const MAX_ID_LEN: usize = 64;

/// An enrollment as ListEnrollments shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentInfo {
    /// Enrollment id (what RemoveEnrollment takes).
    pub id: String,
    /// Unix account name.
    pub user: String,
    /// Kind of device.
    pub kind: DeviceKind,
    /// Which credential of the device: a PIV key reference, e.g. "9a" (later a FIDO credential id).
    pub credential: String,
    /// The algorithm of the enrolled public key.
    pub algorithm: KeyAlgorithm,
    /// What the device calls itself (PIV: the subject of the enrolled slot's certificate), if anything.
    pub device_name: String,
    /// What the device says it is (PIV: the CHUID GUID), if it said.
    pub device_identity: Option<[u8; 16]>,
    /// Unix seconds.
    pub created: u64,
    /// The last authentication with this enrollment, Unix seconds; `None` if never.
    pub last_used: Option<u64>,
}

/// The enrollments of `user` ("" = the caller), by id. Root may name an account that no longer
/// exists, so the enrollments of a departed user can still be found and removed.
pub(super) async fn list(svc: &Service, caller: Caller, user: &str) -> Result<Vec<EnrollmentInfo>> {
    let name = if caller.is_root() && !user.is_empty() {
        user.to_owned()
    } else {
        svc.resolve_user(caller, user).await?.name
    };
    let rows = svc.inner.store.enrollments_for_user(&name)?;
    if rows.is_empty() && caller.is_root() && !user.is_empty() {
        // Neither enrolled nor an account: say so rather than answer an empty list.
        Account::by_name(user)?;
    }
    // Every stored token row, dead ones too (the index keeps only the live ones per user).
    let tokens = svc.inner.store.tokens_for_user(&name)?;
    Ok(rows
        .into_iter()
        .map(|e| {
            // Tokens still stored, and those pruned already (folded into the enrollment's row).
            let indexed = tokens
                .iter()
                .filter(|t| t.enrollment_id == e.id)
                .map(|t| t.auth_time)
                .max();
            EnrollmentInfo {
                last_used: indexed.max(e.last_used),
                id: e.id,
                user: e.user,
                kind: e.kind,
                credential: e.credential,
                algorithm: e.algorithm,
                device_name: e.label.unwrap_or_default(),
                device_identity: e.device_identity,
                created: e.created,
            }
        })
        .collect())
}

/// Removes enrollment `id`: the caller's own, or anyone's as root. Its live tokens are revoked
/// ("unenrolled") and announced; their rows go with the enrollment (ON DELETE CASCADE), which
/// leaves them unknown, i.e. invalid, after a restart.
pub(super) async fn remove(svc: &Service, caller: Caller, id: &str) -> Result<()> {
    check_id(id)?;
    let not_found = || Error::NotEnrolled(format!("no enrollment {id}"));
    let e = svc.inner.store.enrollment(id)?.ok_or_else(not_found)?;
    if !caller.is_root() {
        let own = Account::by_uid(caller.uid)
            .is_ok_and(|a| a.name == e.user && a.uid == e.uid && e.uid == caller.uid);
        if !own {
            return Err(Error::AccessDenied(format!(
                "uid {} may not remove an enrollment of {}",
                caller.uid, e.user
            )));
        }
    }
    // No token of the user is recorded meanwhile (issue and refresh take this lock), so every
    // token of the enrollment is in the index now or is refused at recording.
    let user_lock = svc.user_lock(&e.user);
    let _serial = user_lock.lock().await;
    // In memory first, like a device removal: validations fail from this instant, even if the
    // store cannot be written.
    let revoked = svc
        .inner
        .tokens
        .revoke_enrollment(&e.user, &e.id, UNENROLLED);
    for jti in &revoked {
        svc.announce_revoked(jti.clone(), &e.user, UNENROLLED);
    }
    let outcomes = svc
        .inner
        .store
        .apply(vec![WriteOp::DeleteEnrollment { id: e.id.clone() }])
        .await?;
    if !outcomes.first().is_some_and(|o| o.changed()) {
        // Another call removed it first; it announced the tokens it revoked.
        return Err(not_found());
    }
    tracing::info!(user = %e.user, enrollment = %e.id, tokens = revoked.len(), "enrollment removed");
    Ok(())
}

/// An enrollment id from a caller: our ids are base64url, so anything else names none.
fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(
            "an enrollment id is 1 to 64 characters of A-Z a-z 0-9 - _".into(),
        ))
    }
}
