'''Tessera mock template: org.tessera.Tessera1 on the system bus, without a device

For testing greeters, lock screens, PAM stacks and relying services against Tessera's D-Bus API
(README "D-Bus API" and "D-Bus API: interactive requests") without a card, a key or the daemon:

    python3 -m dbusmock --system -t /path/to/dbusmock/tessera.py [-p '{"pin": "123456"}']

What it serves, as tesserad does:
- /org/tessera/Tessera1 with org.freedesktop.DBus.ObjectManager: GetManagedObjects lists the
  devices; InterfacesAdded/InterfacesRemoved as mock devices come and go.
- /org/tessera/Tessera1/devices/<id>, org.tessera.Tessera1.Device: Kind, Transport, Name, Reader.
  <id> is the reader name escaped as the daemon does ("Mock Reader 0" -> Mock_20Reader_200).
- /org/tessera/Tessera1/Manager, org.tessera.Tessera1.Manager: StartAuthentication,
  StartEnrollment, CheckToken, ValidateToken, RevokeToken, BindSession, ReuseSession, EndSession,
  ListSessions, ListEnrollments, property Jwks; signals TokenIssued(s jti, s user),
  TokenRevoked(s jti, s user, s reason), EnrollmentAdded(s id, s user).
- /org/tessera/Tessera1/requests/<n>, org.tessera.Tessera1.Request: property State, SubmitPin,
  SubmitLastTryPin, Cancel; signals Progress(s state, a{sv} details), Completed(s result),
  Failed(s error, s message). A request belongs to the connection that started it: only it may
  call it or read State (others: AccessDenied), its signals are sent to it alone (destination
  set), none before the reply naming the object, and it is cancelled when that connection leaves
  the bus.
Errors are org.tessera.Tessera1.Error.<Name>, the names of tessera_client::ErrorName.

What it does not do: it authorises nobody (every caller may do everything, any_user included),
checks no account (user "" is the caller's account by its uid; any other name is taken as is),
signs nothing (tokens are opaque strings only this mock recognises; Jwks is an empty set), and
does not serve the contract v1 calls Enroll, Authenticate, RefreshToken, RevokeSessions,
EffectivePolicy, RemoveEnrollment, RotateKey, ReloadConfig, nor StartUnblock.

Mock methods (org.freedesktop.DBus.Mock on /org/tessera/Tessera1/Manager):
- AddDevice(s kind, s transport, s name) -> o path: a device is inserted ("piv" or "fido";
  "pcsc", "nfc", "hid" or "sim"); its reader is "Mock Reader <n>". A request waiting for a device
  goes on.
- RemoveDevice(o path): the device is pulled: the live tokens it produced are revoked
  (TokenRevoked "device-removed") and a request using it fails with DeviceRemoved.
- AddEnrollment(s user, s kind) -> s id: `user` is enrolled with a device of that kind. Requests
  for a user without enrollments fail at once with NotEnrolled; any_user requests take the user
  enrolled for the device's kind (several users: Failed UserAmbiguous).
- SetPin(s pin, u retries): the PIN of every mock device and the tries left (default "123456",
  3). A right PIN resets the tries to max(3, retries); a wrong one at the last try blocks it
  (Failed PinBlocked). SubmitPin at the last try is refused with PinWouldBlock.
- SetScript(s user, as steps): what every later request of `user` ("" = any user, and greeter
  requests whose user is not known yet) plays, in order:
    "waiting-for-device"  shown; goes on once a device is present
    "selecting-device"    shown with all present devices
    "working", "touch-needed", "uv-needed"   shown for step_delay seconds, then goes on
    "pin-needed"          a PIN prompt; goes on after the right PIN (a wrong one prompts again)
    "completed"           Completed: a token (StartAuthentication) or enrollment id
    an error name         Failed with it: "Timeout" or "org.tessera.Tessera1.Error.Timeout"
  A step that needs a device when none is present first waits for one ("waiting-for-device";
  with option "wait" false: Failed NoDevice). Default script: working, pin-needed, working,
  completed.
- SetReuse(s user, s session, b ok): ReuseSession for `user` answers without the rules below:
  ok: the claims of a live token of `user` bound to logind session `session` (the newest, or one
  the mock issues for it); not ok: NoLoginSession.
- FailNext(s method, s error, s message): the next call of Manager method `method` fails with
  error `error` (short or full name), e.g. ("ReuseSession", "AccessDenied", "reuse is off").
- IssueToken(s user, a{sv} options) -> s token: a token as if `user` had authenticated;
  options "audience" (s), "login_session" (s), "seat" (s), "kind" (s), "auth_time" (t).
- ActiveRequests() -> ao: the live request objects.
Calls are logged as dbusmock logs them (GetCalls, GetMethodCalls, the log file), request calls
included ("SubmitPin", "Cancel", ... with the request's path first).

Rules the mock keeps, as the daemon does:
- StartAuthentication options: "device" (o), "kinds" (as), "pin" (s, answers the first prompt),
  "wait" (b, default true), "timeout" (u, 1-3600: Failed Timeout after it), "audience" (s, the
  token's aud; default "tessera"), "any_user" (b, with user ""). Unknown keys or wrong types:
  InvalidArgument.
- CheckToken requirements "audience" (s), "max_age" (u), "amr" (as): TokenInvalid,
  StepUpRequired, InvalidArgument as the README says. Claims a{sv}: iss, sub, aud (s), iat, nbf,
  exp (t), jti (s), amr (as), cnf (a{sv}: jkt), sid, enr, login_session, seat (s; "" unbound).
- BindSession(token, {"session": s}): a new token with the session and seat (template parameter
  "seat", default "seat0"), same sid, enr, amr, auth time and expiry; the old one dies ("bound").
- ReuseSession(user, {"service": s, "max_age": u, "allow_remote": b}): the caller's logind
  session is read (the mock's sessions are never remote, so allow_remote changes nothing), as the
  project's logind test mock does, from MOCK_LOGIND_SESSION=<id> in /proc/<caller pid>/environ;
  the claims of the newest live token of `user` bound to it whose device authentication is at
  most max_age seconds old; else NoLoginSession saying why.
- EndSession and RevokeToken revoke with reason "logout"; both are idempotent.

Template parameters (-p JSON): "pin" (s), "retries" (u), "step_delay" (seconds, default 0.05),
"lifetime" (token lifetime in seconds, default 900), "seat" (s), "hostname" (for iss).
'''

# Licensed like Tessera (Apache-2.0).

import base64
import os
import pwd
import re
import secrets
import time

import dbus
import dbus.lowlevel
import dbus.service
from gi.repository import GLib

from dbusmock import MOCK_IFACE, mockobject

BUS_NAME = 'org.tessera.Tessera1'
MAIN_OBJ = '/org/tessera/Tessera1/Manager'
MAIN_IFACE = 'org.tessera.Tessera1.Manager'
SYSTEM_BUS = True

ROOT_OBJ = '/org/tessera/Tessera1'
DEVICES_PATH = '/org/tessera/Tessera1/devices'
REQUESTS_PATH = '/org/tessera/Tessera1/requests'
DEVICE_IFACE = 'org.tessera.Tessera1.Device'
REQUEST_IFACE = 'org.tessera.Tessera1.Request'
OBJECT_MANAGER_IFACE = 'org.freedesktop.DBus.ObjectManager'
ERROR_PREFIX = 'org.tessera.Tessera1.Error'

KINDS = ('piv', 'fido')
TRANSPORTS = ('pcsc', 'nfc', 'hid', 'sim')
SHOWN_STATES = ('waiting-for-device', 'selecting-device', 'working', 'touch-needed', 'uv-needed')
DEVICE_STATES = ('working', 'touch-needed', 'uv-needed', 'pin-needed')
DEFAULT_SCRIPT = ['working', 'pin-needed', 'working', 'completed']
# (min_length, max_length) of a PIN: PIV's 6-8 bytes, a FIDO PIN's 4-63.
PIN_LENGTHS = {'piv': (6, 8), 'fido': (4, 63)}
SESSION_ID = re.compile(r'^[A-Za-z0-9._-]{1,64}$')
ERROR_NAME = re.compile(r'^([A-Za-z0-9_]+\.)*[A-Z][A-Za-z0-9]*$')


class TesseraError(dbus.exceptions.DBusException):
    '''org.tessera.Tessera1.Error.<name>'''

    def __init__(self, name, message):
        super().__init__(message, name=full_error(name))


def full_error(name):
    '''"Timeout" -> "org.tessera.Tessera1.Error.Timeout"; full names stay.'''
    return name if '.' in name else f'{ERROR_PREFIX}.{name}'


def b64url(n):
    return base64.urlsafe_b64encode(secrets.token_bytes(n)).rstrip(b'=').decode()


def escape_id(name):
    '''The daemon's device id: every byte but ASCII letters and digits as _xx.'''
    return ''.join(chr(b) if chr(b).isascii() and chr(b).isalnum() else f'_{b:02x}'
                   for b in name.encode())


class State:
    '''Everything the mock knows, kept on the main mock object as `mock.tessera`.'''

    def __init__(self, mock, parameters):
        self.mock = mock
        self.pin = str(parameters.get('pin', '123456'))
        self.retries = int(parameters.get('retries', 3))
        self.max_retries = max(3, self.retries)
        self.step_delay = float(parameters.get('step_delay', 0.05))
        self.lifetime = int(parameters.get('lifetime', 900))
        self.seat = str(parameters.get('seat', 'seat0'))
        self.issuer = 'tessera:' + str(parameters.get('hostname', os.uname().nodename))
        self.devices = {}        # path -> dict(kind, transport, name, reader, sid)
        self.readers = 0
        self.enrollments = []    # dicts: id, user, kind, credential, created
        self.scripts = {}        # user ('' = any) -> [steps]
        self.reuse = {}          # user -> (session, ok)
        self.fail_next = {}      # method -> (error name, message)
        self.tokens = {}         # token -> Token
        self.requests = {}       # path -> Request
        self.next_request = 1

    @property
    def bus(self):
        return self.mock.bus_name.get_bus()

    def record(self, name, args):
        '''Into dbusmock's call log, as its own methods are.'''
        self.mock.log(name + ' ' + ' '.join(repr(str(a)) for a in args))
        self.mock.call_log.append((int(time.time()), name, list(args)))

    def check_fail(self, method):
        failure = self.fail_next.pop(method, None)
        if failure is not None:
            raise TesseraError(*failure)

    def caller_name(self, sender):
        uid = self.bus.get_unix_user(sender)
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError as e:
            raise TesseraError('NoSuchUser', f'uid {uid} has no account') from e

    def user_of(self, user, sender):
        return str(user) if user else self.caller_name(sender)

    def enrollments_of(self, user):
        return [e for e in self.enrollments if e['user'] == user]

    def issue(self, user, kind, audience, pin_used, device=None, login_session='', seat='',
              auth_time=None):
        enr = next((e['id'] for e in self.enrollments_of(user) if e['kind'] == kind), '')
        now = int(time.time())
        amr = ['hwk', 'sc'] if kind == 'piv' else ['hwk']
        if pin_used:
            amr += ['pin', 'mfa']
        token = Token(self, user, {
            'iss': self.issuer, 'sub': user, 'aud': audience, 'iat': now, 'nbf': now,
            'exp': now + self.lifetime, 'jti': b64url(16), 'amr': amr,
            'cnf': {'jkt': b64url(32)},
            'sid': self.devices[device]['sid'] if device in self.devices else b64url(16),
            'enr': enr, 'login_session': login_session, 'seat': seat,
        }, auth_time if auth_time is not None else now, device)
        self.tokens[token.text] = token
        self.mock.EmitSignal(MAIN_IFACE, 'TokenIssued', 'ss', [token.claims['jti'], user])
        return token

    def live(self, text):
        '''The live token `text`, or the error the daemon gives for it.'''
        token = self.tokens.get(str(text))
        if token is None:
            raise TesseraError('TokenInvalid', 'not a token of this mock')
        if token.revoked:
            raise TesseraError('TokenRevoked', f'the token was revoked ({token.revoked})')
        if token.claims['exp'] <= time.time():
            raise TesseraError('TokenExpired', 'the token has expired')
        token.last_used = int(time.time())
        return token

    def revoke(self, token, reason):
        if token.revoked:
            return
        token.revoked = reason
        self.mock.EmitSignal(MAIN_IFACE, 'TokenRevoked', 'sss',
                             [token.claims['jti'], token.user, reason])

    def usable_devices(self, user, kinds):
        '''Present devices of an enrolled kind of `user` (None: anyone's), in insertion order.'''
        enrolled = {e['kind'] for e in self.enrollments if user is None or e['user'] == user}
        return [p for p, d in self.devices.items() if d['kind'] in enrolled and d['kind'] in kinds]

    def device_inserted(self):
        for request in list(self.requests.values()):
            if request.waiting:
                request.waiting = False
                request.later(0, request.run)


class Token:
    '''One token the mock issued.'''

    def __init__(self, state, user, claims, auth_time, device):
        self.text = 'tessera-mock.' + b64url(32)
        self.state = state
        self.user = user
        self.claims = claims
        self.auth_time = auth_time
        self.device = device
        self.iat = claims['iat']
        self.last_used = 0
        self.revoked = ''

    def claims_dict(self):
        c = self.claims
        d = {k: dbus.String(c[k]) for k in ('iss', 'sub', 'aud', 'jti', 'sid', 'enr',
                                             'login_session', 'seat')}
        d.update({k: dbus.UInt64(c[k]) for k in ('iat', 'nbf', 'exp')})
        d['amr'] = dbus.Array(c['amr'], signature='s')
        d['cnf'] = dbus.Dictionary({'jkt': dbus.String(c['cnf']['jkt'])}, signature='sv')
        return dbus.Dictionary(d, signature='sv')

    def session_dict(self):
        device = self.state.devices.get(self.device)
        reader = device['reader'] if device else ''
        return dbus.Dictionary({
            'jti': dbus.String(self.claims['jti']), 'user': dbus.String(self.user),
            'iat': dbus.UInt64(self.iat), 'exp': dbus.UInt64(self.claims['exp']),
            'auth_time': dbus.UInt64(self.auth_time), 'last_used': dbus.UInt64(self.last_used),
            'single_use': dbus.Boolean(False), 'reader': dbus.String(reader),
            'sid': dbus.String(self.claims['sid']),
        }, signature='sv')


def load(mock, parameters):
    mock.tessera = State(mock, parameters or {})
    mock.AddProperties(MAIN_IFACE, dbus.Dictionary({
        'Jwks': dbus.String('{"keys":[]}'),
    }, signature='sv'))
    mock.AddObject(ROOT_OBJ, OBJECT_MANAGER_IFACE, {}, [])
    root = mockobject.get_object(ROOT_OBJ)
    root.AddMethod(OBJECT_MANAGER_IFACE, 'GetManagedObjects', '', 'a{oa{sa{sv}}}',
                   lambda _self: managed_objects(mock.tessera))


def managed_objects(state):
    return dbus.Dictionary({
        dbus.ObjectPath(p): {DEVICE_IFACE: mockobject.get_object(p).props[DEVICE_IFACE]}
        for p in state.devices
    }, signature='oa{sa{sv}}')


#
# org.tessera.Tessera1.Manager
#

def _string(key, value):
    if not isinstance(value, dbus.String):
        raise TesseraError('InvalidArgument', f'option {key!r} must be a string')
    return str(value)


def _bool(key, value):
    if not isinstance(value, dbus.Boolean):
        raise TesseraError('InvalidArgument', f'option {key!r} must be a boolean')
    return bool(value)


def _u32(key, value):
    if not isinstance(value, dbus.UInt32):
        raise TesseraError('InvalidArgument', f'option {key!r} must be a uint32')
    return int(value)


def _options(options, allowed):
    unknown = [k for k in options if k not in allowed]
    if unknown:
        raise TesseraError('InvalidArgument', f'unknown option {str(unknown[0])!r}')
    if len(options) > 16:
        raise TesseraError('InvalidArgument', 'more than 16 options')


@dbus.service.method(MAIN_IFACE, in_signature='sa{sv}', out_signature='o',
                     sender_keyword='sender')
def StartAuthentication(self, user, options, sender=None):
    state = self.tessera
    state.check_fail('StartAuthentication')
    _options(options, ('device', 'kinds', 'pin', 'wait', 'timeout', 'audience', 'any_user'))
    opts = {'kinds': list(KINDS), 'wait': True, 'timeout': None, 'pin': None,
            'device': None, 'audience': 'tessera', 'any_user': False}
    for key, value in options.items():
        if key == 'device':
            if not isinstance(value, dbus.ObjectPath):
                raise TesseraError('InvalidArgument', 'option "device" must be an object path')
            if str(value) not in state.devices:
                raise TesseraError('NoDevice', f'{value} is not a present device')
            opts['device'] = str(value)
        elif key == 'kinds':
            kinds = [str(k) for k in value] if isinstance(value, dbus.Array) else None
            if not kinds or any(k not in KINDS for k in kinds):
                raise TesseraError('InvalidArgument', 'option "kinds" must list "piv", "fido"')
            opts['kinds'] = kinds
        elif key == 'timeout':
            opts['timeout'] = _u32(key, value)
            if not 1 <= opts['timeout'] <= 3600:
                raise TesseraError('InvalidArgument', 'option "timeout" must be 1-3600 seconds')
        elif key == 'audience':
            opts['audience'] = _string(key, value)
            if not opts['audience'] or len(opts['audience']) > 128 or \
                    not all(0x20 < ord(c) < 0x7f for c in opts['audience']):
                raise TesseraError('InvalidArgument',
                                   'option "audience" must be 1-128 printable ASCII bytes')
        elif key in ('wait', 'any_user'):
            opts[key] = _bool(key, value)
        else:
            opts['pin'] = _string(key, value)
    if opts['any_user']:
        if user:
            raise TesseraError('InvalidArgument', 'any_user needs the user ""')
        if not state.enrollments:
            raise TesseraError('NotEnrolled', 'nobody is enrolled')
        name = None
    else:
        name = state.user_of(user, sender)
        if not state.enrollments_of(name):
            raise TesseraError('NotEnrolled', f'{name} has no enrolled device')
    steps = state.scripts.get(name or '', state.scripts.get('', DEFAULT_SCRIPT))
    if not opts['wait'] and opts['device'] is None and \
            not state.usable_devices(name, opts['kinds']):
        raise TesseraError('NoDevice', 'no present device holds an enrollment of the user')
    return start(state, sender, 'authentication', name, steps, opts)


@dbus.service.method(MAIN_IFACE, in_signature='soa{sv}', out_signature='o',
                     sender_keyword='sender')
def StartEnrollment(self, user, device, options, sender=None):
    state = self.tessera
    state.check_fail('StartEnrollment')
    _options(options, ('pin', 'credential', 'slot', 'timeout'))
    if str(device) not in state.devices:
        raise TesseraError('NoDevice', f'{device} is not a present device')
    opts = {'kinds': list(KINDS), 'wait': False, 'timeout': None, 'pin': None,
            'device': str(device), 'audience': '', 'any_user': False}
    for key, value in options.items():
        if key == 'pin':
            opts['pin'] = _string(key, value)
        elif key == 'timeout':
            opts['timeout'] = _u32(key, value)
        else:
            _string(key, value)
    name = state.user_of(user, sender)
    steps = state.scripts.get(name, state.scripts.get('', DEFAULT_SCRIPT))
    return start(state, sender, 'enrollment', name, steps, opts)


def start(state, sender, purpose, user, steps, opts):
    path = f'{REQUESTS_PATH}/{state.next_request}'
    state.next_request += 1
    request = Request(state, path, str(sender), purpose, user, list(steps), opts)
    state.requests[path] = request
    # Idle callbacks run after this method's reply is sent: no signal before the reply.
    request.later(0, request.run)
    return dbus.ObjectPath(path)


def _requirements(requirements):
    _options(requirements, ('audience', 'max_age', 'amr'))
    r = {}
    for key, value in requirements.items():
        if key == 'audience':
            if not isinstance(value, dbus.String):
                raise TesseraError('InvalidArgument', 'requirement "audience" must be a string (s)')
            r['audience'] = str(value)
        elif key == 'max_age':
            if not isinstance(value, dbus.UInt32):
                raise TesseraError('InvalidArgument',
                                   'requirement "max_age" must be seconds as u (uint32)')
            r['max_age'] = int(value)
        else:
            if not isinstance(value, dbus.Array) or value.signature != 's' or len(value) > 16:
                raise TesseraError('InvalidArgument',
                                   'requirement "amr" must be at most 16 strings (as)')
            r['amr'] = [str(m) for m in value]
    return r


@dbus.service.method(MAIN_IFACE, in_signature='sa{sv}', out_signature='a{sv}')
def CheckToken(self, token, requirements):
    state = self.tessera
    state.check_fail('CheckToken')
    r = _requirements(requirements)
    t = state.live(token)
    if 'audience' in r and r['audience'] != t.claims['aud']:
        raise TesseraError('TokenInvalid',
                           f'the token is for audience {t.claims["aud"]!r}, not {r["audience"]!r}')
    if 'max_age' in r and time.time() - t.auth_time > r['max_age']:
        raise TesseraError('StepUpRequired',
                           f'the device authentication is older than {r["max_age"]}s')
    missing = [m for m in r.get('amr', []) if m not in t.claims['amr']]
    if missing:
        raise TesseraError('StepUpRequired', f'the authentication lacks {", ".join(missing)}')
    return t.claims_dict()


@dbus.service.method(MAIN_IFACE, in_signature='s', out_signature='a{sv}')
def ValidateToken(self, token):
    self.tessera.check_fail('ValidateToken')
    return self.tessera.live(token).claims_dict()


def _end(state, token, method):
    state.check_fail(method)
    t = state.tokens.get(str(token))
    if t is None:
        raise TesseraError('TokenInvalid', 'not a token of this mock')
    state.revoke(t, 'logout')


@dbus.service.method(MAIN_IFACE, in_signature='s', out_signature='')
def RevokeToken(self, token):
    _end(self.tessera, token, 'RevokeToken')


@dbus.service.method(MAIN_IFACE, in_signature='s', out_signature='')
def EndSession(self, token):
    _end(self.tessera, token, 'EndSession')


@dbus.service.method(MAIN_IFACE, in_signature='sa{sv}', out_signature='s')
def BindSession(self, token, options):
    state = self.tessera
    state.check_fail('BindSession')
    _options(options, ('session',))
    if 'session' not in options:
        raise TesseraError('InvalidArgument', 'option "session" is required')
    session = _string('session', options['session'])
    if not SESSION_ID.match(session):
        raise TesseraError('InvalidArgument',
                           'option "session" must be 1-64 bytes of [A-Za-z0-9._-]')
    old = state.live(token)
    new = Token(state, old.user, dict(old.claims, jti=b64url(16), iat=int(time.time()),
                                      nbf=int(time.time()), login_session=session,
                                      seat=state.seat),
                old.auth_time, old.device)
    state.tokens[new.text] = new
    state.revoke(old, 'bound')
    self.EmitSignal(MAIN_IFACE, 'TokenIssued', 'ss', [new.claims['jti'], new.user])
    return new.text


def caller_session(state, sender):
    '''MOCK_LOGIND_SESSION of the caller's process, as the project's logind test mock reads it.'''
    pid = state.bus.call_blocking('org.freedesktop.DBus', '/org/freedesktop/DBus',
                                  'org.freedesktop.DBus', 'GetConnectionUnixProcessID',
                                  's', [sender])
    try:
        with open(f'/proc/{int(pid)}/environ', 'rb') as f:
            env = f.read().split(b'\0')
    except OSError:
        return None
    for var in env:
        if var.startswith(b'MOCK_LOGIND_SESSION='):
            return var.split(b'=', 1)[1].decode(errors='replace')
    return None


@dbus.service.method(MAIN_IFACE, in_signature='sa{sv}', out_signature='a{sv}',
                     sender_keyword='sender')
def ReuseSession(self, user, options, sender=None):
    state = self.tessera
    state.check_fail('ReuseSession')
    _options(options, ('service', 'max_age', 'allow_remote'))
    max_age = None
    for key, value in options.items():
        if key == 'service':
            _string(key, value)
        elif key == 'allow_remote':
            _bool(key, value)
        else:
            max_age = _u32(key, value)
    name = state.user_of(user, sender)
    bound = [t for t in state.tokens.values()
             if t.user == name and not t.revoked and t.claims['exp'] > time.time()]
    if name in state.reuse:
        session, ok = state.reuse[name]
        if not ok:
            raise TesseraError('NoLoginSession', f'mock: SetReuse says no for {name}')
        bound = [t for t in bound if t.claims['login_session'] == session]
        token = bound[-1] if bound else state.issue(name, 'piv', 'tessera', True,
                                                    login_session=session, seat=state.seat)
        return token.claims_dict()
    session = caller_session(state, sender)
    if not session:
        raise TesseraError('NoLoginSession', 'the caller is in no login session')
    bound = [t for t in bound if t.claims['login_session'] == session]
    if not bound:
        raise TesseraError('NoLoginSession',
                           f'no live token of {name} is bound to login session {session}')
    if max_age is not None:
        bound = [t for t in bound if time.time() - t.auth_time <= max_age]
        if not bound:
            raise TesseraError('NoLoginSession',
                               f'the device authentication is older than {max_age}s')
    token = bound[-1]
    token.last_used = int(time.time())
    return token.claims_dict()


@dbus.service.method(MAIN_IFACE, in_signature='s', out_signature='aa{sv}',
                     sender_keyword='sender')
def ListSessions(self, user, sender=None):
    state = self.tessera
    state.check_fail('ListSessions')
    name = state.user_of(user, sender)
    return dbus.Array([t.session_dict() for t in state.tokens.values()
                       if t.user == name and not t.revoked and t.claims['exp'] > time.time()],
                      signature='a{sv}')


@dbus.service.method(MAIN_IFACE, in_signature='s', out_signature='aa{sv}',
                     sender_keyword='sender')
def ListEnrollments(self, user, sender=None):
    state = self.tessera
    state.check_fail('ListEnrollments')
    name = state.user_of(user, sender)
    return dbus.Array([dbus.Dictionary({
        'id': dbus.String(e['id']), 'user': dbus.String(e['user']),
        'kind': dbus.String(e['kind']), 'credential': dbus.String(e['credential']),
        'algorithm': dbus.String('es256'),
        'slot': dbus.String(e['credential'] if e['kind'] == 'piv' else ''),
        'device_name': dbus.String(f'CN={e["user"]}'), 'card_guid': dbus.String(''),
        'created': dbus.UInt64(e['created']), 'last_used': dbus.UInt64(0),
    }, signature='sv') for e in state.enrollments_of(name)], signature='a{sv}')


#
# Requests
#

class Request(dbus.service.Object):
    '''/org/tessera/Tessera1/requests/<n>: plays its script.'''

    # dbusmock's method lookup (it replaces dbus-python's) reads these first.
    methods = {}
    interface = REQUEST_IFACE

    def __init__(self, state, path, owner, purpose, user, steps, opts):
        super().__init__(state.mock.bus_name, path)
        self.tessera = state
        self.path = path
        self.owner = owner
        self.purpose = purpose
        self.user = user
        self.steps = steps
        self.opts = opts
        self.device = opts['device']
        self.up_front_pin = opts['pin']
        self.pin_used = False
        self.state = 'working'
        self.asking = False
        self.waiting = False
        self.ended = False
        self.last_error = None
        self.watch = state.bus.watch_name_owner(owner, self._owner_changed)
        if opts['timeout']:
            self.later(opts['timeout'], lambda: self.fail(
                'Timeout', f'the request did not end within {opts["timeout"]}s'))

    def later(self, seconds, fn):
        def fire():
            if not self.ended:
                fn()
            return False
        GLib.timeout_add(int(seconds * 1000), fire)

    def _owner_changed(self, owner):
        if not owner and not self.ended:
            self.tessera.record('RequestOwnerLeft', [self.path])
            self.end()

    def _check_owner(self, sender):
        if sender != self.owner:
            raise TesseraError('AccessDenied', 'the request belongs to another connection')

    def _send(self, member, signature, args):
        msg = dbus.lowlevel.SignalMessage(self.path, REQUEST_IFACE, member)
        msg.append(*args, signature=signature)
        msg.set_destination(self.owner)
        self.tessera.bus.send_message(msg)

    def progress(self, state, details):
        self.state = state
        self._send('Progress', 'sa{sv}', [state, dbus.Dictionary(details, signature='sv')])

    def fail(self, error, message):
        if self.ended:
            return
        self._send('Failed', 'ss', [full_error(error), message])
        self.end()

    def complete(self, result):
        self._send('Completed', 's', [result])
        self.end()

    def end(self):
        self.ended = True
        self.watch.cancel()
        self.tessera.requests.pop(self.path, None)
        self.remove_from_connection()

    def _pick_device(self):
        '''The request's device, once one is present; None: waiting (or failed).'''
        if self.device in self.tessera.devices:
            return self.device
        usable = self.tessera.usable_devices(self.user, self.opts['kinds'])
        if not usable:
            if not self.opts['wait']:
                self.fail('NoDevice', 'no present device holds an enrollment of the user')
                return None
            if self.state != 'waiting-for-device':
                self.progress('waiting-for-device', {})
            self.waiting = True
            return None
        self.device = usable[0]
        if self.user is None:
            kind = self.tessera.devices[self.device]['kind']
            users = sorted({e['user'] for e in self.tessera.enrollments if e['kind'] == kind})
            if len(users) > 1:
                self.fail('UserAmbiguous',
                          f'the device holds enrollments of several accounts: {", ".join(users)}')
                return None
            self.user = users[0]
        return self.device

    def run(self):
        '''Plays steps until one waits (a timer, a device, a PIN) or the request ends.'''
        while not self.ended:
            if not self.steps:
                self.fail('Failed', 'mock: the script ended without a result')
                return
            step = self.steps[0]
            if step in DEVICE_STATES and self._pick_device() is None:
                return
            if step == 'waiting-for-device':
                self.steps.pop(0)
                self.progress(step, {})
                if self.tessera.usable_devices(self.user, self.opts['kinds']):
                    self.later(self.tessera.step_delay, self.run)
                else:
                    self.waiting = True
                return
            if step in SHOWN_STATES:
                self.steps.pop(0)
                if step == 'selecting-device':
                    details = {'devices': dbus.Array(
                        [dbus.ObjectPath(p) for p in self.tessera.devices], signature='o')}
                else:
                    details = {'device': dbus.ObjectPath(self.device)}
                self.progress(step, details)
                self.later(self.tessera.step_delay, self.run)
                return
            if step == 'pin-needed':
                if self.tessera.retries == 0:
                    self.fail('PinBlocked', 'the PIN is blocked')
                    return
                if self.up_front_pin is not None:
                    pin, self.up_front_pin = self.up_front_pin, None
                    if self._try_pin(pin):
                        continue
                    if self.ended:
                        return
                self.asking = True
                self.progress('pin-needed', self._prompt())
                return
            if step == 'completed':
                self._complete()
                return
            self.fail(step, f'mock: scripted {step}')
            return

    def _prompt(self):
        kind = self.tessera.devices[self.device]['kind']
        low, high = PIN_LENGTHS[kind]
        d = {'device': dbus.ObjectPath(self.device), 'kind': dbus.String(kind),
             'min_length': dbus.UInt32(low), 'max_length': dbus.UInt32(high),
             'last_try': dbus.Boolean(self.tessera.retries == 1),
             'retries': dbus.UInt32(self.tessera.retries)}
        if self.last_error:
            d['last_error'] = dbus.String(self.last_error)
        return d

    def _try_pin(self, pin):
        '''True: right, the step is done. False: wrong (or blocked: the request failed).'''
        state = self.tessera
        if pin == state.pin:
            state.retries = state.max_retries
            self.steps.pop(0)
            self.pin_used = True
            self.last_error = None
            return True
        state.retries = max(0, state.retries - 1)
        if state.retries == 0:
            self.fail('PinBlocked', 'the PIN is blocked')
            return False
        self.last_error = 'PinInvalid'
        return False

    def _answer(self, pin, last_try_ok, sender):
        self._check_owner(sender)
        if not self.asking:
            raise TesseraError('InvalidArgument', 'no secret is asked for')
        if self.tessera.retries == 1 and not last_try_ok:
            raise TesseraError('PinWouldBlock',
                               'PIN not tried: only 1 retry left, spending it could block the '
                               'card; unblock it with the PUK')
        self.asking = False
        if self._try_pin(str(pin)):
            self.later(0, self.run)
        elif not self.ended:
            self.asking = True
            self.later(0, lambda: self.progress('pin-needed', self._prompt()))

    def _complete(self):
        state = self.tessera
        kind = state.devices[self.device]['kind'] if self.device in state.devices else 'piv'
        if self.purpose == 'enrollment':
            enrollment = add_enrollment(state, self.user, kind)
            state.mock.EmitSignal(MAIN_IFACE, 'EnrollmentAdded', 'ss', [enrollment, self.user])
            self.complete(enrollment)
            return
        token = state.issue(self.user, kind, self.opts['audience'], self.pin_used, self.device)
        self.complete(token.text)

    @dbus.service.method(REQUEST_IFACE, in_signature='s', out_signature='',
                         sender_keyword='sender')
    def SubmitPin(self, pin, sender=None):
        self.tessera.record('SubmitPin', [self.path, pin])
        self._answer(pin, False, sender)

    @dbus.service.method(REQUEST_IFACE, in_signature='s', out_signature='',
                         sender_keyword='sender')
    def SubmitLastTryPin(self, pin, sender=None):
        self.tessera.record('SubmitLastTryPin', [self.path, pin])
        self._answer(pin, True, sender)

    @dbus.service.method(REQUEST_IFACE, in_signature='', out_signature='',
                         sender_keyword='sender')
    def Cancel(self, sender=None):
        self.tessera.record('Cancel', [self.path])
        self._check_owner(sender)
        if not self.ended:
            self.later(0, lambda: self.fail('Cancelled', 'the request was cancelled'))

    @dbus.service.method(dbus.PROPERTIES_IFACE, in_signature='ss', out_signature='v',
                         sender_keyword='sender')
    def Get(self, interface, name, sender=None):
        self._check_owner(sender)
        if interface != REQUEST_IFACE or name != 'State':
            raise dbus.exceptions.DBusException(
                f'no property {name}', name='org.freedesktop.DBus.Error.UnknownProperty')
        return dbus.String(self.state)

    @dbus.service.method(dbus.PROPERTIES_IFACE, in_signature='s', out_signature='a{sv}',
                         sender_keyword='sender')
    def GetAll(self, interface, sender=None):
        if sender != self.owner or interface != REQUEST_IFACE:
            return dbus.Dictionary({}, signature='sv')
        return dbus.Dictionary({'State': dbus.String(self.state)}, signature='sv')

    @dbus.service.method(dbus.PROPERTIES_IFACE, in_signature='ssv', out_signature='')
    def Set(self, _interface, name, _value):
        raise dbus.exceptions.DBusException(
            f'property {name} is read-only', name='org.freedesktop.DBus.Error.PropertyReadOnly')

    # Declared for Introspect only: they are sent unicast by _send, never through these.
    @dbus.service.signal(REQUEST_IFACE, signature='sa{sv}')
    def Progress(self, state, details):
        pass

    @dbus.service.signal(REQUEST_IFACE, signature='s')
    def Completed(self, result):
        pass

    @dbus.service.signal(REQUEST_IFACE, signature='ss')
    def Failed(self, error, message):
        pass


def add_enrollment(state, user, kind):
    enrollment = f'mock-{kind}-{len(state.enrollments) + 1}'
    state.enrollments.append({'id': enrollment, 'user': str(user), 'kind': str(kind),
                              'credential': '9a' if kind == 'piv' else b64url(16),
                              'created': int(time.time())})
    return enrollment


#
# org.freedesktop.DBus.Mock
#

@dbus.service.method(MOCK_IFACE, in_signature='sss', out_signature='o')
def AddDevice(self, kind, transport, name):
    '''A device is inserted; returns its object path.'''
    state = self.tessera
    if kind not in KINDS or transport not in TRANSPORTS:
        raise dbus.exceptions.DBusException(
            f'kind must be one of {KINDS}, transport one of {TRANSPORTS}',
            name='org.freedesktop.DBus.Error.InvalidArgs')
    reader = f'Mock Reader {state.readers}'
    state.readers += 1
    path = f'{DEVICES_PATH}/{escape_id(reader)}'
    props = dbus.Dictionary({'Kind': dbus.String(kind), 'Transport': dbus.String(transport),
                             'Name': dbus.String(name), 'Reader': dbus.String(reader)},
                            signature='sv')
    self.AddObject(path, DEVICE_IFACE, props, [])
    state.devices[path] = {'kind': str(kind), 'transport': str(transport), 'name': str(name),
                           'reader': reader, 'sid': b64url(16)}
    mockobject.get_object(ROOT_OBJ).EmitSignal(
        OBJECT_MANAGER_IFACE, 'InterfacesAdded', 'oa{sa{sv}}',
        [dbus.ObjectPath(path), dbus.Dictionary({DEVICE_IFACE: props}, signature='sa{sv}')])
    state.device_inserted()
    return dbus.ObjectPath(path)


@dbus.service.method(MOCK_IFACE, in_signature='o', out_signature='')
def RemoveDevice(self, path):
    '''The device is pulled: its tokens are revoked, a request using it fails.'''
    state = self.tessera
    path = str(path)
    if path not in state.devices:
        raise dbus.exceptions.DBusException(f'no device {path}',
                                            name='org.freedesktop.DBus.Mock.NameError')
    sid = state.devices.pop(path)['sid']
    self.RemoveObject(path)
    mockobject.get_object(ROOT_OBJ).EmitSignal(
        OBJECT_MANAGER_IFACE, 'InterfacesRemoved', 'oas',
        [dbus.ObjectPath(path), dbus.Array([DEVICE_IFACE], signature='s')])
    for token in list(state.tokens.values()):
        if token.claims['sid'] == sid:
            state.revoke(token, 'device-removed')
    for request in list(state.requests.values()):
        if request.device == path:
            request.fail('DeviceRemoved', 'the device was removed')


@dbus.service.method(MOCK_IFACE, in_signature='ss', out_signature='s')
def AddEnrollment(self, user, kind):
    '''`user` is enrolled with a device of `kind`; returns the enrollment id.'''
    if kind not in KINDS:
        raise dbus.exceptions.DBusException(f'kind must be one of {KINDS}',
                                            name='org.freedesktop.DBus.Error.InvalidArgs')
    return add_enrollment(self.tessera, user, kind)


@dbus.service.method(MOCK_IFACE, in_signature='su', out_signature='')
def SetPin(self, pin, retries):
    '''The PIN of every mock device and its tries left.'''
    state = self.tessera
    state.pin = str(pin)
    state.retries = int(retries)
    state.max_retries = max(3, state.retries)


@dbus.service.method(MOCK_IFACE, in_signature='sas', out_signature='')
def SetScript(self, user, steps):
    '''The steps of every later request of `user` ("" = any).'''
    for step in steps:
        if step not in SHOWN_STATES and step not in ('pin-needed', 'completed') and \
                not ERROR_NAME.match(step):
            raise dbus.exceptions.DBusException(
                f'unknown step {step!r}', name='org.freedesktop.DBus.Error.InvalidArgs')
    self.tessera.scripts[str(user)] = [str(s) for s in steps]


@dbus.service.method(MOCK_IFACE, in_signature='ssb', out_signature='')
def SetReuse(self, user, session, ok):
    '''ReuseSession for `user` answers as told (see the module's documentation).'''
    self.tessera.reuse[str(user)] = (str(session), bool(ok))


@dbus.service.method(MOCK_IFACE, in_signature='sss', out_signature='')
def FailNext(self, method, error, message):
    '''The next call of Manager method `method` fails with `error`.'''
    self.tessera.fail_next[str(method)] = (str(error), str(message))


@dbus.service.method(MOCK_IFACE, in_signature='sa{sv}', out_signature='s')
def IssueToken(self, user, options):
    '''A token as if `user` had authenticated with a device.'''
    o = {str(k): v for k, v in options.items()}
    return self.tessera.issue(
        str(user), str(o.get('kind', 'piv')), str(o.get('audience', 'tessera')), True,
        login_session=str(o.get('login_session', '')), seat=str(o.get('seat', '')),
        auth_time=int(o['auth_time']) if 'auth_time' in o else None).text


@dbus.service.method(MOCK_IFACE, in_signature='', out_signature='ao')
def ActiveRequests(self):
    '''The live request objects.'''
    return dbus.Array([dbus.ObjectPath(p) for p in self.tessera.requests], signature='o')
