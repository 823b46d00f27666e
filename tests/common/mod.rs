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
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(a) =
                line.split("addr=").nth(1).and_then(|r| r.split_whitespace().next()?.parse::<SocketAddr>().ok())
            {
                let _ = tx.send(a);
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(60)).expect("server never reported its address");
    Server { child, addr }
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
