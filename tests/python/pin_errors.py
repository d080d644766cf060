"""Wrong PINs against the simulated key with python-fido2: each answers PIN_INVALID with one retry
fewer, and the third in a row PIN_AUTH_BLOCKED, which holds (even for the right PIN) until the key
is power-cycled. Exits non-zero with a message on the first failure."""

from fido2.ctap import CtapError
from fido2.ctap2 import Ctap2
from fido2.ctap2.pin import ClientPin, PinProtocolV1, PinProtocolV2

from simkey import check, open_device, parser


def main():
    p = parser(__doc__)
    p.add_argument("--pin", default="123456")
    p.add_argument("--protocol", type=int, choices=(1, 2), default=2)
    args = p.parse_args()
    ctap = Ctap2(open_device(args))
    pin = ClientPin(ctap, PinProtocolV2() if args.protocol == 2 else PinProtocolV1())
    before = pin.get_pin_retries()[0]
    for attempt in (1, 2):
        try:
            pin.get_pin_token("000000")
            check(False, "a wrong PIN gave a token")
        except CtapError as e:
            check(e.code == CtapError.ERR.PIN_INVALID, f"wrong PIN {attempt}: {e}")
        left = pin.get_pin_retries()[0]
        check(left == before - attempt, f"after {attempt} wrong PINs {left} retries, from {before}")
    try:
        pin.get_pin_token("000000")
        check(False, "a third wrong PIN gave a token")
    except CtapError as e:
        check(e.code == CtapError.ERR.PIN_AUTH_BLOCKED, f"third wrong PIN: {e}")
    try:
        pin.get_pin_token(args.pin)
        check(False, "the right PIN worked while PIN_AUTH_BLOCKED")
    except CtapError as e:
        check(e.code == CtapError.ERR.PIN_AUTH_BLOCKED, f"right PIN while blocked: {e}")
    print("pin_errors: ok")


if __name__ == "__main__":
    main()
