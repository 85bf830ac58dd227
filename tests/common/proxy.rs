//! The `llm-guard` binary as a child process: the command, a configuration file of its own and
//! a running `llm-guard proxy` (only with the `cli` feature, which builds the binary).

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// The command, with no OTLP export and none of the test keys unless a test sets them.
pub fn llm_guard() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_llm-guard"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OTEL_") {
            command.env_remove(name);
        }
    }
    command
}

/// A configuration file of its own in the target's temporary directory, named after the test
/// target.
pub fn config_file(text: &str) -> std::path::PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{}-{}-{}.toml",
        env!("CARGO_CRATE_NAME"),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, text).unwrap();
    path
}

/// Collects a pipe's text on a thread; with `ready`, sends the listening URL when it appears.
pub fn collect(
    pipe: impl std::io::Read + Send + 'static,
    ready: Option<mpsc::Sender<String>>,
) -> (Arc<Mutex<String>>, std::thread::JoinHandle<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    let thread = std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Some(tx) = &ready
                && let Some(rest) = line.split("listening on ").nth(1)
            {
                let _ = tx.send(rest.split(' ').next().unwrap_or_default().to_owned());
            }
            let mut t = sink.lock().unwrap();
            t.push_str(&line);
            t.push('\n');
        }
    });
    (text, thread)
}

/// A running proxy, killed when dropped.
pub struct Proxy {
    child: Child,
    pub url: String,
    pub stdout: Arc<Mutex<String>>,
    pub stderr: Arc<Mutex<String>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Starts the binary on `config` with `env` and `args` and waits for its listening line.
    pub fn start(config: &str, env: &[(&str, &str)], args: &[&str]) -> Self {
        let file = config_file(config);
        let mut child = llm_guard()
            .arg("proxy")
            .arg("--config")
            .arg(&file)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("llm-guard runs");
        let (tx, rx) = mpsc::channel();
        let (stdout, a) = collect(child.stdout.take().unwrap(), Some(tx));
        let (stderr, b) = collect(child.stderr.take().unwrap(), None);
        let Ok(url) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            let _ = child.wait();
            let _ = (a.join(), b.join());
            panic!(
                "the proxy did not start:\n{config}\n{}{}",
                stdout.lock().unwrap(),
                stderr.lock().unwrap()
            );
        };
        Self {
            child,
            url,
            stdout,
            stderr,
            threads: vec![a, b],
        }
    }

    /// Ctrl-C, as a person stops it.
    pub fn interrupt(&self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
    }

    /// Ctrl-C, then its exit status and everything it printed.
    pub fn stop(self) -> (ExitStatus, String, String) {
        self.interrupt();
        self.exited()
    }

    /// Its exit status and everything it printed, once it has stopped.
    pub fn exited(mut self) -> (ExitStatus, String, String) {
        let started = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if started.elapsed() > Duration::from_secs(40) {
                let _ = self.child.kill();
                panic!("the proxy did not stop on Ctrl-C");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let out = self.stdout.lock().unwrap().clone();
        let err = self.stderr.lock().unwrap().clone();
        (status, out, err)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
