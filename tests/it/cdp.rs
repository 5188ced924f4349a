//! A minimal Chrome DevTools Protocol client for the dashboard's browser
//! tests: headless Chromium started with `--remote-debugging-port=0`, its
//! port read from `DevToolsActivePort`, and JSON messages over a WebSocket
//! written here (RFC 6455: a client's masked text frames, the server's
//! frames reassembled), so the tests need no browser-driver crate.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The Chromium binary, if one is installed.
pub(crate) fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SWEEP_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

/// A headless Chromium, killed when dropped.
pub(crate) struct Browser {
    child: Child,
    ws: Ws,
    next_id: u64,
    _profile: tempfile::TempDir,
}

/// One page (a target) of the browser, driven through a flat session.
pub(crate) struct Page {
    session: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    pub(crate) fn launch(binary: &Path) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-quic",
                "--no-first-run",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        let active = profile.path().join("DevToolsActivePort");
        let start = Instant::now();
        let text = loop {
            if let Ok(text) = std::fs::read_to_string(&active) {
                if text.lines().count() >= 2 {
                    break text;
                }
            }
            assert!(start.elapsed() < Duration::from_secs(60), "chromium wrote no DevToolsActivePort in 60 s");
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut lines = text.lines();
        let port: u16 = lines.next().unwrap().trim().parse().unwrap();
        let path = lines.next().unwrap().trim().to_owned();
        let ws = Ws::connect(port, &path);
        Browser { child, ws, next_id: 0, _profile: profile }
    }

    /// Sends a command (to a page's session, or the browser) and returns its result.
    pub(crate) fn call(&mut self, session: Option<&Page>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(page) = session {
            msg["sessionId"] = json!(page.session);
        }
        self.ws.send(&msg.to_string());
        loop {
            let reply: Value = serde_json::from_str(&self.ws.recv()).expect("CDP sends JSON");
            if reply["id"] == id {
                if let Some(e) = reply.get("error") {
                    panic!("{method}: {e}");
                }
                return reply["result"].clone();
            }
        }
    }

    /// A new page of `width` × `height` CSS pixels.
    pub(crate) fn page(&mut self, width: u32, height: u32) -> Page {
        let target = self.call(None, "Target.createTarget", json!({ "url": "about:blank" }));
        let attached =
            self.call(None, "Target.attachToTarget", json!({ "targetId": target["targetId"], "flatten": true }));
        let page = Page { session: attached["sessionId"].as_str().unwrap().to_owned() };
        self.call(
            Some(&page),
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        );
        page
    }

    pub(crate) fn navigate(&mut self, page: &Page, url: &str) {
        self.call(Some(page), "Page.navigate", json!({ "url": url }));
    }

    /// Evaluates a JavaScript expression in the page, returning its value.
    pub(crate) fn eval(&mut self, page: &Page, expression: &str) -> Value {
        let r = self.call(
            Some(page),
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expression}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Evaluates `expression` until it is truthy (then returns its value), at most `secs` seconds.
    pub(crate) fn wait_for(&mut self, page: &Page, expression: &str, secs: u64) -> Value {
        let start = Instant::now();
        loop {
            let v = self.eval(page, expression);
            let truthy = !matches!(v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return v;
            }
            assert!(start.elapsed() < Duration::from_secs(secs), "waited {secs} s for {expression}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A PNG of the whole page, `max_height` CSS pixels at most.
    pub(crate) fn screenshot(&mut self, page: &Page, max_height: u32) -> Vec<u8> {
        let size = self.eval(page, "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]");
        let (width, height) = (size[0].as_f64().unwrap(), size[1].as_f64().unwrap().min(max_height as f64));
        let clip = json!({ "x": 0, "y": 0, "width": width, "height": height, "scale": 1 });
        let r = self.call(
            Some(page),
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true, "clip": clip }),
        );
        base64_decode(r["data"].as_str().unwrap())
    }
}

/// A WebSocket client connection (no extensions, no TLS).
struct Ws {
    stream: BufReader<TcpStream>,
}

impl Ws {
    fn connect(port: u16, path: &str) -> Ws {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to chromium");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut stream = BufReader::new(stream);
        let mut status = String::new();
        stream.read_line(&mut status).unwrap();
        assert!(status.contains(" 101 "), "websocket upgrade refused: {status}");
        loop {
            let mut line = String::new();
            stream.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        Ws { stream }
    }

    fn send(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mut frame = vec![0x81u8];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n < 65536 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.get_mut().write_all(&frame).unwrap();
    }

    /// The next whole text message (fragments joined; pings answered).
    fn recv(&mut self) -> String {
        let mut message = Vec::new();
        loop {
            let mut head = [0u8; 2];
            self.stream.read_exact(&mut head).expect("a websocket frame");
            let (fin, opcode) = (head[0] & 0x80 != 0, head[0] & 0x0f);
            let len = match head[1] & 0x7f {
                126 => {
                    let mut b = [0u8; 2];
                    self.stream.read_exact(&mut b).unwrap();
                    u16::from_be_bytes(b) as usize
                }
                127 => {
                    let mut b = [0u8; 8];
                    self.stream.read_exact(&mut b).unwrap();
                    u64::from_be_bytes(b) as usize
                }
                n => n as usize,
            };
            let mut mask = [0u8; 4];
            if head[1] & 0x80 != 0 {
                self.stream.read_exact(&mut mask).unwrap();
            }
            let mut payload = vec![0u8; len];
            self.stream.read_exact(&mut payload).unwrap();
            if head[1] & 0x80 != 0 {
                payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= mask[i % 4]);
            }
            match opcode {
                0x8 => panic!("chromium closed the DevTools connection"),
                0x9 => {
                    // Ping: answer with a pong carrying the same bytes.
                    let mut pong = vec![0x8a, 0x80 | payload.len() as u8, 0, 0, 0, 0];
                    pong.extend_from_slice(&payload);
                    self.stream.get_mut().write_all(&pong).unwrap();
                }
                0xa => {}
                _ => {
                    message.extend_from_slice(&payload);
                    if fin {
                        return String::from_utf8(message).expect("a text message");
                    }
                }
            }
        }
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=' && !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let v: Vec<u32> = chunk.iter().map(|c| value(*c) as u32).collect();
        let n = v.iter().enumerate().fold(0u32, |acc, (i, x)| acc | (x << (18 - 6 * i)));
        out.push((n >> 16) as u8);
        if v.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if v.len() > 3 {
            out.push(n as u8);
        }
    }
    out
}

#[test]
fn base64_decodes_what_it_should() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGVsbG8h"), b"hello!");
    assert_eq!(base64_decode("aGk="), b"hi");
}
