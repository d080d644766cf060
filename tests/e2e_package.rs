//! The installable service (issue 9 §5): `systemd/tesserad.service` passes `systemd-analyze verify`
//! (and stays hardened), `make install` installs exactly the documented files with their modes, and
//! the Debian package from `make deb` installs into this machine with `dpkg -i`, serves a login
//! through the INSTALLED `pam_tessera.so` to the INSTALLED daemon on a system-type bus that reads the
//! INSTALLED bus policy, and leaves the machine as it found it after `dpkg -r` and `dpkg -P`.
//!
//! The package test changes the machine (programs in /usr, the group `tessera`, /var/lib/tessera; a
//! PAM service in /etc/pam.d, see tests/common/pam.rs). Its guard undoes that when the test ends,
//! failed or not; a killed test leaves a record in /run/tessera-e2e (`package`), from which
//! `scripts/test-cleanup.sh package` purges the package, and which `scripts/check-clean.sh` reports
//! while it is there.

// A test that cannot set up its world must stop with a clear message: panicking is its error
// handling.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::pam::{pamtester, PamService};
use common::stack::{Stack, BUS_NAME, DEVICE_PATH, PIN, WAIT};
use common::system_stack::{stock_system_config, Activation};
use common::{run, stderr, stdout, wait_until, Child, TestDir};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::Signal;

/// The workspace root, where the Makefile is.
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The Debian package's name ([package.metadata.deb] in daemon/Cargo.toml).
const PACKAGE: &str = "tessera";
/// Serialises the tests that run dpkg on this machine (dpkg itself fails, not waits, when another
/// dpkg holds its lock).
const DPKG_LOCK: &str = "/tmp/tessera-e2e-dpkg.lock";
/// Written before `dpkg -i`, removed once the package is purged: a killed test leaves it for
/// `scripts/test-cleanup.sh package`.
const PACKAGE_RECORD: &str = "/run/tessera-e2e/package";
/// The state directory of the installed daemon, which `dpkg -P` removes.
const STATE_DIR: &str = "/var/lib/tessera";
const LONG: Duration = Duration::from_secs(300);
/// Set for the child process of [`a_killed_package_test_is_purged_by_the_cleanup_script`].
const HELPER_ENV: &str = "TESSERA_E2E_PACKAGE_HELPER";
/// The two package tests install the same package; one at a time (the dpkg lock alone would let
/// the other in while a killed helper's package waits for the cleanup).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What `make install` (PREFIX=/usr) and the package install, with modes: the documented list (README
/// "Installing", the Makefile's INSTALL_FILES, daemon/Cargo.toml's assets).
fn documented_files() -> Vec<(String, u32)> {
    let pam_dir = format!("/usr/lib/{}/security", multiarch());
    [
        ("/usr/sbin/tesserad", 0o755),
        ("/usr/bin/tessera", 0o755),
        (&format!("{pam_dir}/pam_tessera.so"), 0o644),
        ("/usr/lib/systemd/system/tesserad.service", 0o644),
        (
            "/usr/share/dbus-1/system.d/org.tessera.Tessera1.conf",
            0o644,
        ),
        (
            "/usr/share/dbus-1/system-services/org.tessera.Tessera1.service",
            0o644,
        ),
        (
            "/usr/share/polkit-1/actions/org.tessera.Tessera1.policy",
            0o644,
        ),
        ("/usr/lib/udev/rules.d/70-tessera.rules", 0o644),
        ("/usr/share/pam-configs/tessera", 0o644),
        ("/usr/share/pam-configs/tessera-session", 0o644),
        ("/usr/share/doc/tessera/README.md", 0o644),
        ("/usr/share/doc/tessera/examples/tessera.toml", 0o644),
        ("/usr/share/doc/tessera/examples/gdm-tessera", 0o644),
    ]
    .into_iter()
    .map(|(p, m)| (p.to_owned(), m))
    .collect()
}

#[test]
fn unit_passes_systemd_analyze_verify_and_stays_hardened() {
    let dir = TestDir::new();
    // verify checks that ExecStart's program exists and is executable. /usr/sbin/tesserad is not
    // there before an install, so this checks a copy of the unit whose ExecStart names the built
    // binary: that one line differs, nothing else. The package test verifies the installed unit at
    // its installed path as well.
    let source = fs::read_to_string(Path::new(ROOT).join("systemd/tesserad.service")).unwrap();
    let exec = "ExecStart=/usr/sbin/tesserad ";
    assert_eq!(source.matches(exec).count(), 1, "one ExecStart line");
    let built = common::bin("tesserad");
    let unit = dir.path().join("tesserad.service");
    fs::write(
        &unit,
        source.replace(exec, &format!("ExecStart={} ", built.display())),
    )
    .unwrap();
    analyze_verify(&unit);

    // The exposure score systemd-analyze gives the sandbox (0 best, 10 worst; 1.4 when written):
    // a setting dropped or loosened makes this fail.
    let out = run(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
            .arg(&unit),
        b"",
        WAIT,
    );
    let report = stdout(&out);
    assert!(
        out.status.success(),
        "exposure above 2.0:\n{report}{}",
        stderr(&out)
    );
    let score = report
        .lines()
        .find_map(|l| l.strip_prefix("→ Overall exposure level for tesserad.service: "))
        .unwrap_or_else(|| panic!("no overall exposure in:\n{report}"));
    eprintln!("systemd-analyze security: {score}");
    for needle in [
        "✓ CapabilityBoundingSet=~CAP_SYS_ADMIN",
        "✓ ProtectSystem=",
        "✓ ProtectHome=",
        "✓ RestrictAddressFamilies=~AF_(INET|INET6)",
        "✓ PrivateTmp=",
        "✓ SystemCallFilter=~@privileged",
    ] {
        assert!(report.contains(needle), "{needle} missing:\n{report}");
    }
}

#[test]
fn make_install_installs_the_documented_files_and_uninstall_removes_them() {
    let dir = TestDir::new();
    let dest = dir.path().join("root");
    let out = make(&[
        "install",
        &format!("DESTDIR={}", dest.display()),
        &format!("BUILD_DIR={}", build_dir().display()),
    ]);
    assert!(out.status.success(), "make install: {}", stderr(&out));

    let expected: BTreeMap<String, u32> = documented_files().into_iter().collect();
    let (files, dirs) = tree(&dest);
    assert_eq!(files, expected, "make install's files and modes");
    // Every directory on the way is created 0755, none other than those.
    let mut wanted_dirs = BTreeMap::new();
    for path in expected.keys() {
        let mut p = Path::new(path).parent();
        while let Some(d) = p.filter(|d| *d != Path::new("/")) {
            wanted_dirs.insert(d.display().to_string(), 0o755);
            p = d.parent();
        }
    }
    assert_eq!(dirs, wanted_dirs, "make install's directories");
    // The programs are the built ones, the unit names where they went.
    assert_eq!(
        fs::read(dest.join("usr/sbin/tesserad")).unwrap(),
        fs::read(common::bin("tesserad")).unwrap()
    );
    let unit = fs::read_to_string(dest.join("usr/lib/systemd/system/tesserad.service")).unwrap();
    assert!(unit.contains("\nExecStart=/usr/sbin/tesserad --bus system\n"));

    let out = make(&["uninstall", &format!("DESTDIR={}", dest.display())]);
    assert!(out.status.success(), "make uninstall: {}", stderr(&out));
    let (files, dirs) = tree(&dest);
    assert!(files.is_empty(), "left by make uninstall: {files:?}");
    assert!(
        !dirs.contains_key("/usr/share/doc/tessera"),
        "uninstall leaves its own empty doc directory: {dirs:?}"
    );

    // Another PREFIX moves the programs and the documentation, and the unit follows them; what the
    // system's daemons read stays where they read it.
    let local = dir.path().join("local");
    let out = make(&[
        "install",
        &format!("DESTDIR={}", local.display()),
        "PREFIX=/usr/local",
        &format!("BUILD_DIR={}", build_dir().display()),
    ]);
    assert!(out.status.success(), "make install: {}", stderr(&out));
    let (files, _) = tree(&local);
    for path in [
        "/usr/local/sbin/tesserad",
        "/usr/local/bin/tessera",
        "/usr/local/share/doc/tessera/examples/gdm-tessera",
        "/usr/lib/systemd/system/tesserad.service",
        "/usr/share/dbus-1/system.d/org.tessera.Tessera1.conf",
    ] {
        assert!(files.contains_key(path), "{path} not in {files:?}");
    }
    let unit = fs::read_to_string(local.join("usr/lib/systemd/system/tesserad.service")).unwrap();
    assert!(unit.contains("\nExecStart=/usr/local/sbin/tesserad --bus system\n"));
    assert!(unit.contains("\nDocumentation=file:/usr/local/share/doc/tessera/README.md\n"));
}

#[test]
fn pam_auth_update_profiles_put_the_module_before_the_password_and_after_pam_systemd() {
    // Debian's pam-auth-update, run on copies: its three directories rewritten to temporary ones
    // (the machine's profiles plus ours, its common-* files and records) and debconf pointed at a
    // private database, so nothing of the machine is written.
    let dir = TestDir::new();
    let root = dir.path();
    let (input, output, saved) = (root.join("in"), root.join("out"), root.join("save"));
    for d in [&input, &output, &saved] {
        fs::create_dir(d).unwrap();
    }
    let copy_dir = |from: &Path, to: &Path, only: &dyn Fn(&str) -> bool| {
        for entry in fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if path.is_file() && only(&name) {
                fs::copy(&path, to.join(&name)).unwrap();
            }
        }
    };
    copy_dir(Path::new("/usr/share/pam-configs"), &input, &|_| true);
    copy_dir(&Path::new(ROOT).join("pam-configs"), &input, &|_| true);
    copy_dir(Path::new("/etc/pam.d"), &output, &|n| {
        n.starts_with("common-")
    });
    copy_dir(Path::new("/var/lib/pam"), &saved, &|_| true);
    let tool =
        fs::read_to_string("/usr/sbin/pam-auth-update").expect("pam-auth-update (libpam-runtime)");
    let tool = tool
        .replace(
            "'/usr/share/pam-configs'",
            &format!("'{}'", input.display()),
        )
        .replace("'/etc/pam.d'", &format!("'{}'", output.display()))
        .replace("'/var/lib/pam'", &format!("'{}'", saved.display()));
    let script = root.join("pam-auth-update");
    fs::write(&script, tool).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let debconf = root.join("debconf.conf");
    fs::write(
        &debconf,
        format!(
            "Config: configdb\nTemplates: templatedb\n\n\
             Name: configdb\nDriver: File\nFilename: {0}/config.dat\n\n\
             Name: templatedb\nDriver: File\nMode: 644\nFilename: {0}/templates.dat\n",
            root.display()
        ),
    )
    .unwrap();
    let update = |args: &[&str]| {
        let out = run(
            Command::new(&script)
                .args(args)
                .env("DEBCONF_SYSTEMRC", &debconf)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            b"",
            WAIT,
        );
        assert!(out.status.success(), "pam-auth-update {args:?}: {out:?}");
    };
    let stack = |name: &str| -> Vec<String> {
        fs::read_to_string(output.join(name))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    let position = |lines: &[String], needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} not in {lines:#?}"))
    };

    // Off by default: registering the profiles (what postinst does) changes no stack.
    let before: Vec<_> = ["common-auth", "common-session"].map(stack).into();
    update(&["--package"]);
    assert_eq!(
        Vec::from(["common-auth", "common-session"].map(stack)),
        before
    );
    assert!(!before.concat().iter().any(|l| l.contains("pam_tessera")));

    update(&["--enable", "tessera", "tessera-session"]);
    let auth = stack("common-auth");
    let reuse = position(&auth, "pam_tessera.so reuse max_age=15m");
    let device = position(&auth, "pam_tessera.so timeout=20");
    let unix = position(&auth, "pam_unix.so");
    assert!(reuse < device && device < unix, "{auth:#?}");
    // Each one, on success, jumps over the rest of the primary block to pam_permit.
    let permit = position(&auth, "required pam_permit.so");
    for (at, line) in [(reuse, &auth[reuse]), (device, &auth[device])] {
        assert!(
            line.contains(&format!("[success={} default=ignore]", permit - at - 1)),
            "{line} does not jump to pam_permit:\n{auth:#?}"
        );
    }
    let session = stack("common-session");
    assert!(
        position(&session, "pam_systemd.so") < position(&session, "optional pam_tessera.so"),
        "the session must be registered before the token is bound to it:\n{session:#?}"
    );
    assert!(
        !stack("common-session-noninteractive")
            .iter()
            .any(|l| l.contains("pam_tessera")),
        "cron and the like have no login session to bind"
    );

    // What prerm does on removal: the module leaves every stack.
    update(&["--package", "--remove", "tessera", "tessera-session"]);
    assert_eq!(
        Vec::from(["common-auth", "common-session"].map(stack)),
        before
    );
}

#[test]
fn deb_installs_serves_a_pam_login_and_purges_clean() {
    common::test_user("tessera-alice");
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _dpkg = lock(DPKG_LOCK);
    let dir = TestDir::new();
    let deb = build_deb(dir.path());

    // Its files are the documented ones (and the copyright cargo-deb writes).
    let mut packaged = deb_contents(&deb);
    assert_eq!(
        packaged.remove("/usr/share/doc/tessera/copyright"),
        Some(0o644)
    );
    let expected: BTreeMap<String, u32> = documented_files().into_iter().collect();
    assert_eq!(packaged, expected, "the package's files and modes");

    assert_not_installed();
    let before = MachineState::take();

    // The pcsc lock before the package goes in: the end-to-end tests that run a daemon hold it,
    // and none of them should meet an installed Tessera (its activation file in the system
    // service directory, which their buses read) while this test runs.
    let mut stack = Stack::new();

    // From here on the machine changes: the guard puts it back, the record covers a killed test.
    let mut installed = Installed::begin();
    dpkg(&["-i", deb.to_str().unwrap()]);
    assert!(dpkg_installed());
    for (path, mode) in &expected {
        let meta = fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(meta.permissions().mode() & 0o7777, *mode, "{path}");
    }
    assert!(group_exists("tessera"), "postinst made no group tessera");
    // The installed unit, with the installed program.
    analyze_verify(Path::new("/usr/lib/systemd/system/tesserad.service"));

    // A system-type bus as a real system runs it: Debian's system.conf, which includes
    // /usr/share/dbus-1/system.d (the installed policy), and the installed activation file.
    let bus = SystemBus::start(dir.path());
    let activatable = bus.call(&["org.freedesktop.DBus.ListActivatableNames"]);
    assert!(
        activatable.contains(BUS_NAME),
        "the bus does not see the installed activation file: {activatable}"
    );

    // A card in reader 0, the installed daemon with its installed defaults (state in
    // /var/lib/tessera), as root: the installed policy lets root own the name.
    let card = stack.path("card.json");
    stack.start_sim(&card, &[]);
    let config = dir.path().join("tessera.toml");
    fs::write(&config, "").unwrap();
    // Without any capability and with no_new_privs, as the unit runs it (CapabilityBoundingSet=
    // empty, NoNewPrivileges=yes): root with an empty bounding set gains none at exec. No systemd
    // runs on this machine, so the rest of the sandbox is verified (above), not exercised.
    let mut daemon = Child::spawn(
        "installed-tesserad",
        Command::new("setpriv")
            .args([
                "--no-new-privs",
                "--bounding-set=-all",
                "--inh-caps=-all",
                "--ambient-caps=-all",
                "/usr/sbin/tesserad",
                "--bus",
                &bus.address,
                "--config",
            ])
            .arg(&config)
            .env("TESSERA_LOG", "debug"),
        dir.path(),
    );
    let up = wait_until(WAIT, || {
        daemon.try_wait().is_some() || bus.has_owner(BUS_NAME)
    });
    assert!(
        up && daemon.try_wait().is_none(),
        "installed tesserad did not take {BUS_NAME}:\n{}",
        daemon.stderr_text()
    );
    let proc_status = fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    for line in [
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "NoNewPrivs:\t1",
    ] {
        assert!(
            proc_status.contains(line),
            "{line:?} not in:\n{proc_status}"
        );
    }
    assert!(
        fs::read_link(format!("/proc/{}/exe", daemon.pid())).unwrap()
            == Path::new("/usr/sbin/tesserad"),
        "the daemon is not the installed program"
    );
    installed.daemon = Some(daemon);
    assert!(Path::new(STATE_DIR).join("tessera.db").is_file());
    let mut status = String::new();
    assert!(
        wait_until(WAIT, || {
            status = stdout(&installed_cli(&bus, &["status"], ""));
            status.contains(DEVICE_PATH)
        }),
        "the installed daemon does not list the card: {status}"
    );
    let out = installed_cli(
        &bus,
        &["enroll", "--user", "tessera-alice", "--pin-stdin"],
        &format!("{PIN}\n"),
    );
    assert!(
        out.status.success(),
        "enroll: {}\n{}",
        stderr(&out),
        installed.daemon_log()
    );

    // pamtester through the installed module: named without a path, PAM loads it from the
    // system's module directory, where only the package put it.
    let service = PamService::new("auth required pam_tessera.so\naccount required pam_permit.so\n");
    let login = |pin: &str| {
        pamtester(
            &bus.address,
            &service,
            "tessera-alice",
            &["authenticate"],
            &[],
            &format!("{pin}\n"),
            Duration::from_secs(90),
        )
    };
    let ok = login(PIN);
    assert!(
        ok.succeeded() && ok.text().contains("successfully authenticated"),
        "pamtester with the right PIN:\n{}\n--- tesserad ---\n{}",
        ok.text(),
        installed.daemon_log()
    );
    let wrong = login("000000");
    assert!(
        !wrong.succeeded(),
        "pamtester with a wrong PIN succeeded:\n{}",
        wrong.text()
    );
    assert_eq!(token_users(&service.audience()), ["tessera-alice"]);
    drop(service);

    // The GDM example's authentication, as the greeter starts it: no user name yet, the module
    // takes the one account the card is enrolled for (and pam_succeed_if then sees it is not root).
    let example = fs::read_to_string("/usr/share/doc/tessera/examples/gdm-tessera").unwrap();
    let gdm = PamService::new(&example);
    let greeter = pamtester(
        &bus.address,
        &gdm,
        "",
        &["authenticate"],
        &[],
        &format!("{PIN}\n"),
        Duration::from_secs(90),
    );
    assert!(
        greeter.succeeded(),
        "the GDM example without a user name:\n{}\n--- tesserad ---\n{}",
        greeter.text(),
        installed.daemon_log()
    );
    assert_eq!(
        token_users(&gdm.audience()),
        ["tessera-alice"],
        "the greeter's token is not the card's account's"
    );
    drop(gdm);

    // Removal: the daemon stops first (on a systemd machine prerm stops the unit).
    installed.stop_daemon();
    dpkg(&["-r", PACKAGE]);
    assert_eq!(dpkg_status().as_deref(), Some("deinstall ok config-files"));
    for path in expected.keys() {
        assert!(
            !Path::new(path).exists(),
            "{path} still there after dpkg -r"
        );
    }
    assert!(
        Path::new(STATE_DIR).is_dir(),
        "dpkg -r keeps the state (enrollments, keys) for a reinstall"
    );
    dpkg(&["-P", PACKAGE]);
    assert!(
        !dpkg_installed() && dpkg_status().is_none(),
        "still known to dpkg"
    );
    assert!(!Path::new(STATE_DIR).exists(), "dpkg -P leaves {STATE_DIR}");
    installed.done();
    let after = MachineState::take();
    before.assert_same(&after);
}

#[test]
fn a_killed_package_test_is_purged_by_the_cleanup_script() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Held throughout, as the package test does (see there); the helper does not take it.
    let _pcsc = common::pcsc_lock();
    assert_not_installed();
    let before = MachineState::take();

    // A package test that installs the package and is then killed: no Drop runs.
    let logs = TestDir::new();
    let mut helper = Child::spawn(
        "helper",
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "helper_installs_the_package_and_hangs",
                "--ignored",
                "--nocapture",
            ])
            .env(HELPER_ENV, "1"),
        logs.path(),
    );
    let line = helper.wait_for_line("installed", LONG);
    let helper_dir = PathBuf::from(line.trim_start_matches("installed ").trim());
    assert!(helper_dir.is_dir(), "{line}");
    helper.signal(Signal::SIGKILL);
    helper.wait_exit(WAIT).expect("killed");
    assert!(
        dpkg_installed(),
        "the killed test's package should be there"
    );
    assert!(Path::new(PACKAGE_RECORD).is_file(), "and recorded");

    let out = run(
        Command::new(Path::new(ROOT).join("scripts/test-cleanup.sh")).args(["package", "files"]),
        b"",
        Duration::from_secs(960),
    );
    assert!(out.status.success(), "test-cleanup.sh: {out:?}");
    assert!(
        dpkg_status().is_none(),
        "still known to dpkg after the cleanup"
    );
    assert!(!Path::new(PACKAGE_RECORD).exists());
    assert!(!helper_dir.exists(), "{} left behind", helper_dir.display());
    before.assert_same(&MachineState::take());
}

/// The child of [`a_killed_package_test_is_purged_by_the_cleanup_script`]; does nothing unless run
/// by it.
#[test]
#[ignore = "run by a_killed_package_test_is_purged_by_the_cleanup_script"]
fn helper_installs_the_package_and_hangs() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let _dpkg = lock(DPKG_LOCK);
    let dir = TestDir::new();
    let deb = build_deb(dir.path());
    let _installed = Installed::begin();
    dpkg(&["-i", deb.to_str().unwrap()]);
    println!("installed {}", dir.path().display());
    std::thread::sleep(Duration::from_secs(600));
}

/// `make deb` from the debug build (a release build would cost minutes), into `dir`; the package.
fn build_deb(dir: &Path) -> PathBuf {
    let out = make(&[
        "deb",
        &format!("DEB_BINARIES={}", build_dir().display()),
        &format!("DEB_OUT={}", dir.display()),
    ]);
    assert!(out.status.success(), "make deb: {}", stderr(&out));
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("make deb wrote no .deb")
}

/// The machine has none of the package yet: a test would overwrite someone's files, and could not
/// tell afterwards whether it left the machine as it was.
fn assert_not_installed() {
    assert!(
        dpkg_status().is_none(),
        "package {PACKAGE} is known to dpkg on this machine already"
    );
    let files = documented_files();
    for path in files.iter().map(|(p, _)| p.as_str()).chain([STATE_DIR]) {
        assert!(
            !Path::new(path).exists(),
            "{path} exists before the package is installed"
        );
    }
}

/// The owners of the tokens the installed daemon issued for `audience`, read from its database.
fn token_users(audience: &str) -> Vec<String> {
    let db = rusqlite::Connection::open_with_flags(
        Path::new(STATE_DIR).join("tessera.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the installed daemon's database");
    let mut query = db
        .prepare("SELECT user FROM tokens WHERE aud = ?1 ORDER BY iat")
        .unwrap();
    let users = query
        .query_map([audience], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    users
}

/// `systemd-analyze verify UNIT`, which must pass without a word: it only warns (and exits 0) about
/// an unknown key or section, so silence is the check.
fn analyze_verify(unit: &Path) {
    let out = run(
        Command::new("systemd-analyze")
            .args(["verify", "--no-pager"])
            .arg(unit),
        b"",
        WAIT,
    );
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze verify {}: {:?}\n{}{}",
        unit.display(),
        out.status,
        stdout(&out),
        stderr(&out)
    );
}

/// `make ARGS` in the workspace root.
fn make(args: &[&str]) -> Output {
    run(
        Command::new("make")
            .args(["--no-print-directory", "-C", ROOT])
            .args(args),
        b"",
        LONG,
    )
}

/// The directory holding the built tesserad, tessera and libpam_tessera.so (target/debug).
fn build_dir() -> PathBuf {
    let tesserad = common::bin("tesserad");
    let dir = tesserad.parent().unwrap().to_owned();
    assert!(
        dir.join("libpam_tessera.so").is_file(),
        "{}/libpam_tessera.so missing: `cargo build -p pam-tessera` first",
        dir.display()
    );
    dir
}

/// Debian's multiarch triplet of this machine (x86_64-linux-gnu), as the Makefile finds it.
fn multiarch() -> String {
    let out = run(
        Command::new("dpkg-architecture").arg("-qDEB_HOST_MULTIARCH"),
        b"",
        WAIT,
    );
    assert!(out.status.success(), "dpkg-architecture: {}", stderr(&out));
    stdout(&out).trim().to_owned()
}

/// Files and directories under `root` as absolute paths below it, with their permission bits.
fn tree(root: &Path) -> (BTreeMap<String, u32>, BTreeMap<String, u32>) {
    let mut files = BTreeMap::new();
    let mut dirs = BTreeMap::new();
    let mut todo = vec![root.to_owned()];
    while let Some(dir) = todo.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let name = format!("/{}", path.strip_prefix(root).unwrap().display());
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_dir() {
                dirs.insert(name, mode);
                todo.push(path);
            } else {
                assert!(meta.is_file(), "{name}: neither file nor directory");
                files.insert(name, mode);
            }
        }
    }
    (files, dirs)
}

/// The regular files of a .deb with their modes (`dpkg-deb -c`).
fn deb_contents(deb: &Path) -> BTreeMap<String, u32> {
    let out = run(Command::new("dpkg-deb").arg("-c").arg(deb), b"", WAIT);
    assert!(out.status.success(), "dpkg-deb -c: {}", stderr(&out));
    stdout(&out)
        .lines()
        .filter(|l| l.starts_with('-'))
        .map(|l| {
            let perms = &l[1..10];
            let path = l.split_whitespace().last().unwrap();
            let mode = perms
                .bytes()
                .fold(0u32, |m, b| (m << 1) | u32::from(b != b'-'));
            (path.trim_start_matches('.').to_owned(), mode)
        })
        .collect()
}

/// `dpkg ARGS`, which must succeed. Retried while another dpkg or apt holds dpkg's own lock
/// (the lock of this file serialises only the tests).
fn dpkg(args: &[&str]) {
    let deadline = Instant::now() + LONG;
    loop {
        let out = run(
            Command::new("dpkg")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(args),
            b"",
            LONG,
        );
        if out.status.success() {
            return;
        }
        let err = stderr(&out);
        if err.contains("lock") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(2));
            continue;
        }
        panic!("dpkg {args:?}: {:?}\n{}{err}", out.status, stdout(&out));
    }
}

/// dpkg's status of the package ("install ok installed", "deinstall ok config-files"), `None` when
/// dpkg does not know it.
fn dpkg_status() -> Option<String> {
    let out = run(
        Command::new("dpkg-query").args(["-W", "-f=${Status}", PACKAGE]),
        b"",
        WAIT,
    );
    let status = stdout(&out).trim().to_owned();
    (out.status.success() && !status.is_empty() && !status.ends_with("not-installed"))
        .then_some(status)
}

fn dpkg_installed() -> bool {
    dpkg_status().is_some_and(|s| s == "install ok installed")
}

fn group_exists(name: &str) -> bool {
    nix::unistd::Group::from_name(name).unwrap().is_some()
}

/// `/usr/bin/tessera --bus <bus> ARGS` (the installed CLI) with `stdin`.
fn installed_cli(bus: &SystemBus, args: &[&str], stdin: &str) -> Output {
    run(
        Command::new("/usr/bin/tessera")
            .args(["--bus", &bus.address])
            .args(args),
        stdin.as_bytes(),
        common::stack::CLI_TIMEOUT,
    )
}

/// An exclusive flock on `path`, waited for.
fn lock(path: &str) -> Flock<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {path}: {e}"));
    Flock::lock(file, FlockArg::LockExclusive).unwrap_or_else(|(_, e)| panic!("flock {path}: {e}"))
}

/// What the package may touch outside its own files, compared before and after: the PAM stacks
/// pam-auth-update writes and its record, systemd's enablement links and deb-systemd-helper's
/// state, the groups, the state directory.
#[derive(Debug, PartialEq, Eq)]
struct MachineState {
    files: BTreeMap<String, Vec<u8>>,
    group_tessera: bool,
}

impl MachineState {
    fn take() -> MachineState {
        let mut files = BTreeMap::new();
        for dir in [
            "/var/lib/pam",
            "/etc/systemd/system",
            "/var/lib/systemd/deb-systemd-helper-enabled",
            "/var/lib/systemd/deb-systemd-helper-masked",
            "/etc/tessera",
            STATE_DIR,
        ] {
            snapshot(Path::new(dir), &mut files);
        }
        for name in [
            "common-auth",
            "common-account",
            "common-session",
            "common-session-noninteractive",
            "common-password",
        ] {
            snapshot(&Path::new("/etc/pam.d").join(name), &mut files);
        }
        MachineState {
            files,
            group_tessera: group_exists("tessera"),
        }
    }

    fn assert_same(&self, after: &MachineState) {
        let changed: Vec<&String> = self
            .files
            .keys()
            .chain(after.files.keys())
            .filter(|k| self.files.get(*k) != after.files.get(*k))
            .collect();
        assert!(changed.is_empty(), "changed by the package: {changed:?}");
        assert_eq!(
            self.group_tessera, after.group_tessera,
            "group tessera before and after"
        );
    }
}

/// Every file and symbolic link below `path` (or `path` itself) with its content or target.
fn snapshot(path: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    let key = path.display().to_string();
    if meta.is_symlink() {
        let target = fs::read_link(path).unwrap();
        out.insert(key, target.as_os_str().as_encoded_bytes().to_vec());
    } else if meta.is_dir() {
        out.insert(key, b"<dir>".to_vec());
        for entry in fs::read_dir(path).unwrap() {
            snapshot(&entry.unwrap().path(), out);
        }
    } else {
        out.insert(key, fs::read(path).unwrap_or_default());
    }
}

/// The installed package while the test runs: purges it when dropped, so a failed test leaves
/// nothing either; [`PACKAGE_RECORD`] says so to the cleanup
/// script in case the test is killed before.
struct Installed {
    daemon: Option<Child>,
    finished: bool,
}

impl Installed {
    fn begin() -> Installed {
        fs::create_dir_all(common::restore::STATE_DIR).unwrap();
        fs::write(PACKAGE_RECORD, PACKAGE).unwrap();
        Installed {
            daemon: None,
            finished: false,
        }
    }

    fn daemon_log(&self) -> String {
        self.daemon
            .as_ref()
            .map(Child::stderr_text)
            .unwrap_or_default()
    }

    /// SIGTERM; the installed daemon must exit 0.
    fn stop_daemon(&mut self) {
        let mut daemon = self.daemon.take().expect("daemon running");
        daemon.signal(Signal::SIGTERM);
        let status = daemon.wait_exit(WAIT);
        assert!(
            status.is_some_and(|s| s.success()),
            "installed tesserad exit: {status:?}\n{}",
            daemon.stderr_text()
        );
    }

    /// The package is purged: nothing left to undo.
    fn done(&mut self) {
        self.finished = true;
        let _ = fs::remove_file(PACKAGE_RECORD);
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Some(mut daemon) = self.daemon.take() {
            daemon.kill();
        }
        // Not `dpkg()`: no panic in a drop that may run during one.
        let purged = Command::new("dpkg")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["-P", PACKAGE])
            .status()
            .is_ok_and(|s| s.success());
        if purged && !dpkg_installed() {
            let _ = fs::remove_file(PACKAGE_RECORD);
        } else {
            eprintln!("could not purge {PACKAGE}: run scripts/test-cleanup.sh package as root");
        }
    }
}

/// A private dbus-daemon with Debian's system-bus configuration: its policy and its includes (so the
/// installed /usr/share/dbus-1/system.d/org.tessera.Tessera1.conf decides who may own and call
/// Tessera), with the installed activation file; only the socket, the pid file, syslog, the user
/// switch and activation differ (a test bus must start nothing and run as the test).
struct SystemBus {
    // Field order is drop order: the daemon before its directory.
    _child: Child,
    address: String,
}

impl SystemBus {
    fn start(dir: &Path) -> SystemBus {
        let socket = dir.join("system_bus_socket");
        let services = dir.join("system-services");
        fs::create_dir(&services).unwrap();
        let activation = format!("{BUS_NAME}.service");
        std::os::unix::fs::symlink(
            Path::new("/usr/share/dbus-1/system-services").join(&activation),
            services.join(&activation),
        )
        .unwrap();
        // The installed policy files (the package's among them), and as activatable services
        // only Tessera's installed file (a symbolic link to it). The others, logind's among
        // them, would be started for real or fail to start, and a name that fails to start
        // answers differently from one that is not there.
        let installed = dir.join("installed.conf");
        fs::write(
            &installed,
            format!(
                "<busconfig>\n  <servicedir>{}</servicedir>\n  \
                 <includedir>/usr/share/dbus-1/system.d</includedir>\n</busconfig>\n",
                services.display()
            ),
        )
        .unwrap();
        let conf = stock_system_config(&socket, &[&installed], Activation::None);
        let path = dir.join("system.conf");
        fs::write(&path, conf).unwrap();
        let mut child = Child::spawn(
            "system-dbus-daemon",
            Command::new("dbus-daemon")
                .arg(format!("--config-file={}", path.display()))
                .args(["--nofork", "--print-address"]),
            dir,
        );
        let address = child
            .wait_for_line("unix:", Duration::from_secs(10))
            .trim()
            .to_owned();
        SystemBus {
            _child: child,
            address,
        }
    }

    /// `dbus-send --print-reply` of an org.freedesktop.DBus method; its output.
    fn call(&self, method_and_args: &[&str]) -> String {
        let out = run(
            Command::new("dbus-send")
                .arg(format!("--bus={}", self.address))
                .args([
                    "--print-reply",
                    "--dest=org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                ])
                .args(method_and_args),
            b"",
            Duration::from_secs(10),
        );
        assert!(
            out.status.success(),
            "dbus-send {method_and_args:?}: {}",
            stderr(&out)
        );
        stdout(&out)
    }

    fn has_owner(&self, name: &str) -> bool {
        self.call(&[
            "org.freedesktop.DBus.NameHasOwner",
            &format!("string:{name}"),
        ])
        .contains("boolean true")
    }
}
