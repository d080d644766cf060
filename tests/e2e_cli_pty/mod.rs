//! A pseudo-terminal for the CLI tests: runs a command with a real controlling terminal, types
//! into it and returns what the terminal showed.

#![allow(dead_code)]

use std::process::Command;
use std::time::Duration;

use super::common::{bin, run, stdout};

/// Drives one command in a pseudo-terminal. argv[1] is a JSON plan: the command line and steps
/// `["expect", text]` (wait up to 20 s for `text` in the output so far), `["send", text]` (type it),
/// `["interrupt"]` (type Ctrl-C). Prints JSON: the whole transcript and the exit code (or -signal).
pub const PTY_DRIVER: &str = r#"
import json, os, pty, select, sys, time
plan = json.loads(sys.argv[1])
pid, fd = pty.fork()
if pid == 0:
    os.execve(plan["argv"][0], plan["argv"], dict(os.environ, **plan.get("env", {})))
out = b""
def pump(deadline):
    global out
    while True:
        left = deadline - time.time()
        if left <= 0:
            return False
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            return False
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            return True
        if not chunk:
            return True
        out += chunk
        return None
failed = None
for step in plan["steps"]:
    if step[0] == "expect":
        deadline = time.time() + 20
        while step[1].encode() not in out:
            if pump(deadline) is not None:
                failed = "never saw " + repr(step[1])
                break
        if failed:
            break
    elif step[0] == "send":
        time.sleep(0.2)
        os.write(fd, step[1].encode())
    elif step[0] == "interrupt":
        time.sleep(0.2)
        os.write(fd, b"\x03")
deadline = time.time() + 20
while pump(deadline) is None:
    pass
code = None
for _ in range(200):
    p, status = os.waitpid(pid, os.WNOHANG)
    if p:
        code = os.waitstatus_to_exitcode(status)
        break
    time.sleep(0.1)
if code is None:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
print(json.dumps({"transcript": out.decode("utf-8", "replace"), "code": code, "failed": failed}))
"#;

/// What the terminal showed and how the command ended.
pub struct Session {
    pub transcript: String,
    pub code: Option<i64>,
    pub failed: Option<String>,
}

pub fn in_pty(argv: &[&str], steps: serde_json::Value) -> Session {
    let plan = serde_json::json!({ "argv": argv, "steps": steps });
    let out = run(
        Command::new("python3").args(["-c", PTY_DRIVER, &plan.to_string()]),
        b"",
        Duration::from_secs(90),
    );
    assert!(out.status.success(), "pty driver: {out:?}");
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("driver JSON");
    Session {
        transcript: v["transcript"].as_str().unwrap_or_default().to_owned(),
        code: v["code"].as_i64(),
        failed: v["failed"].as_str().map(str::to_owned),
    }
}

pub fn tessera_argv<'a>(bus: &'a str, args: &[&'a str]) -> Vec<String> {
    let mut v = vec![
        bin("tessera").display().to_string(),
        "--bus".to_owned(),
        bus.to_owned(),
    ];
    v.extend(args.iter().map(|s| (*s).to_owned()));
    v
}

/// `tessera --bus <bus> <args>` in a pseudo-terminal, driven by `steps`.
pub fn tessera_in_pty(bus: &str, args: &[&str], steps: serde_json::Value) -> Session {
    let argv = tessera_argv(bus, args);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    in_pty(&argv, steps)
}
