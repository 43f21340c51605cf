//! A headless Chromium driven over the DevTools protocol, for the HTML pages' tests. Debian's
//! `chromium` (installed by `scripts/bootstrap.sh --dev` when missing; `PZT_CHROMIUM` names
//! another binary) runs with `--remote-debugging-pipe`: commands are JSON messages ending in
//! a NUL byte, written to its fd 3; replies and events come back on its fd 4.
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

pub struct Browser {
    child: Child,
    to: std::fs::File,
    from: Receiver<Value>,
    next: u64,
    session: Option<String>,
    /// Every event received, in order.
    pub events: Vec<Value>,
    profile: PathBuf,
}

fn chromium() -> String {
    if let Ok(p) = std::env::var("PZT_CHROMIUM") {
        return p;
    }
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(c).is_file()))
            .unwrap_or(false);
        if found {
            return c.to_string();
        }
    }
    panic!("no chromium found: run `scripts/bootstrap.sh --dev` (it installs Debian's chromium) or set PZT_CHROMIUM");
}

fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2 failed");
    (fds[0], fds[1])
}

impl Browser {
    pub fn launch(name: &str) -> Browser {
        let profile =
            std::env::temp_dir().join(format!("pzt-chromium-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        let (cmd_r, cmd_w) = pipe();
        let (ev_r, ev_w) = pipe();
        let mut c = Command::new(chromium());
        c.args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--hide-scrollbars",
            "--window-size=1280,900",
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec. The
        // descriptors are first moved above 10 so that placing them at 3 and 4 cannot clobber
        // one another.
        unsafe {
            c.pre_exec(move || {
                let hi_r = libc::fcntl(cmd_r, libc::F_DUPFD, 10);
                let hi_w = libc::fcntl(ev_w, libc::F_DUPFD, 10);
                if hi_r < 0 || hi_w < 0 || libc::dup2(hi_r, 3) < 0 || libc::dup2(hi_w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c.spawn().expect("start chromium");
        // SAFETY: the parent's ends are ours alone from here on; the child's are closed.
        let (to, from_file) = unsafe {
            libc::close(cmd_r);
            libc::close(ev_w);
            (
                std::fs::File::from_raw_fd(cmd_w),
                std::fs::File::from_raw_fd(ev_r),
            )
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(from_file);
            let mut buf = vec![];
            while r.read_until(0, &mut buf).map(|n| n > 0).unwrap_or(false) {
                if buf.last() == Some(&0) {
                    buf.pop();
                }
                if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
                buf.clear();
            }
        });
        Browser {
            child,
            to,
            from: rx,
            next: 0,
            session: None,
            events: vec![],
            profile,
        }
    }

    fn recv(&mut self, until: Instant) -> Value {
        let left = until.saturating_duration_since(Instant::now());
        match self.from.recv_timeout(left) {
            Ok(v) => v,
            Err(RecvTimeoutError::Timeout) => panic!("chromium did not answer within {WAIT:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("chromium exited"),
        }
    }

    fn command(&mut self, method: &str, params: Value, session: bool) -> Value {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if session {
            msg["sessionId"] = json!(self.session.clone().expect("no page open"));
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        let until = Instant::now() + WAIT;
        loop {
            let v = self.recv(until);
            if v["id"] == json!(id) {
                if let Some(e) = v.get("error") {
                    panic!("{method}: {e}");
                }
                return v["result"].clone();
            }
            self.events.push(v);
        }
    }

    /// A command to the open page.
    pub fn page(&mut self, method: &str, params: Value) -> Value {
        self.command(method, params, true)
    }

    fn wait_event(&mut self, method: &str) -> Value {
        if let Some(i) = self.events.iter().position(|e| e["method"] == method) {
            return self.events.remove(i);
        }
        let until = Instant::now() + WAIT;
        loop {
            let v = self.recv(until);
            if v["method"] == method {
                return v;
            }
            self.events.push(v);
        }
    }

    /// Opens `file` in a new page and waits for its load event.
    pub fn open(&mut self, file: &Path) {
        let target = self.command(
            "Target.createTarget",
            json!({ "url": "about:blank" }),
            false,
        );
        let attached = self.command(
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
            false,
        );
        self.session = attached["sessionId"].as_str().map(String::from);
        for d in [
            "Runtime.enable",
            "Log.enable",
            "Page.enable",
            "Network.enable",
        ] {
            self.page(d, json!({}));
        }
        self.page(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false }),
        );
        let url = format!(
            "file://{}",
            file.canonicalize().expect("page file").display()
        );
        self.events.clear();
        self.page("Page.navigate", json!({ "url": url }));
        self.wait_event("Page.loadEventFired");
    }

    /// Evaluates `js` in the page (promises awaited) and returns its value.
    pub fn eval(&mut self, js: &str) -> Value {
        let r = self.page(
            "Runtime.evaluate",
            json!({ "expression": js, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{js}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Console errors, uncaught exceptions and error log entries so far.
    pub fn errors(&mut self) -> Vec<String> {
        // Let pending events arrive.
        self.eval("1");
        self.events
            .iter()
            .filter_map(|e| match e["method"].as_str()? {
                "Runtime.exceptionThrown" => Some(e["params"]["exceptionDetails"].to_string()),
                "Runtime.consoleAPICalled" if e["params"]["type"] == "error" => {
                    Some(e["params"]["args"].to_string())
                }
                "Log.entryAdded" if e["params"]["entry"]["level"] == "error" => {
                    Some(e["params"]["entry"].to_string())
                }
                _ => None,
            })
            .collect()
    }

    /// The URLs the page requested besides itself (a self-contained page requests none).
    pub fn requests(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["method"] == "Network.requestWillBeSent")
            .filter_map(|e| e["params"]["request"]["url"].as_str().map(String::from))
            .filter(|u| !u.starts_with("file://"))
            .collect()
    }

    fn mouse(&mut self, kind: &str, x: f64, y: f64) {
        let mut p = json!({ "type": kind, "x": x, "y": y });
        if kind != "mouseMoved" {
            p["button"] = json!("left");
            p["clickCount"] = json!(1);
        }
        self.page("Input.dispatchMouseEvent", p);
    }

    /// The centre of the element `selector` matches (scrolled into view), in page pixels.
    pub fn centre(&mut self, selector: &str) -> (f64, f64) {
        let v = self.eval(&format!(
            "(() => {{ const e = document.querySelector({s}); if (!e) return null; e.scrollIntoView({{block: 'center'}}); const b = e.getBoundingClientRect(); return [b.left + b.width / 2, b.top + b.height / 2]; }})()",
            s = json!(selector)
        ));
        let a = v
            .as_array()
            .unwrap_or_else(|| panic!("no element matches {selector}"));
        (a[0].as_f64().unwrap(), a[1].as_f64().unwrap())
    }

    /// A real mouse click at the centre of the element `selector` matches.
    pub fn click(&mut self, selector: &str) {
        let (x, y) = self.centre(selector);
        self.mouse("mouseMoved", x, y);
        self.mouse("mousePressed", x, y);
        self.mouse("mouseReleased", x, y);
    }

    /// Types `text` into the element `selector` matches (clicked first, to focus it), as a user
    /// would: the page sees `input` events.
    pub fn type_text(&mut self, selector: &str, text: &str) {
        self.click(selector);
        self.page("Input.insertText", json!({ "text": text }));
    }

    /// Sets the viewport to `width` x `height` CSS pixels (the page sees a `resize`).
    pub fn resize(&mut self, width: u32, height: u32) {
        self.page(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        );
    }

    /// Moves the mouse to `(x, y)`.
    pub fn hover(&mut self, x: f64, y: f64) {
        self.mouse("mouseMoved", x, y);
    }

    /// A PNG of the viewport, written to `out`.
    pub fn screenshot(&mut self, out: &Path) {
        let r = self.page("Page.captureScreenshot", json!({ "format": "png" }));
        let png = unbase64(r["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        std::fs::write(out, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Decodes standard base64.
pub fn unbase64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("bad base64 byte {c}"),
    };
    let b: Vec<u8> = s
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(b.len() * 3 / 4);
    for chunk in b.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &c)| n | (u32::from(val(c)) << (18 - 6 * i)));
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}
