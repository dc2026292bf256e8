//! Private test networks for p2p-blocks.
//!
//! A [`TestNet`] is a network namespace of its own holding a bridge `br0` with 10.0.0.1/24 and
//! TAP devices `tap0`, `tap1`, ... on it, for host-sims and QEMU boards to attach to. Every
//! command acts inside that namespace: the host's own network is never changed, and traffic
//! stays on the bridge. Dropping it kills what was started inside and deletes the namespace
//! with everything in it.
//!
//! As root the namespace is a named one (`ip netns`). Without root it is kept alive by an
//! `unshare --user --net` process and entered with `nsenter`, where the system allows user
//! namespaces; TAP devices then also need `/dev/net/tun` to be readable and writable by the user
//! (mode 0666, the default on most distributions). A thread of this process can enter only a
//! named namespace ([`run_inside`](TestNet::run_inside)): the kernel lets a multithreaded
//! process join neither a user namespace nor, without root, a network namespace.

pub mod harness;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The bridge's address: the test host's side of the network.
pub const BRIDGE_ADDR: &str = "10.0.0.1";
pub const PREFIX_LEN: u8 = 24;

/// A private network namespace with a bridge and TAP devices.
pub struct TestNet {
    name: String,
    taps: usize,
    kind: Kind,
    children: Vec<Child>,
}

/// How the namespace is reached.
enum Kind {
    /// `ip netns NAME`, under /run/netns (root).
    Named,
    /// Kept alive by an `unshare` process of ours, entered through its pid (no root).
    Pinned(Child),
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
        check_tools(taps)?;
        if is_root() {
            // A namespace of this name is a leftover of a dead process: the pid is ours now.
            let _ = quiet(Command::new("ip").args(["netns", "del", &name]));
        }
        Self::create(&name, taps)
    }

    /// As [`new`](Self::new), with a chosen name, which must not be in use: someone else's
    /// network is never replaced.
    pub fn with_name(name: &str, taps: usize) -> Result<Self, Unavailable> {
        check_tools(taps)?;
        if Kept::find(name).is_some() {
            return Err(Unavailable(format!(
                "network namespace {name} already exists (`cargo xtask net down --name {name}` \
                 removes it)"
            )));
        }
        Self::create(name, taps)
    }

    fn create(name: &str, taps: usize) -> Result<Self, Unavailable> {
        let kind = if is_root() {
            ip(&["netns", "add", name])?;
            Kind::Named
        } else {
            Kind::Pinned(pin_namespace()?)
        };
        let net = Self {
            name: name.to_string(),
            taps,
            kind,
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
    pub fn keep(mut self) -> Result<String, Unavailable> {
        if let Kind::Pinned(holder) = &self.kind {
            Kept::Pinned(holder.id()).record(&self.name)?;
        }
        self.children.clear();
        Ok(std::mem::take(&mut self.name))
    }

    /// Deletes a namespace made earlier and kept, by name, after stopping every process still
    /// running in it (host-sims and boards started with `net exec`): otherwise they would keep
    /// it, and its TAP devices, alive. Returns how many were stopped.
    pub fn remove(name: &str) -> Result<usize, Unavailable> {
        let kept = Kept::find(name).ok_or_else(|| no_such_namespace(name))?;
        let holder = match kept {
            Kept::Named => None,
            Kept::Pinned(pid) => Some(pid),
        };
        let stopped = stop_processes_in(&kept.namespace(name)?, holder);
        match holder {
            None => ip(&["netns", "del", name])?,
            Some(pid) => {
                let _ = std::fs::remove_file(Kept::record_path(name));
                kill(Pid::from_raw(pid_t(pid)?), Signal::SIGTERM)
                    .map_err(|error| Unavailable(format!("stopping {name}'s holder: {error}")))?;
            }
        }
        Ok(stopped)
    }

    /// A command that runs `program` inside the namespace `name` made earlier and kept.
    pub fn command_in(name: &str, program: &str) -> Result<Command, Unavailable> {
        match Kept::find(name) {
            Some(Kept::Named) => Ok(named_command(name, program)),
            Some(Kept::Pinned(pid)) => Ok(pinned_command(pid, program)),
            None => Err(no_such_namespace(name)),
        }
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

    /// Runs `ip args...` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<(), Unavailable> {
        let mut command = self.command("ip");
        command.args(args);
        run_ip(&mut command, args)
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        match &self.kind {
            Kind::Named => named_command(&self.name, program),
            Kind::Pinned(holder) => pinned_command(holder.id(), program),
        }
    }

    /// A command that boots `elf` on QEMU's mps2-an386 (the project's emulated board) with its
    /// Ethernet on TAP `tap` and MAC 52:54:00:00:00:`mac_byte`; semihosting on, so the
    /// firmware's defmt log comes out on standard output and a panic ends QEMU with code 1.
    pub fn qemu_board(&self, tap: usize, mac_byte: u8, elf: &std::path::Path) -> Command {
        self.qemu_board_with_monitor(tap, mac_byte, elf, None)
    }

    /// [`qemu_board`](Self::qemu_board) with QEMU's monitor on the Unix socket `monitor`, so a
    /// test can send it commands such as `system_reset` (a reset, as of the board's button).
    pub fn qemu_board_with_monitor(
        &self,
        tap: usize,
        mac_byte: u8,
        elf: &std::path::Path,
        monitor: Option<&std::path::Path>,
    ) -> Command {
        let monitor = match monitor {
            Some(path) => format!("unix:{},server=on,wait=off", path.display()),
            None => "none".into(),
        };
        let mut command = self.command("qemu-system-arm");
        command
            .args(["-machine", "mps2-an386", "-cpu", "cortex-m4"])
            .args(["-nographic", "-monitor", &monitor, "-serial", "none"])
            .args(["-semihosting-config", "enable=on,target=native"])
            .arg("-nic")
            .arg(format!(
                "tap,ifname={},script=no,downscript=no,mac=52:54:00:00:00:{mac_byte:02x}",
                Self::tap(tap)
            ))
            .arg("-kernel")
            .arg(elf);
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

    /// Runs `work` on a new thread inside the namespace and returns its result. Only a named
    /// namespace (as root) can be entered by a thread; see the crate's documentation.
    pub fn run_inside<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Unavailable> {
        if let Kind::Pinned(_) = self.kind {
            return Err(Unavailable(
                "a thread can enter the test network only as root (without root it lives in a \
                 user namespace, which a multithreaded process cannot join)"
                    .into(),
            ));
        }
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
        // The namespace goes with its bridge and TAP devices.
        match &mut self.kind {
            Kind::Named => {
                let _ = quiet(Command::new("ip").args(["netns", "del", &self.name]));
            }
            Kind::Pinned(holder) => {
                let _ = holder.kill();
                let _ = holder.wait();
            }
        }
    }
}

/// A namespace kept by `cargo xtask net up`, found by name.
enum Kept {
    Named,
    /// The pid of the `unshare` process holding it.
    Pinned(u32),
}

impl Kept {
    fn find(name: &str) -> Option<Self> {
        if std::path::Path::new("/run/netns").join(name).exists() {
            return Some(Self::Named);
        }
        let path = Self::record_path(name);
        let pid: u32 = std::fs::read_to_string(&path).ok()?.trim().parse().ok()?;
        if is_holder(pid) {
            Some(Self::Pinned(pid))
        } else {
            // Its holder is gone (a reboot, a kill): the record is stale.
            let _ = std::fs::remove_file(&path);
            None
        }
    }

    /// The namespace's identity as `/proc/PID/ns/net` shows it: `net:[INODE]`.
    fn namespace(&self, name: &str) -> Result<String, Unavailable> {
        match self {
            Self::Named => {
                let path = std::path::Path::new("/run/netns").join(name);
                let metadata = std::fs::metadata(&path)
                    .map_err(|error| Unavailable(format!("{}: {error}", path.display())))?;
                Ok(format!(
                    "net:[{}]",
                    std::os::unix::fs::MetadataExt::ino(&metadata)
                ))
            }
            Self::Pinned(pid) => namespace_of(*pid)
                .ok_or_else(|| Unavailable(format!("{name}'s holder {pid} is gone"))),
        }
    }

    /// Where the holder's pid of a kept rootless namespace is recorded.
    fn record_path(name: &str) -> PathBuf {
        let dir = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join(format!("p2p-blocks-{}", uid())));
        dir.join("p2p-blocks-netns").join(format!("{name}.pid"))
    }

    fn record(&self, name: &str) -> Result<(), Unavailable> {
        let Self::Pinned(pid) = self else {
            return Ok(());
        };
        let path = Self::record_path(name);
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&path, pid.to_string())
        };
        write().map_err(|error| Unavailable(format!("{}: {error}", path.display())))
    }
}

/// Starts a process that holds a new user and network namespace, and waits until it is ready:
/// `unshare` has mapped our user to root inside and run `sleep`.
fn pin_namespace() -> Result<Child, Unavailable> {
    let mut holder = Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--net",
            "--",
            "sleep",
            "infinity",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| Unavailable(format!("cannot run unshare: {error}")))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if is_holder(holder.id()) {
            return Ok(holder);
        }
        if let Ok(Some(_)) = holder.try_wait() {
            let mut why = String::new();
            if let Some(mut stderr) = holder.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut stderr, &mut why);
            }
            return Err(Unavailable(format!(
                "without root the test network needs a user namespace, and unshare failed: {} \
                 (run as root, or allow unprivileged user namespaces)",
                why.trim()
            )));
        }
        if Instant::now() > deadline {
            let _ = holder.kill();
            let _ = holder.wait();
            return Err(Unavailable("unshare did not start within 5 s".into()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether `pid` is a namespace holder of ours: `sleep` in a network namespace not ours.
fn is_holder(pid: u32) -> bool {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    comm.trim() == "sleep"
        && namespace_of(pid).is_some_and(|net| Some(net) != namespace_of(std::process::id()))
}

/// The network namespace of process `pid`, as `net:[INODE]`; `None` when it is gone (or a
/// zombie) or not ours to see.
fn namespace_of(pid: u32) -> Option<String> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    link.to_str().map(str::to_string)
}

/// Stops every process we can see in network namespace `namespace`, except `spare`: SIGTERM,
/// then SIGKILL for any still there after two seconds. Returns how many there were.
fn stop_processes_in(namespace: &str, spare: Option<u32>) -> usize {
    let inside = || -> Vec<Pid> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| Some(pid) != spare && pid != std::process::id())
            .filter(|&pid| namespace_of(pid).as_deref() == Some(namespace))
            .filter_map(|pid| Some(Pid::from_raw(i32::try_from(pid).ok()?)))
            .collect()
    };
    let found = inside();
    for &pid in &found {
        let _ = kill(pid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while !inside().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in inside() {
        let _ = kill(pid, Signal::SIGKILL);
    }
    found.len()
}

fn named_command(name: &str, program: &str) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", name, program]);
    command
}

/// nsenter into the holder's user and network namespaces. Our user is root there (the
/// holder mapped it); credentials are kept as they are, since the map denies setgroups.
fn pinned_command(pid: u32, program: &str) -> Command {
    let mut command = Command::new("nsenter");
    command.args([
        "--target",
        &pid.to_string(),
        "--user",
        "--net",
        "--preserve-credentials",
        "--",
        program,
    ]);
    command
}

fn no_such_namespace(name: &str) -> Unavailable {
    Unavailable(format!(
        "there is no network namespace {name}: make it with `cargo xtask net up --name {name}`"
    ))
}

fn pid_t(pid: u32) -> Result<i32, Unavailable> {
    i32::try_from(pid).map_err(|_| Unavailable(format!("pid {pid} out of range")))
}

/// The environment variable naming the file where tests that cannot run here record why;
/// `cargo xtask test` sets it and counts those tests as skipped, not passed.
pub const SKIP_LOG_VAR: &str = "P2P_SKIP_LOG";

/// Says that the current test cannot run here and why, on stderr and, under `cargo xtask
/// test`, in the skip log. The test should return at once.
pub fn report_skip(reason: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    eprintln!("SKIPPED {test}: {reason}");
    if let Some(path) = std::env::var_os(SKIP_LOG_VAR) {
        use std::io::Write as _;
        let line = format!("{test}: {}\n", reason.replace('\n', " "));
        if let Ok(mut log) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = log.write_all(line.as_bytes());
        }
    }
}

/// Whether this process runs as root, so its test networks are named ones that its threads
/// can join.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// Whether namespaces and TAP devices can be made here at all.
fn check_tools(taps: usize) -> Result<(), Unavailable> {
    let needed: &[(&str, &str)] = if is_root() {
        &[("ip", "iproute2")]
    } else {
        &[
            ("ip", "iproute2"),
            ("unshare", "util-linux"),
            ("nsenter", "util-linux"),
        ]
    };
    for (program, package) in needed {
        if which(program).is_none() {
            return Err(Unavailable(format!(
                "the `{program}` command (Debian package {package}) is missing"
            )));
        }
    }
    if !is_root() && taps > 0 {
        let tun = "/dev/net/tun";
        if let Err(error) = std::fs::OpenOptions::new().read(true).write(true).open(tun) {
            return Err(Unavailable(format!(
                "TAP devices without root need {tun} readable and writable by you ({error}); \
                 run as root, or make it mode 0666 as most distributions do"
            )));
        }
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<(), Unavailable> {
    run_ip(Command::new("ip").args(args), args)
}

fn run_ip(command: &mut Command, args: &[&str]) -> Result<(), Unavailable> {
    let output = command
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

fn which(program: &str) -> Option<PathBuf> {
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
                report_skip(&reason.to_string());
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
    fn removing_a_kept_network_stops_what_runs_in_it() {
        if !is_root() {
            assert!(std::env::var_os("CI").is_none(), "CI runs as root");
            report_skip("named networks need root");
            return;
        }
        let name = format!("p2p-keep-{}", std::process::id());
        let kept = TestNet::with_name(&name, 1)
            .expect("network")
            .keep()
            .expect("keep");
        let mut inside = TestNet::command_in(&kept, "sleep")
            .expect("enter by name")
            .arg("60")
            .spawn()
            .expect("sleep inside");
        // Until `ip netns exec` has entered the namespace, nothing is in it to find.
        let pid = inside.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default() != "sleep\n"
        {
            assert!(Instant::now() < deadline, "sleep did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(TestNet::remove(&kept).expect("remove"), 1);
        let status = inside.wait().expect("reap");
        assert!(!status.success(), "stopped by a signal: {status}");
        assert!(TestNet::command_in(&kept, "true").is_err(), "gone");
    }

    #[test]
    fn a_chosen_name_in_use_is_refused_and_left_alone() {
        // Without root a network has no name to choose, so nothing to refuse.
        if !is_root() {
            assert!(std::env::var_os("CI").is_none(), "CI runs as root");
            report_skip("named networks need root");
            return;
        }
        let Ok(net) = TestNet::new(1) else {
            assert!(std::env::var_os("CI").is_none(), "CI needs a test network");
            report_skip("no test network here");
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
