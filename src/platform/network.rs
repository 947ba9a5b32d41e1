//! An environment's network: what its apps and deploy hooks can reach.
//!
//! Each environment has a network namespace of its own (a bind mount of it in
//! `/run/pushgate/netns`, as `ip netns` keeps them), holding only a loopback interface. Its PHP-FPM
//! masters, start commands and `deploy`/`post_deploy` hooks join it before their sandbox is
//! built, so nothing of the host's network is there: not the host's MariaDB or PostgreSQL
//! ports, not other environments' Redis, not the runner's API, not the internet.
//!
//! What the environment may reach is put into it by a forwarder of its own
//! (`pushgate-runner forward`, supervised, root's: only root may enter a namespace), which
//! listens inside the namespace on each service endpoint the environment was given (the same
//! address and port its relationships name, so the app is told nothing different) and connects
//! to that endpoint from the host's network; and, the other way, listens on the host's loopback
//! on each start command's port and connects to the app inside. An endpoint on another machine
//! is given the same address inside the namespace (an address of its loopback). The forwarder's
//! description (`DATA/router/net/KEY.json`) and the namespace live in directories only root
//! reads: root reads them to decide what to connect where. The forwarder also answers the
//! environment's way out, a proxy bounded by the admin's rules (`egress`).
//!
//! Where the runner cannot make namespaces (not root) or runs without a sandbox, apps and hooks
//! share the host's network, as the README says.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::process;
use crate::store::DataDir;

/// One listening address and where its connections go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Forward {
    pub listen: SocketAddrV4,
    pub to: SocketAddrV4,
}

/// What an environment's forwarder does (`DATA/router/net/KEY.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// The namespace (its bind mount).
    pub ns: PathBuf,
    /// Listening inside the namespace, connecting on the host: the environment's services.
    pub inward: Vec<Forward>,
    /// Listening on the host, connecting inside: the ports of its start commands.
    pub outward: Vec<Forward>,
    /// The destinations its proxy (`egress::PROXY`, inside) may reach: `HOST:PORT` rules; none,
    /// no proxy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<String>,
}

/// Where namespaces are bound.
const NAMESPACES: &str = "/run/pushgate/netns";

/// Connections one forwarder carries at once; more wait in the listener's backlog.
const MAX_CONNECTIONS: usize = 4096;

/// Tunnels out one environment's proxy carries at once.
const MAX_TUNNELS: usize = 512;

/// An environment's network files.
pub struct Network {
    dir: PathBuf,
    run: PathBuf,
    key: String,
}

impl Network {
    /// The network of environment `key` (`NAME-HASH.ENV`).
    pub fn of(data: &DataDir, key: &str) -> Network {
        Network { dir: data.router().join("net"), run: data.router(), key: key.to_owned() }
    }

    /// Where the namespace is bound: `/run/pushgate/netns/HASH` (of the data directory and the
    /// environment), as `ip netns` keeps them in `/run/netns`: outside the data directory (a
    /// `chown -R` or a `cp -a` of it must not meet a namespace), gone with a reboot as the
    /// namespace is.
    pub fn namespace(&self) -> PathBuf {
        Path::new(NAMESPACES).join(super::short_hash(&format!("{}\0{}", self.dir.display(), self.key)))
    }

    fn spec(&self) -> PathBuf {
        self.dir.join(format!("{}.json", self.key))
    }

    fn supervisor_spec(&self) -> PathBuf {
        self.dir.join(format!("{}.supervisor.json", self.key))
    }

    fn supervised(&self) -> Result<process::Supervised, String> {
        let runner = process::runner_exe()?;
        for sub in ["run", "logs"] {
            std::fs::create_dir_all(self.run.join(sub)).map_err(|e| e.to_string())?;
        }
        Ok(process::Supervised {
            pid_file: self.run.join("run").join(format!("{}.net.pid", self.key)),
            log: self.run.join("logs").join(format!("{}.net.log", self.key)),
            dir: self.dir.clone(),
            user: None,
            program: vec![
                runner.display().to_string(),
                "forward".into(),
                "--spec".into(),
                self.spec().display().to_string(),
            ],
            cgroups: Vec::new(),
            netns: None,
        })
    }

    /// Whether this environment's processes are confined to a namespace of its own.
    pub fn exists(&self) -> bool {
        self.spec().is_file()
    }

    /// The namespace, made if it is gone (a reboot), for a process about to join it; None where
    /// the environment has none.
    pub fn ensure(&self) -> Result<Option<PathBuf>, String> {
        if !self.exists() {
            return Ok(None);
        }
        let _lock = self.lock()?;
        ensure_namespace(&self.namespace())?;
        Ok(Some(self.namespace()))
    }

    /// Changes what the forwarder does, starts it again if that changed (or it is not running),
    /// and waits until it listens inside the namespace. Returns the namespace.
    fn update(&self, change: impl FnOnce(&mut Spec)) -> Result<PathBuf, String> {
        let _lock = self.lock()?;
        let ns = self.namespace();
        ensure_namespace(&ns)?;
        let mut spec = load(&self.spec()).unwrap_or_default();
        spec.ns = ns.clone();
        change(&mut spec);
        let text = serde_json::to_string_pretty(&spec).map_err(|e| e.to_string())?;
        let changed = super::write_if_changed(&self.spec(), &text, 0o600)?;
        let supervised = self.supervised()?;
        if spec.inward.is_empty() && spec.outward.is_empty() && spec.egress.is_empty() {
            // Nothing to carry: a namespace with its loopback alone, no forwarder.
            process::stop(&supervised.pid_file, process::Whose::Supervisor, Duration::from_secs(10));
            let _ = std::fs::remove_file(self.supervisor_spec());
            return Ok(ns);
        }
        if changed || process::Supervised::load(&self.supervisor_spec()).ok().as_ref() != Some(&supervised) {
            process::start_supervised(&supervised, &self.supervisor_spec())?;
        } else {
            process::ensure_supervised(&self.supervisor_spec(), true)?;
        }
        let mut inside: Vec<SocketAddrV4> = spec.inward.iter().map(|f| f.listen).collect();
        if proxied(&spec) {
            inside.push(super::egress::PROXY);
        }
        wait_listening_inside(&ns, &inside, &supervised.pid_file)?;
        Ok(ns)
    }

    /// Before a deploy's hooks: the namespace, with `services` (the environment's endpoints,
    /// in the relationships' shape) reachable in it, and a proxy out to the destinations of
    /// `egress` (rules, checked); and what of them cannot be (a host name, an IPv6 address, a
    /// service on the proxy's port), to say in the job's log. Whether the proxy is there.
    pub fn prepare(
        &self,
        services: &serde_json::Map<String, Value>,
        egress: &[String],
    ) -> Result<(PathBuf, Vec<String>, bool), String> {
        let (inward, mut warnings) = inward_of(services);
        super::egress::rules(egress)?;
        let mut spec = Spec { inward, egress: egress.to_vec(), ..Spec::default() };
        if !spec.egress.is_empty() && !proxied(&spec) {
            warnings.push(format!(
                "a service listens on {}, where the environment's proxy would: no way out of the environment",
                super::egress::PROXY
            ));
        }
        let ns = self.update(|s| {
            s.inward = spec.inward;
            s.egress = std::mem::take(&mut spec.egress);
        })?;
        let proxy = load(&self.spec()).is_some_and(|s| proxied(&s));
        Ok((ns, warnings, proxy))
    }

    /// The start commands' ports, reached from the host (the router) inside the namespace.
    pub fn expose(&self, ports: &[u16]) -> Result<(), String> {
        if !self.exists() {
            return Ok(());
        }
        let mut outward: Vec<Forward> = ports
            .iter()
            .map(|&p| {
                let at = SocketAddrV4::new(Ipv4Addr::LOCALHOST, p);
                Forward { listen: at, to: at }
            })
            .collect();
        outward.sort();
        outward.dedup();
        self.update(|spec| spec.outward = outward).map(|_| ())
    }

    /// Starts the forwarder again if it is gone (`run`), or stops it.
    pub fn keep(&self, run: bool) {
        if !self.exists() {
            return;
        }
        if run {
            if let Err(e) = self.ensure() {
                tracing::warn!(error = %e, env = %self.key, "an environment's network namespace");
            }
        }
        if !self.supervisor_spec().exists() {
            return; // nothing to carry
        }
        if let Err(e) = process::ensure_supervised(&self.supervisor_spec(), run) {
            tracing::warn!(error = %e, env = %self.key, "an environment's network forwarder");
        }
    }

    /// The forwarder stopped, the namespace and its files gone (the environment is deleted).
    pub fn remove(&self) {
        if let Ok(s) = process::Supervised::load(&self.supervisor_spec()) {
            process::stop(&s.pid_file, process::Whose::Supervisor, Duration::from_secs(10));
        }
        let ns = self.namespace();
        if let Ok(c) = std::ffi::CString::new(ns.as_os_str().as_encoded_bytes()) {
            // SAFETY: umount2 reads a NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        for file in [ns, self.spec(), self.supervisor_spec(), self.dir.join(format!("{}.lock", self.key))] {
            let _ = std::fs::remove_file(file);
        }
    }

    fn lock(&self) -> Result<File, String> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| format!("{}: {e}", self.dir.display()))?;
        super::lock_file(&self.dir.join(format!("{}.lock", self.key)))
    }
}

/// Whether the forwarder of `spec` runs a proxy: rules, and its port free of services.
fn proxied(spec: &Spec) -> bool {
    !spec.egress.is_empty() && spec.inward.iter().all(|f| f.listen != super::egress::PROXY)
}

/// Whether processes of this runner's environments get a network of their own: in the
/// sandbox, where the runner is root (only root makes and enters namespaces).
pub fn confines(sandbox: &super::sandbox::Sandbox) -> bool {
    sandbox.is_on() && super::users::is_root()
}

fn load(path: &Path) -> Option<Spec> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// The endpoints of `services` the namespace must reach: every `host`/`port` pair in them (an
/// endpoint may hold several), IPv4 addresses and `localhost`; and what cannot be reached.
fn inward_of(services: &serde_json::Map<String, Value>) -> (Vec<Forward>, Vec<String>) {
    fn walk(name: &str, value: &Value, found: &mut Vec<Forward>, warnings: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let (Some(host), Some(port)) = (map.get("host").and_then(Value::as_str), map.get("port")) {
                    let port = port.as_u64().or_else(|| port.as_str().and_then(|p| p.parse().ok()));
                    let ip = if host == "localhost" { Some(Ipv4Addr::LOCALHOST) } else { host.parse().ok() };
                    match (ip, port.and_then(|p| u16::try_from(p).ok())) {
                        (Some(ip), Some(port)) if !ip.is_unspecified() => {
                            let at = SocketAddrV4::new(ip, port);
                            found.push(Forward { listen: at, to: at });
                        }
                        _ => warnings.push(format!(
                            "service `{name}`: its endpoint `{host}` is not an IPv4 address: the environment's \
                             network does not reach it (give the endpoint's address in services.json)"
                        )),
                    }
                }
                for v in map.values().filter(|v| v.is_object() || v.is_array()) {
                    walk(name, v, found, warnings);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(name, v, found, warnings)),
            _ => {}
        }
    }
    let (mut found, mut warnings) = (Vec::new(), Vec::new());
    for (name, value) in services {
        walk(name, value, &mut found, &mut warnings);
    }
    found.sort();
    found.dedup();
    warnings.dedup();
    (found, warnings)
}

/// The magic number of namespace files (`NSFS_MAGIC`).
const NSFS_MAGIC: i64 = 0x6e73_6673;

fn is_namespace(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: statfs writes into the zeroed struct it is given.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == NSFS_MAGIC
    }
}

/// A new network namespace with its loopback up, bound onto `path`, unless one is there.
pub fn ensure_namespace(path: &Path) -> Result<(), String> {
    if is_namespace(path) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let target = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // In a thread of its own: unshare moves only the calling thread, which ends with it.
    std::thread::spawn(move || -> std::io::Result<()> {
        // SAFETY: unshare and mount take flags and NUL-terminated paths.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            interface_up("lo")?;
            let source = c"/proc/thread-self/ns/net";
            if libc::mount(source.as_ptr(), target.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    })
    .join()
    .map_err(|_| "making a network namespace: the thread panicked".to_owned())?
    .map_err(|e| format!("making the network namespace {}: {e}", path.display()))
}

/// `ifreq` with `name` (an interface, or an alias `lo:N`).
fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in req.ifr_name.iter_mut().zip(name.bytes().take(libc::IFNAMSIZ - 1)) {
        *slot = byte as libc::c_char;
    }
    req
}

fn control_socket() -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: socket returns a new descriptor or -1.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor of ours.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Brings interface `name` of the calling thread's namespace up.
fn interface_up(name: &str) -> std::io::Result<()> {
    let sock = control_socket()?;
    let mut req = ifreq(name);
    // SAFETY: the ioctls read and write the ifreq they are given.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Gives the loopback of the calling thread's namespace the address `ip` (alias `lo:N`), so
/// that a listener may bind it: an endpoint on another machine keeps its address inside.
fn add_address(n: usize, ip: Ipv4Addr) -> std::io::Result<()> {
    let sock = control_socket()?;
    let name = format!("lo:{n}");
    let set = |request: libc::Ioctl, addr: Ipv4Addr| -> std::io::Result<()> {
        let mut req = ifreq(&name);
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from(addr).to_be() },
            sin_zero: [0; 8],
        };
        // SAFETY: sockaddr_in fits in the ifreq's sockaddr; the ioctl reads the ifreq.
        unsafe {
            std::ptr::copy_nonoverlapping(
                &sin as *const libc::sockaddr_in as *const u8,
                &mut req.ifr_ifru.ifru_addr as *mut libc::sockaddr as *mut u8,
                std::mem::size_of::<libc::sockaddr_in>(),
            );
            if libc::ioctl(sock.as_raw_fd(), request, &req) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    };
    set(libc::SIOCSIFADDR, ip)?;
    set(libc::SIOCSIFNETMASK, Ipv4Addr::BROADCAST)
}

/// Moves the calling thread into the network namespace `ns` (an open namespace file).
pub fn enter(ns: &File) -> std::io::Result<()> {
    // SAFETY: setns takes a descriptor and a flag.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Waits until the forwarder listens on every inward address inside `ns`.
fn wait_listening_inside(ns: &Path, addrs: &[SocketAddrV4], pid_file: &Path) -> Result<(), String> {
    if addrs.is_empty() {
        return Ok(());
    }
    let file = File::open(ns).map_err(|e| format!("{}: {e}", ns.display()))?;
    let addrs = addrs.to_vec();
    let pid_file = pid_file.to_owned();
    std::thread::spawn(move || -> Result<(), String> {
        enter(&file).map_err(|e| format!("entering the environment's network: {e}"))?;
        let since = Instant::now();
        for addr in addrs {
            while TcpStream::connect_timeout(&addr.into(), Duration::from_millis(200)).is_err() {
                if since.elapsed() > Duration::from_secs(20) {
                    return Err(format!("the environment's network forwarder does not listen on {addr} after 20 s"));
                }
                if since.elapsed() > Duration::from_secs(1)
                    && process::alive(&pid_file, process::Whose::Supervisor).is_none()
                {
                    return Err(format!("the environment's network forwarder ended (pid file {})", pid_file.display()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    })
    .join()
    .map_err(|_| "waiting for the network forwarder: the thread panicked".to_owned())?
}

/// `pushgate-runner forward --spec FILE`: carries connections as the spec says, until killed.
///
/// Two threads, each an event loop (tokio, one thread each): one in the host's network, which
/// accepts on the listeners inside and connects to the services; one in the environment's,
/// which accepts on the host's listeners and connects to the apps inside (a socket belongs to
/// the namespace of the thread that makes it). No thread per connection: a PHP request that
/// opens its database connection pays an accept and a connect, nothing more.
pub fn forward(spec_file: &Path) -> Result<(), String> {
    // Not dumpable: no process of the project (the same uid or not) may trace it or read its
    // memory, and it holds a foot in the host's network.
    // SAFETY: prctl with PR_SET_DUMPABLE takes an integer.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0) };
    let spec = load(spec_file).ok_or_else(|| format!("{}: no forwarder description", spec_file.display()))?;
    let host = File::open("/proc/thread-self/ns/net").map_err(|e| format!("the host's network: {e}"))?;
    ensure_namespace(&spec.ns)?;
    let inside = File::open(&spec.ns).map_err(|e| format!("{}: {e}", spec.ns.display()))?;
    // Listeners inside: made from within the namespace, then back to the host's.
    enter(&inside).map_err(|e| format!("entering {}: {e}", spec.ns.display()))?;
    let mut aliases = 0;
    let mut inward = Vec::new();
    for f in &spec.inward {
        if !f.listen.ip().is_loopback() {
            aliases += 1;
            if let Err(e) = add_address(aliases, *f.listen.ip()) {
                eprintln!("pushgate forward: giving the namespace the address {}: {e}", f.listen.ip());
            }
        }
        inward.push((bind(f.listen).map_err(|e| format!("listening on {} inside: {e}", f.listen))?, *f));
    }
    // The way out, answered from the host's network.
    let proxy = match proxied(&spec) {
        true => {
            let rules = super::egress::rules(&spec.egress)?;
            let at = super::egress::PROXY;
            Some((bind(at).map_err(|e| format!("listening on {at} inside: {e}"))?, rules))
        }
        false => None,
    };
    enter(&host).map_err(|e| format!("back to the host's network: {e}"))?;
    let mut outward = Vec::new();
    for f in &spec.outward {
        outward.push((bind(f.listen).map_err(|e| format!("listening on {}: {e}", f.listen))?, *f));
    }
    eprintln!(
        "pushgate forward: {} service endpoint(s) inside, {} port(s) out, {} egress rule(s)",
        inward.len(),
        outward.len(),
        proxy.as_ref().map_or(0, |(_, rules)| rules.len())
    );
    let active = Arc::new(AtomicUsize::new(0));
    let counter = active.clone();
    let out_thread = std::thread::spawn(move || -> Result<(), String> {
        enter(&inside).map_err(|e| format!("entering the namespace: {e}"))?;
        carry(outward, None, counter)
    });
    let carried = carry(inward, proxy, active);
    // Each side runs until the process is killed; one that could not start ends it.
    match out_thread.join() {
        Ok(Err(e)) => Err(e),
        _ => carried,
    }
}

/// Accepts on each listener and carries each connection to its destination, connecting from
/// the calling thread's network, until the process ends; and answers the proxy's clients.
fn carry(
    listeners: Vec<(TcpListener, Forward)>,
    proxy: Option<(TcpListener, Vec<super::egress::Rule>)>,
    active: Arc<AtomicUsize>,
) -> Result<(), String> {
    if listeners.is_empty() && proxy.is_none() {
        loop {
            std::thread::park();
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| format!("the forwarder's event loop: {e}"))?;
    runtime.block_on(async move {
        let mut loops = Vec::new();
        for (listener, f) in listeners {
            let listener = to_tokio(listener, &f.listen.to_string())?;
            loops.push(tokio::spawn(accept_each(listener, active.clone(), MAX_CONNECTIONS, move |conn| async move {
                let to = std::net::SocketAddr::V4(f.to);
                match tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(to)).await {
                    Ok(Ok(out)) => pipe(conn, out).await,
                    Ok(Err(e)) => eprintln!("pushgate forward: {} -> {}: {e}", f.listen, f.to),
                    Err(_) => eprintln!("pushgate forward: {} -> {}: no answer in 10 s", f.listen, f.to),
                }
            })));
        }
        if let Some((listener, rules)) = proxy {
            let listener = to_tokio(listener, "the proxy")?;
            let rules = Arc::new(rules);
            let own = Arc::new(super::egress::own_addresses());
            // Its own count: tunnels out never take the connections to the services.
            let tunnels = Arc::new(AtomicUsize::new(0));
            loops.push(tokio::spawn(accept_each(listener, tunnels, MAX_TUNNELS, move |conn| {
                let (rules, own) = (rules.clone(), own.clone());
                async move { super::egress::serve(conn, &rules, &own).await }
            })));
        }
        for l in loops {
            let _ = l.await;
        }
        Ok(())
    })
}

fn to_tokio(listener: TcpListener, what: &str) -> Result<tokio::net::TcpListener, String> {
    listener.set_nonblocking(true).map_err(|e| format!("{what}: {e}"))?;
    tokio::net::TcpListener::from_std(listener).map_err(|e| format!("{what}: {e}"))
}

/// Accepts on `listener` until the process ends, handling each connection in a task of its
/// own while fewer than `limit` counted by `active` run (one past them is closed at once).
async fn accept_each<F, Fut>(listener: tokio::net::TcpListener, active: Arc<AtomicUsize>, limit: usize, handle: F)
where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            // Out of descriptors, say: the backlog waits a moment.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if active.load(Ordering::SeqCst) >= limit {
            continue; // dropped: closed at once
        }
        active.fetch_add(1, Ordering::SeqCst);
        let (active, work) = (active.clone(), handle(conn));
        tokio::spawn(async move {
            work.await;
            active.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// A listener on `at`, retried a while: a forwarder that just ended may still hold it.
fn bind(at: SocketAddrV4) -> std::io::Result<TcpListener> {
    let since = Instant::now();
    loop {
        match TcpListener::bind(at) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && since.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            other => return other,
        }
    }
}

/// Copies both ways until each side has said all it had.
async fn pipe(mut a: tokio::net::TcpStream, mut b: tokio::net::TcpStream) {
    let _ = a.set_nodelay(true);
    let _ = b.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
}

/// The inode of a process's network namespace, and of a namespace file: whether a running
/// process is in the environment's network.
pub fn same_namespace(pid: i32, ns: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let theirs = std::fs::metadata(format!("/proc/{pid}/ns/net")).map(|m| (m.dev(), m.ino()));
    let ours = std::fs::metadata(ns).map(|m| (m.dev(), m.ino()));
    matches!((theirs, ours), (Ok(a), Ok(b)) if a == b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_endpoint_of_the_services_is_forwarded_once_and_names_are_said() {
        let services = json!({
            "db": {"host": "127.0.0.1", "port": 3306, "scheme": "mysql"},
            "db2": {"host": "localhost", "port": 3306},
            "cache": {"host": "10.0.0.5", "port": "6379"},
            "search": {"host": "search.internal", "port": 9200},
            "multi": {"endpoints": [{"host": "127.0.0.1", "port": 5432}]},
        });
        let (found, warnings) = inward_of(services.as_object().unwrap());
        let listen: Vec<String> = found.iter().map(|f| f.listen.to_string()).collect();
        assert_eq!(listen, ["10.0.0.5:6379", "127.0.0.1:3306", "127.0.0.1:5432"]);
        assert!(found.iter().all(|f| f.listen == f.to));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("`search.internal`"), "{warnings:?}");
    }
}
