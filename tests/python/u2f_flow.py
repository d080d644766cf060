"""U2F (CTAP1) against the simulated key with python-fido2's Ctap1: VERSION, REGISTER (attestation
signature verified), AUTHENTICATE (signature verified with the registered key, counter rising),
check-only, and a key handle for another application refused. With --u2f-only, also that the key
does not speak CTAP2. Exits non-zero with a message on the first failure."""

import os
from hashlib import sha256

from fido2.ctap1 import APDU, ApduError, Ctap1
from fido2.hid import CAPABILITY

from simkey import check, open_device, parser


def main():
    p = parser(__doc__)
    p.add_argument("--u2f-only", action="store_true")
    args = p.parse_args()
    device = open_device(args)
    if args.u2f_only:
        check(not (device.capabilities & CAPABILITY.CBOR),
              f"a U2F-only key reports CBOR ({device.capabilities!r})")
    ctap1 = Ctap1(device)
    check(ctap1.get_version() == "U2F_V2", "VERSION is not U2F_V2")
    app = sha256(b"pam://tessera").digest()
    cdh = os.urandom(32)
    reg = ctap1.register(cdh, app)
    reg.verify(app, cdh)
    counter = -1
    for _ in range(2):
        cdh = os.urandom(32)
        sig = ctap1.authenticate(cdh, app, reg.key_handle)
        sig.verify(app, cdh, reg.public_key)
        check(sig.user_presence & 0x01 == 1, "AUTHENTICATE without user presence")
        check(sig.counter > counter, f"counter {sig.counter} after {counter}")
        counter = sig.counter
    try:
        ctap1.authenticate(os.urandom(32), app, reg.key_handle, check_only=True)
        check(False, "check-only answered 9000")
    except ApduError as e:
        check(e.code == APDU.USE_NOT_SATISFIED, f"check-only: {e}")
    try:
        ctap1.authenticate(os.urandom(32), sha256(b"other").digest(), reg.key_handle)
        check(False, "a key handle of another application was used")
    except ApduError as e:
        check(e.code == APDU.WRONG_DATA, f"other application: {e}")
    print("u2f_flow: ok")


if __name__ == "__main__":
    main()
