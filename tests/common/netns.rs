//! A small network of separate hosts on this machine: one Linux network
//! namespace per host, each joined by a veth pair to a bridge that lives
//! in a hub namespace of its own, with addresses in 10.77.0.0/24 that
//! exist only inside those namespaces. Processes started on a host run in
//! their own process group; dropping the network kills them and removes
//! every namespace (and with them every link) it made, even when the test
//! failed.

use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Tells networks made by one test process apart.
static NETWORKS: AtomicUsize = AtomicUsize::new(0);

/// Prefix of every namespace the tests make; the test process's pid
/// follows, so leftovers of a killed run can be told from live ones.
const PREFIX: &str = "tone-test-";

/// One host: a namespace and its address on the bridge.
#[derive(Debug, Clone)]
pub struct Host {
    pub address: Ipv4Addr,
    namespace: String,
}

pub struct Network {
    hub: String,
    hosts: Vec<Host>,
    children: Vec<Child>,
    tag: String,
}

/// Runs `ip ARGS`; fails the test naming the command when it fails.
fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run `ip` ({error}): the network tests need iproute2 \
             (apt-get install iproute2) and root"
            )
        });
    assert!(
        output.status.success(),
        "ip {}: {}\nthe network tests need root, iproute2 and network namespaces",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

impl Network {
    /// An empty network: the hub namespace with its bridge up.
    pub fn new() -> Self {
        remove_leftovers();
        let tag = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NETWORKS.fetch_add(1, Ordering::Relaxed)
        );
        let network = Self {
            hub: format!("{tag}-hub"),
            hosts: Vec::new(),
            children: Vec::new(),
            tag,
        };
        // The namespace goes in first so that Drop removes it whatever
        // fails after.
        ip(&["netns", "add", &network.hub]);
        let hub = network.hub.clone();
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        network
    }

    /// Adds a host named `name` with the next address on the bridge.
    pub fn add_host(&mut self, name: &str) -> Host {
        let index = self.hosts.len();
        let host = Host {
            address: Ipv4Addr::new(10, 77, 0, 1 + index as u8),
            namespace: format!("{}-{name}", self.tag),
        };
        ip(&["netns", "add", &host.namespace]);
        self.hosts.push(host.clone());
        let hub = self.hub.clone();
        let port = format!("h{index}");
        let namespace = host.namespace.as_str();
        ip(&[
            "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            namespace,
        ]);
        ip(&["-n", &hub, "link", "set", &port, "master", "br0"]);
        ip(&["-n", &hub, "link", "set", &port, "up"]);
        let cidr = format!("{}/24", host.address);
        ip(&["-n", namespace, "addr", "add", &cidr, "dev", "eth0"]);
        ip(&["-n", namespace, "link", "set", "eth0", "up"]);
        ip(&["-n", namespace, "link", "set", "lo", "up"]);
        host
    }

    /// `program` to run on `host` (through `ip netns exec`).
    pub fn command(&self, host: &Host, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &host.namespace])
            .arg(program);
        command
    }

    /// Starts `command` (made by [`Network::command`]) in its own process
    /// group, stopped when the network is dropped; returns its index.
    pub fn spawn(&mut self, mut command: Command) -> usize {
        let child = command
            .process_group(0)
            .spawn()
            .expect("a process starts on a host");
        self.children.push(child);
        self.children.len() - 1
    }

    pub fn child(&mut self, index: usize) -> &mut Child {
        &mut self.children[index]
    }

    /// Runs `command` on its host to the end.
    pub fn output(&self, mut command: Command) -> Output {
        command.output().expect("a command runs on a host")
    }

    /// Cuts `host` off the network: its link goes down.
    pub fn cut(&self, host: &Host) {
        ip(&["-n", &host.namespace, "link", "set", "eth0", "down"]);
    }

    /// Puts `host` back on the network.
    pub fn restore(&self, host: &Host) {
        ip(&["-n", &host.namespace, "link", "set", "eth0", "up"]);
    }

    /// SIGKILLs the process group of child `index` and reaps it.
    pub fn kill(&mut self, index: usize) {
        if let Ok(Some(_)) = self.children[index].try_wait() {
            return; // Reaped already: its group id may be another's now.
        }
        let group = format!("-{}", self.children[index].id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.children[index].wait();
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for index in 0..self.children.len() {
            self.kill(index);
        }
        for host in &self.hosts {
            let _ = Command::new("ip")
                .args(["netns", "del", &host.namespace])
                .status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.hub])
            .status();
    }
}

/// Deletes namespaces left by test processes that no longer run (killed
/// before their drop ran).
fn remove_leftovers() {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !std::path::Path::new("/proc").join(pid).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}
