"""Touch, keepalive and cancel against a simulated key in `--touch manual`, with python-fido2:
authenticatorSelection reports KEEPALIVE UPNEEDED while it waits, a cancel (CTAPHID_CANCEL over
HID, NFCCTAP_GETRESPONSE P1 11 over NFC) ends it with KEEPALIVE_CANCEL, and after a touch given
through `tessera-sim touch --control SOCKET` it succeeds. Exits non-zero with a message on the first
failure."""

import subprocess
import threading

from fido2.ctap import STATUS, CtapError
from fido2.ctap2 import Ctap2

from simkey import check, open_device, parser


def main():
    p = parser(__doc__)
    p.add_argument("--sim", required=True, help="the tessera-sim binary")
    p.add_argument("--control", required=True, help="the key's --control socket")
    args = p.parse_args()
    ctap = Ctap2(open_device(args))

    seen = []
    cancel = threading.Event()

    def on_keepalive(status):
        seen.append(status)
        if status == STATUS.UPNEEDED:
            cancel.set()

    try:
        ctap.selection(event=cancel, on_keepalive=on_keepalive)
        check(False, "selection succeeded without a touch")
    except CtapError as e:
        check(e.code == CtapError.ERR.KEEPALIVE_CANCEL, f"cancelled selection: {e}")
    check(STATUS.UPNEEDED in seen, f"no UPNEEDED keepalive: {seen}")

    seen.clear()

    def touch_when_asked(status):
        seen.append(status)
        if status == STATUS.UPNEEDED and len(seen) == 1:
            subprocess.run([args.sim, "touch", "--control", args.control], check=True)

    ctap.selection(on_keepalive=touch_when_asked)
    check(STATUS.UPNEEDED in seen, f"no UPNEEDED keepalive before the touch: {seen}")
    print("cancel_flow: ok")


if __name__ == "__main__":
    main()
