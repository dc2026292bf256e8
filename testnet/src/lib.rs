//! Private test networks for p2p-blocks.
//!
//! A [`TestNet`] is a network namespace of its own holding a bridge `br0` with 10.0.0.1/24 and
//! TAP devices `tap0`, `tap1`, ... on it, for host-sims and QEMU boards to attach to. Every
//! command acts inside that namespace (`ip -n NAME`, `ip netns exec NAME`): the host's own
//! network is never changed, and traffic stays on the bridge. Dropping it kills what was
//! started inside and deletes the namespace with everything in it.

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The bridge's address: the test host's side of the network.
pub const BRIDGE_ADDR: &str = "10.0.0.1";
pub const PREFIX_LEN: u8 = 24;

/// A private network namespace with a bridge and TAP devices.
pub struct TestNet {
    name: String,
    taps: usize,
    children: Vec<Child>,
}

/// Why a test network cannot be made here.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl TestNet {
    /// Makes a namespace with a unique name, a bridge and `taps` TAP devices on it.
    pub fn new(taps: usize) -> Result<Self, Unavailable> {
        let name = format!(
            "p2p-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        check_tools()?;
        // A namespace of this name is a leftover of a dead process: the pid is ours now.
        let _ = quiet(Command::new("ip").args(["netns", "del", &name]));
        Self::create(&name, taps)
    }

    /// As [`new`](Self::new), with a chosen name, which must not be in use: someone else's
    /// network is never replaced.
    pub fn with_name(name: &str, taps: usize) -> Result<Self, Unavailable> {
        check_tools()?;
        if std::path::Path::new("/run/netns").join(name).exists() {
            return Err(Unavailable(format!(
                "network namespace {name} already exists (`ip netns del {name}` removes it)"
            )));
        }
        Self::create(name, taps)
    }

    fn create(name: &str, taps: usize) -> Result<Self, Unavailable> {
        ip(&["netns", "add", name])?;
        let net = Self {
            name: name.to_string(),
            taps,
            children: Vec::new(),
        };
        net.ip(&["link", "set", "lo", "up"])?;
        // Clients that connect and close many times (load tests) would run out of ephemeral
        // ports while each closed connection waits in TIME-WAIT: these settings are per
        // namespace, so only this one changes.
        for (key, value) in [
            ("net/ipv4/ip_local_port_range", "1024 65535"),
            ("net/ipv4/tcp_tw_reuse", "1"),
        ] {
            let status = net
                .command("sh")
                .args(["-c", &format!("echo '{value}' > /proc/sys/{key}")])
                .status()
                .map_err(|error| Unavailable(format!("setting {key}: {error}")))?;
            if !status.success() {
                return Err(Unavailable(format!(
                    "setting {key} in the namespace failed"
                )));
            }
        }
        net.ip(&["link", "add", "br0", "type", "bridge"])?;
        // Forward at once: a port on a fresh bridge otherwise spends seconds in "learning".
        net.ip(&[
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
        ])?;
        net.ip(&[
            "addr",
            "add",
            &format!("{BRIDGE_ADDR}/{PREFIX_LEN}"),
            "dev",
            "br0",
        ])?;
        net.ip(&["link", "set", "br0", "up"])?;
        for index in 0..taps {
            let tap = Self::tap(index);
            net.ip(&["tuntap", "add", "dev", &tap, "mode", "tap"])?;
            net.ip(&["link", "set", &tap, "master", "br0"])?;
            net.ip(&["link", "set", &tap, "up"])?;
        }
        Ok(net)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Leaves the namespace in place when this handle goes (for `cargo xtask net up`);
    /// returns its name. Processes started here are left running too.
    pub fn keep(mut self) -> String {
        self.children.clear();
        std::mem::take(&mut self.name)
    }

    /// Deletes a namespace made earlier and kept, by name.
    pub fn remove(name: &str) -> Result<(), Unavailable> {
        ip(&["netns", "del", name])
    }

    pub fn tap_count(&self) -> usize {
        self.taps
    }

    /// The name of TAP device `index`.
    pub fn tap(index: usize) -> String {
        format!("tap{index}")
    }

    /// The address conventionally given to whatever sits on TAP `index`: 10.0.0.(index + 2).
    pub fn host_addr(index: usize) -> String {
        format!("10.0.0.{}", index + 2)
    }

    /// Runs `ip -n NAME args...` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<(), Unavailable> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Starts `command` (from [`command`](Self::command)); it is killed when the network is
    /// dropped. Returns its index for [`kill`](Self::kill).
    pub fn spawn(&mut self, command: &mut Command) -> Result<usize, Unavailable> {
        let child = command
            .spawn()
            .map_err(|error| Unavailable(format!("cannot start {command:?}: {error}")))?;
        self.children.push(child);
        Ok(self.children.len() - 1)
    }

    /// Kills a process started with [`spawn`](Self::spawn) and waits for it.
    pub fn kill(&mut self, index: usize) {
        if let Some(child) = self.children.get_mut(index) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process started as `index`, to check on it.
    pub fn child(&mut self, index: usize) -> Option<&mut Child> {
        self.children.get_mut(index)
    }

    /// Moves the calling thread into the namespace: sockets it opens afterwards live there.
    /// Use a thread of its own for this; it cannot come back.
    pub fn enter(&self) -> Result<(), Unavailable> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).map_err(|error| Unavailable(format!("{path}: {error}")))?;
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|error| Unavailable(format!("setns into {}: {error}", self.name)))
    }

    /// Runs `work` on a new thread inside the namespace and returns its result.
    pub fn run_inside<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Unavailable> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).map_err(|error| Unavailable(format!("{path}: {error}")))?;
        let handle = std::thread::spawn(move || {
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|error| Unavailable(format!("setns: {error}")))?;
            Ok(work())
        });
        handle
            .join()
            .map_err(|_| Unavailable("the thread inside the namespace panicked".into()))?
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        if self.name.is_empty() {
            return;
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Deleting the namespace deletes its bridge and TAP devices with it.
        let _ = quiet(Command::new("ip").args(["netns", "del", &self.name]));
    }
}

/// Whether namespaces and TAP devices can be made here at all.
fn check_tools() -> Result<(), Unavailable> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Unavailable(
            "making network namespaces and TAP devices needs root; run the tests with sudo".into(),
        ));
    }
    if which("ip").is_none() {
        return Err(Unavailable(
            "the `ip` command (Debian package iproute2) is missing".into(),
        ));
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<(), Unavailable> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| Unavailable(format!("cannot run ip: {error}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Unavailable(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

fn quiet(command: &mut Command) -> std::io::Result<std::process::ExitStatus> {
    command.stdout(Stdio::null()).stderr(Stdio::null()).status()
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|path| path.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_removes_a_private_network() {
        let net = match TestNet::new(2) {
            Ok(net) => net,
            Err(reason) if std::env::var_os("CI").is_none() => {
                eprintln!("skipped: {reason}");
                return;
            }
            Err(reason) => panic!("CI needs a test network: {reason}"),
        };
        let name = net.name().to_string();
        let links = net
            .command("ip")
            .args(["-br", "link"])
            .output()
            .expect("ip link");
        let links = String::from_utf8_lossy(&links.stdout);
        assert!(
            links.contains("br0") && links.contains("tap0") && links.contains("tap1"),
            "{links}"
        );
        // The bridge's address is reachable from a thread inside, and only there.
        let inside = net
            .run_inside(|| std::net::TcpListener::bind((BRIDGE_ADDR, 0)).is_ok())
            .expect("thread inside the namespace");
        assert!(inside);
        drop(net);
        let list = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns");
        assert!(!String::from_utf8_lossy(&list.stdout).contains(&name));
    }

    #[test]
    fn a_chosen_name_in_use_is_refused_and_left_alone() {
        let Ok(net) = TestNet::new(1) else {
            assert!(std::env::var_os("CI").is_none(), "CI needs a test network");
            eprintln!("skipped: no test network here");
            return;
        };
        let error = TestNet::with_name(net.name(), 0)
            .err()
            .expect("an existing namespace must be refused");
        assert!(error.0.contains("already exists"), "{error}");
        // The first network still has its TAP device.
        let links = net
            .command("ip")
            .args(["link", "show", "tap0"])
            .output()
            .expect("ip link");
        assert!(links.status.success());
    }
}
