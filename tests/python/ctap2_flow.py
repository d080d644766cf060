"""CTAP2 against the simulated key with python-fido2: getInfo; for PIN/UV auth protocols 2 and 1 a
PIN token from ClientPin, makeCredential (attestation verified) and getAssertion (signature verified
with the attested public key); a silent pre-flight (up=false); a PIN-protected request without a
token refused. Exits non-zero with a message on the first failure."""

import os
from hashlib import sha256

from fido2.attestation import Attestation
from fido2.ctap import CtapError
from fido2.ctap2 import Ctap2
from fido2.ctap2.pin import ClientPin, PinProtocolV1, PinProtocolV2

from simkey import check, open_device, parser

FLAG_UP, FLAG_UV, FLAG_AT = 0x01, 0x04, 0x40


def main():
    p = parser(__doc__)
    p.add_argument("--pin", default="123456")
    p.add_argument("--rp", default="pam://tessera")
    p.add_argument("--retries", type=int, default=8, help="PIN retries expected at the start")
    args = p.parse_args()
    ctap = Ctap2(open_device(args))
    info = ctap.get_info()
    for version in ("FIDO_2_0", "FIDO_2_1", "U2F_V2"):
        check(version in info.versions, f"getInfo versions {info.versions} lack {version}")
    check(len(info.aaguid) == 16, "AAGUID is not 16 bytes")
    check(info.options.get("clientPin") is True, f"clientPin not true: {info.options}")
    check(info.options.get("pinUvAuthToken") is True, "pinUvAuthToken not offered")
    check({1, 2} <= set(info.pin_uv_protocols), f"PIN protocols {info.pin_uv_protocols}")
    algs = [a["alg"] for a in (info.algorithms or [])]
    check(-7 in algs, f"ES256 not among {algs}")
    rp_hash = sha256(args.rp.encode()).digest()
    rp = {"id": args.rp, "name": "Tessera"}
    counter = -1

    expected_retries = args.retries
    for protocol in (PinProtocolV2(), PinProtocolV1()):
        v = protocol.VERSION
        pin = ClientPin(ctap, protocol)
        retries = pin.get_pin_retries()[0]
        check(retries == expected_retries,
              f"protocol {v}: {retries} PIN retries, expected {expected_retries}")
        # The right PIN restores the retries (CTAP 2.1 §6.5.5.7).
        expected_retries = 8
        perms = ClientPin.PERMISSION.MAKE_CREDENTIAL | ClientPin.PERMISSION.GET_ASSERTION
        token = pin.get_pin_token(args.pin, perms, args.rp)

        cdh = os.urandom(32)
        att = ctap.make_credential(
            cdh,
            rp,
            {"id": os.urandom(16), "name": "alice"},
            [{"type": "public-key", "alg": -7}],
            pin_uv_param=protocol.authenticate(token, cdh),
            pin_uv_protocol=v,
        )
        ad = att.auth_data
        check(ad.rp_id_hash == rp_hash, f"protocol {v}: makeCredential rpIdHash")
        check(ad.flags & (FLAG_UP | FLAG_UV | FLAG_AT) == FLAG_UP | FLAG_UV | FLAG_AT,
              f"protocol {v}: makeCredential flags {ad.flags:#x}")
        Attestation.for_type(att.fmt)().verify(att.att_stmt, ad, cdh)
        cred = ad.credential_data
        check(cred is not None, "no attested credential data")
        public_key = cred.public_key
        allow = [{"type": "public-key", "id": cred.credential_id}]

        token = pin.get_pin_token(args.pin, ClientPin.PERMISSION.GET_ASSERTION, args.rp)
        cdh = os.urandom(32)
        assertion = ctap.get_assertion(
            args.rp, cdh, allow,
            pin_uv_param=protocol.authenticate(token, cdh), pin_uv_protocol=v,
        )
        assertion.verify(cdh, public_key)
        ad = assertion.auth_data
        check(ad.rp_id_hash == rp_hash, f"protocol {v}: getAssertion rpIdHash")
        check(ad.flags & (FLAG_UP | FLAG_UV) == FLAG_UP | FLAG_UV,
              f"protocol {v}: getAssertion flags {ad.flags:#x}")
        check(ad.counter > counter, f"counter {ad.counter} after {counter}")
        counter = ad.counter
        check(assertion.credential["id"] == cred.credential_id, "another credential answered")

        # The silent pre-flight: no touch, UP clear, still signed.
        cdh = os.urandom(32)
        silent = ctap.get_assertion(args.rp, cdh, allow, options={"up": False})
        silent.verify(cdh, public_key)
        check(silent.auth_data.flags & FLAG_UP == 0, "up=false assertion has UP set")

        # Another relying party does not know the credential.
        try:
            ctap.get_assertion("pam://other", os.urandom(32), allow, options={"up": False})
            check(False, "a credential of another rp id was used")
        except CtapError as e:
            check(e.code == CtapError.ERR.NO_CREDENTIALS, f"other rp id: {e}")
        print(f"protocol {v}: makeCredential and getAssertion verified")

    # EdDSA (Ed25519) when the key offers it, verified by python-fido2 as well.
    if -8 in algs:
        pin = ClientPin(ctap, PinProtocolV2())
        perms = ClientPin.PERMISSION.MAKE_CREDENTIAL | ClientPin.PERMISSION.GET_ASSERTION
        token = pin.get_pin_token(args.pin, perms, args.rp)
        cdh = os.urandom(32)
        att = ctap.make_credential(
            cdh, rp, {"id": os.urandom(16), "name": "alice"},
            [{"type": "public-key", "alg": -8}],
            pin_uv_param=pin.protocol.authenticate(token, cdh), pin_uv_protocol=2,
        )
        Attestation.for_type(att.fmt)().verify(att.att_stmt, att.auth_data, cdh)
        cred = att.auth_data.credential_data
        check(cred.public_key.ALGORITHM == -8, f"EdDSA asked, got {cred.public_key.ALGORITHM}")
        cdh = os.urandom(32)
        assertion = ctap.get_assertion(
            args.rp, cdh, [{"type": "public-key", "id": cred.credential_id}],
            options={"up": False},
        )
        assertion.verify(cdh, cred.public_key)
        print("eddsa: makeCredential and getAssertion verified")

    # A key with a PIN set refuses makeCredential without a token (CTAP 2.1 §6.1.2 step 11).
    try:
        ctap.make_credential(os.urandom(32), rp, {"id": b"u", "name": "u"},
                             [{"type": "public-key", "alg": -7}])
        check(False, "makeCredential without a PIN token succeeded")
    except CtapError as e:
        check(e.code == CtapError.ERR.PUAT_REQUIRED, f"no token: {e}")
    print("ctap2_flow: ok")


if __name__ == "__main__":
    main()
