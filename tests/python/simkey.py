"""Opens the simulated key (`tessera-sim fido`) for python-fido2, over either transport.

`--hid PATH`: the key's HID socket, through a CtapHidConnection that carries each 64-byte report as
one message on the Unix socket (no report ID), wrapped in python-fido2's own CtapHidDevice.
`--pcsc NAME`: the key as an NFC card, through pcscd and python-fido2's CtapPcscDevice, on the
reader whose name contains NAME.
"""

import argparse
import socket
import sys
import time

from fido2.hid import CtapHidDevice
from fido2.hid.base import CtapHidConnection, HidDescriptor

REPORT_SIZE = 64


class SocketHidConnection(CtapHidConnection):
    """One open of the simulated hidraw node: a Unix stream socket, one report per message."""

    def __init__(self, path: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(40)
        self.sock.connect(path)

    def write_packet(self, data: bytes) -> None:
        if len(data) != REPORT_SIZE:
            raise OSError(f"python-fido2 wrote a {len(data)}-byte report")
        self.sock.sendall(data)

    def read_packet(self) -> bytes:
        buf = b""
        while len(buf) < REPORT_SIZE:
            chunk = self.sock.recv(REPORT_SIZE - len(buf))
            if not chunk:
                raise OSError("the key closed the HID socket")
            buf += chunk
        return buf

    def close(self) -> None:
        self.sock.close()


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--hid", metavar="SOCKET", help="the key's --hid-socket")
    where.add_argument("--pcsc", metavar="READER", help="part of the vpcd reader's name")
    return p


def open_device(args):
    """The key as a python-fido2 CtapDevice."""
    if args.hid:
        descriptor = HidDescriptor(
            args.hid, 0x1209, 0x0001, REPORT_SIZE, REPORT_SIZE, "tessera-sim", None
        )
        return CtapHidDevice(descriptor, SocketHidConnection(args.hid))
    from fido2.pcsc import CtapPcscDevice

    # pcscd polls its readers: a card vpcd just accepted shows up within a few hundred ms.
    deadline = time.monotonic() + 15
    while True:
        devices = list(CtapPcscDevice.list_devices(args.pcsc))
        if devices:
            return devices[0]
        if time.monotonic() > deadline:
            fail(f"no FIDO card in a reader named like {args.pcsc!r}")
        time.sleep(0.2)


def check(condition: bool, message: str) -> None:
    if not condition:
        fail(message)


def fail(message: str) -> None:
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)
