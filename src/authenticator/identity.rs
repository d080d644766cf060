//! What a device is, in device-neutral terms: the credentials it holds, its stable identifier and
//! the device key it proved it holds.

/// A credential a device holds (PIV: a slot with a certificate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// Credential reference as the device kind names it ("9a").
    pub credential: String,
    /// RFC 7638 thumbprint of its public key.
    pub thumbprint: String,
    /// Whether using it needs the device's PIN.
    pub needs_secret: bool,
}

/// A key that identifies the device itself (PIV: the Card Authentication key, 9E).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceKey {
    /// RFC 7638 thumbprint.
    pub thumbprint: String,
    /// The device signed a fresh challenge with it when it was identified.
    pub proven: bool,
}

/// What a present device is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// Credentials it holds, in the device's order.
    pub credentials: Vec<Credential>,
    /// Stable identifier (PIV: CHUID GUID).
    pub guid: Option<[u8; 16]>,
    /// Human-readable name (PIV: the 9A certificate's subject), if the device says one.
    pub name: Option<String>,
    /// The device key, if it has one.
    pub device_key: Option<DeviceKey>,
}

impl DeviceIdentity {
    /// The thumbprint of the key of `credential`, if the device holds it.
    pub fn thumbprint(&self, credential: &str) -> Option<&str> {
        self.credentials
            .iter()
            .find(|c| c.credential.eq_ignore_ascii_case(credential))
            .map(|c| c.thumbprint.as_str())
    }

    /// What identifies the device for device sessions and the PIN guard: its credential keys and
    /// GUID, as "9a:THUMB,9e:THUMB,guid:HEX" (the form stored by earlier versions).
    pub fn card_id(&self) -> String {
        let mut parts: Vec<String> = self
            .credentials
            .iter()
            .map(|c| format!("{}:{}", c.credential, c.thumbprint))
            .collect();
        if let Some(g) = self.guid {
            parts.push(format!("guid:{}", hex::encode(g)));
        }
        parts.join(",")
    }
}
