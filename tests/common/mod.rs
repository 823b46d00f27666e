//! Helpers shared by the black-box tests of the built `silt` binary.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `silt serve` and the address it reported.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

/// Makes `cmd`'s process get SIGKILL when the thread that spawns it ends, so that a test that fails (panics)
/// before stopping its server never leaves one running.
fn die_with_spawning_thread(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and calls only `prctl`, which is
    // async-signal-safe; it touches no memory of the parent.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })
    }
}

/// Starts `silt <args>` without waiting for anything (its output discarded), e.g. to kill it while it is
/// still recovering. Killed like [`spawn_silt`]'s if the test's thread ends first.
pub fn spawn_silt_unwaited(args: &[&std::ffi::OsStr]) -> Child {
    die_with_spawning_thread(&mut Command::new(env!("CARGO_BIN_EXE_silt")))
        .args(args)
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn silt")
}

/// Starts `silt <args>` and waits for the address it logs (`addr=…`). The server is killed if the test's
/// thread ends first.
pub fn spawn_silt(args: &[&std::ffi::OsStr]) -> Server {
    let mut child = die_with_spawning_thread(&mut Command::new(env!("CARGO_BIN_EXE_silt")))
        .args(args)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn silt serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // What the server said before listening, for the panic message if it never does.
        let mut said = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(a) =
                line.split("addr=").nth(1).and_then(|r| r.split_whitespace().next()?.parse::<SocketAddr>().ok())
            {
                let _ = tx.send(Ok(a));
                said.clear();
            } else if said.len() < 50 {
                said.push(line);
            }
        }
        let _ = tx.send(Err(said.join("\n")));
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(addr)) => Server { child, addr },
        Ok(Err(said)) => panic!("silt exited before listening ({:?}):\n{said}", child.wait()),
        Err(e) => panic!("server never reported its address: {e}"),
    }
}

/// One HTTP/1.1 request on a fresh connection; returns the status and the body.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    http_with(addr, method, path, "", body)
}

/// Like [`http`], with extra header lines (each ending in `\r\n`).
pub fn http_with(addr: SocketAddr, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        match TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("connect {addr}: {e}"),
        }
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Sends a signal with `kill -s`.
pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args(["-s", sig, &child.id().to_string()]).status().expect("kill").success();
    assert!(ok, "kill -s {sig} failed");
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Polls `f` every 100 ms until it returns true or `secs` pass.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Like [`http`] for a server that may die at any moment: connecting, sending and each read are bounded by
/// `timeout`, and every failure is returned instead of panicking. `Ok` only for a whole response: a body
/// shorter than its `Content-Length` (the server was killed while sending it) is `UnexpectedEof`.
pub fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    use std::io::{Error, ErrorKind};
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let resp = String::from_utf8_lossy(&resp);
    let Some((head, body)) = resp.split_once("\r\n\r\n") else {
        return Err(Error::new(ErrorKind::UnexpectedEof, format!("no whole response head: {resp:?}")));
    };
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let length = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
    });
    if status == 0 || length.is_some_and(|n| body.len() < n) {
        return Err(Error::new(ErrorKind::UnexpectedEof, format!("truncated response: {resp:?}")));
    }
    Ok((status, body.to_owned()))
}

/// The `nats-server` binary (Debian's package), if installed.
pub fn nats_server_binary() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into(), "/usr/local/bin".into()])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

/// Starts `nats-server` on loopback at `port` and waits until it accepts connections.
pub fn start_nats(bin: &std::path::Path, port: u16) -> Child {
    let child = Command::new(bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nats-server");
    assert!(eventually(10, || TcpStream::connect(("127.0.0.1", port)).is_ok()), "nats-server did not start");
    child
}

/// `nats-server` started on a free loopback port, with the port; `None` (after saying SKIPPED) when it is
/// not installed, unless `SILT_REQUIRE_NATS` is set (`.ci/run` installs it), which makes that a failure.
pub fn nats_or_skip() -> Option<(Child, u16)> {
    let Some(bin) = nats_server_binary() else {
        assert!(std::env::var_os("SILT_REQUIRE_NATS").is_none(), "SILT_REQUIRE_NATS is set but nats-server is missing");
        eprintln!("SKIPPED: nats-server is not installed (apt-get install nats-server; .ci/run does)");
        return None;
    };
    let port = free_port();
    Some((start_nats(&bin, port), port))
}

/// Publishes each payload on `subject` with the plain NATS text protocol and waits for the server's PONG,
/// so every message has been routed when this returns.
pub fn nats_publish(port: u16, subject: &str, payloads: &[String]) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut info = String::new();
    if r.read_line(&mut info).is_err() || !info.starts_with("INFO") {
        return false;
    }
    let mut msg = String::from("CONNECT {\"verbose\":false,\"pedantic\":false}\r\n");
    for p in payloads {
        msg.push_str(&format!("PUB {subject} {}\r\n{p}\r\n", p.len()));
    }
    msg.push_str("PING\r\n");
    if s.write_all(msg.as_bytes()).is_err() {
        return false;
    }
    let mut line = String::new();
    r.read_line(&mut line).is_ok() && line.starts_with("PONG")
}
