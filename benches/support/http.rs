//! A minimal blocking HTTP/1.1 client for the benches: one keep-alive connection (a new one after a response
//! that says `Connection: close`, as VictoriaMetrics sends once a connection is older than its
//! `-http.connTimeout`), bodies by Content-Length or chunked transfer encoding. Small on purpose, so that a load generator's own CPU stays
//! low and is measurable (see `thread_cpu_seconds`).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

/// One keep-alive HTTP/1.1 connection, as a collector holds one.
pub struct Client {
    addr: SocketAddr,
    stream: TcpStream,
    buf: Vec<u8>,
    head: Vec<u8>,
    /// The last response said `Connection: close`: connect again before the next request.
    closed: bool,
}

impl Client {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Client { addr, stream, buf: Vec::with_capacity(1 << 16), head: Vec::with_capacity(256), closed: false }
    }

    /// Sends a request and reads the whole response; returns its status and body.
    pub fn request(&mut self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        if self.closed {
            *self = Client::connect(self.addr);
        }
        self.head.clear();
        write!(self.head, "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n", self.addr, body.len())
            .expect("head");
        if !body.is_empty() {
            self.head.extend_from_slice(b"Content-Type: text/plain\r\n");
        }
        self.head.extend_from_slice(b"\r\n");
        self.stream.write_all(&self.head).expect("send head");
        self.stream.write_all(body).expect("send body");
        self.read_response()
    }

    /// Like [`Client::request`], but panics unless the status is 2xx.
    pub fn ok(&mut self, method: &str, path: &str, body: &[u8]) -> Vec<u8> {
        let (status, out) = self.request(method, path, body);
        assert!((200..300).contains(&status), "{method} {path}: {status} {}", String::from_utf8_lossy(&out));
        out
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 1 << 16];
        let n = self.stream.read(&mut chunk).expect("read");
        assert!(n > 0, "connection closed");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    fn read_response(&mut self) -> (u16, Vec<u8>) {
        self.buf.clear();
        let end = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            self.fill();
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
        let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status");
        let header = |name: &str| head.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_owned());
        self.closed = header("connection:").is_some_and(|v| v == "close");
        let mut pos = end + 4;
        if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(i) = self.buf[pos..].windows(2).position(|w| w == b"\r\n") {
                        break pos + i;
                    }
                    self.fill();
                };
                let size_text = String::from_utf8_lossy(&self.buf[pos..line_end]).into_owned();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).expect("chunk size");
                pos = line_end + 2;
                while self.buf.len() < pos + size + 2 {
                    self.fill();
                }
                body.extend_from_slice(&self.buf[pos..pos + size]);
                pos += size + 2;
                if size == 0 {
                    return (status, body);
                }
            }
        }
        let len: usize = header("content-length:").map_or(0, |v| v.parse().expect("content-length"));
        while self.buf.len() < pos + len {
            self.fill();
        }
        (status, self.buf[pos..pos + len].to_vec())
    }
}

/// CPU seconds of the calling thread.
pub fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    #[expect(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// CPU seconds (user + system) of process `pid` so far, from `/proc/<pid>/stat`.
pub fn process_cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    #[expect(unsafe_code)]
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks / hz.max(1) as f64
}

/// Minor and major page faults of process `pid` so far (`/proc/<pid>/stat`); zeros if unreadable.
pub fn page_faults(pid: &str) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
    (field(7), field(9))
}

/// Peak resident memory of process `pid` (`VmHWM`), in bytes.
pub fn peak_rss_bytes(pid: &str) -> u64 {
    status_bytes(pid, "VmHWM")
}

/// A `kB` field of `/proc/<pid>/status` (`VmHWM`, `RssAnon`, `RssFile`, ...) in bytes; 0 if absent.
pub fn status_bytes(pid: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
