"""A key with `--fault remove-on-sign` and no PIN, with python-fido2: makeCredential works, and the
getAssertion that would sign finds the key gone (the connection closes, no answer). Exits non-zero
with a message on the first failure."""

import os

from fido2.ctap2 import Ctap2

from simkey import check, fail, open_device, parser


def main():
    args = parser(__doc__).parse_args()
    ctap = Ctap2(open_device(args))
    check(ctap.info.options.get("clientPin") is False, "the key has a PIN")
    rp = "pam://tessera"
    att = ctap.make_credential(
        os.urandom(32), {"id": rp, "name": "Tessera"}, {"id": b"u1", "name": "u1"},
        [{"type": "public-key", "alg": -7}],
    )
    cred = att.auth_data.credential_data
    try:
        ctap.get_assertion(rp, os.urandom(32), [{"type": "public-key", "id": cred.credential_id}])
    except OSError as e:
        print(f"remove_on_sign: ok (key gone: {e})")
        return
    except Exception as e:  # noqa: BLE001 - any other outcome is the failure to report
        fail(f"getAssertion failed otherwise than by the key going away: {e!r}")
    fail("getAssertion answered although the key should be gone")


if __name__ == "__main__":
    main()
