//! Network namespaces without `unsafe`: one OS thread per namespace. The thread leaves the
//! runner's namespace with `unshare(CLONE_NEWNET)` (a per-thread operation), brings the
//! namespace's `lo` up over rtnetlink, and then runs jobs sent to it. Whatever a job creates
//! there belongs to the namespace for good: a socket keeps the namespace it was made in, and a
//! child forked from the thread starts inside it. So the runner makes the instance's process,
//! its ingress connections and its in-namespace listeners on this thread, and uses them from
//! tokio as usual.
//!
//! The namespace lives while the thread runs or anything made in it (a process, a socket) is
//! open; dropping the [`Netns`] ends the thread.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::sync::mpsc;
use std::time::Duration;

use nix::sched::{CloneFlags, unshare};
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, socket,
};

type Job = Box<dyn FnOnce() + Send>;

/// A network namespace of its own, and the thread that works inside it.
#[derive(Debug)]
pub(crate) struct Netns {
    jobs: mpsc::Sender<Job>,
    /// The namespace's inode (`/proc/<pid>/ns/net -> net:[inode]`).
    pub(crate) inode: u64,
}

fn nix_err(what: &str, e: nix::Error) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

/// Brings the loopback interface up: `RTM_NEWLINK` for ifindex 1 (`lo` in every namespace)
/// with `IFF_UP`, and the kernel's acknowledgement.
fn loopback_up() -> io::Result<()> {
    const RTM_NEWLINK: u16 = 16;
    const NLM_F_REQUEST_ACK: u16 = 1 | 4;
    const NLMSG_ERROR: u16 = 2;
    const IFF_UP: u32 = 1;
    const LOOPBACK_IFINDEX: i32 = 1;
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .map_err(|e| nix_err("netlink socket", e))?;
    // struct nlmsghdr + struct ifinfomsg, native endian.
    let mut msg = Vec::with_capacity(32);
    msg.extend_from_slice(&32u32.to_ne_bytes());
    msg.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
    msg.extend_from_slice(&NLM_F_REQUEST_ACK.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    msg.extend_from_slice(&[0, 0]); // family AF_UNSPEC, padding
    msg.extend_from_slice(&0u16.to_ne_bytes()); // type
    msg.extend_from_slice(&LOOPBACK_IFINDEX.to_ne_bytes());
    msg.extend_from_slice(&IFF_UP.to_ne_bytes()); // flags
    msg.extend_from_slice(&IFF_UP.to_ne_bytes()); // change
    sendto(
        fd.as_raw_fd(),
        &msg,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .map_err(|e| nix_err("netlink send", e))?;
    let mut ack = [0u8; 512];
    let n =
        recv(fd.as_raw_fd(), &mut ack, MsgFlags::empty()).map_err(|e| nix_err("netlink ack", e))?;
    let field = |at: usize, len: usize| ack.get(at..at + len).filter(|_| at + len <= n);
    let kind = field(4, 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    let code = field(16, 4).map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    match (kind, code) {
        (Some(NLMSG_ERROR), Some(0)) => Ok(()),
        (Some(NLMSG_ERROR), Some(errno)) => Err(io::Error::from_raw_os_error(-errno)),
        _ => Err(io::Error::other(
            "netlink: unexpected answer to RTM_NEWLINK",
        )),
    }
}

/// Moves the calling thread into a new network namespace with `lo` up; its inode.
fn enter_new() -> io::Result<u64> {
    unshare(CloneFlags::CLONE_NEWNET).map_err(|e| nix_err("unshare(CLONE_NEWNET)", e))?;
    loopback_up()?;
    Ok(std::fs::metadata("/proc/thread-self/ns/net")?.ino())
}

impl Netns {
    /// A fresh namespace (needs `CAP_SYS_ADMIN`).
    pub(crate) async fn create() -> io::Result<Self> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready, is_ready) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("gatehouse-netns".into())
            .spawn(move || {
                let entered = enter_new();
                let ok = entered.is_ok();
                let _ = ready.send(entered);
                if ok {
                    while let Ok(job) = rx.recv() {
                        job();
                    }
                }
            })?;
        let inode = is_ready
            .await
            .map_err(|_| io::Error::other("namespace thread ended"))??;
        Ok(Self { jobs, inode })
    }

    /// Runs `f` on the namespace's thread, with the current tokio runtime entered (so a
    /// `tokio::process::Command` spawned there is reaped as usual).
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let handle = tokio::runtime::Handle::current();
        self.jobs
            .send(Box::new(move || {
                let _in_runtime = handle.enter();
                let _ = tx.send(f());
            }))
            .map_err(|_| io::Error::other("namespace thread ended"))?;
        rx.await
            .map_err(|_| io::Error::other("namespace thread ended"))
    }

    /// A TCP connection to `127.0.0.1:port` inside the namespace.
    pub(crate) async fn connect(&self, port: u16) -> io::Result<tokio::net::TcpStream> {
        let s = self
            .run(move || {
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
                s.set_nodelay(true)?;
                s.set_nonblocking(true)?;
                Ok::<_, io::Error>(s)
            })
            .await??;
        tokio::net::TcpStream::from_std(s)
    }

    /// A TCP listener on `addr` inside the namespace.
    pub(crate) async fn listen(&self, addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
        let l = self
            .run(move || {
                let l = std::net::TcpListener::bind(addr)?;
                l.set_nonblocking(true)?;
                Ok::<_, io::Error>(l)
            })
            .await??;
        tokio::net::TcpListener::from_std(l)
    }
}

/// Whether this process may make network namespaces: one is made, `lo` brought up, and a
/// connection made over it. `Err` says why not.
pub(crate) fn probe() -> Result<(), String> {
    let joined = std::thread::Builder::new()
        .name("gatehouse-netns-probe".into())
        .spawn(|| -> io::Result<()> {
            enter_new()?;
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            std::net::TcpStream::connect(l.local_addr()?)?;
            Ok(())
        })
        .map_err(|e| e.to_string())?
        .join();
    match joined {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the probe thread failed".into()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    /// Needs root (as the runner's tests do); sockets made in the namespace are not reachable
    /// from the runner's.
    #[tokio::test]
    async fn a_listener_in_a_namespace_is_invisible_outside_it() {
        probe().unwrap_or_else(|e| {
            panic!("network namespaces are needed (run the tests as root): {e}")
        });
        let ns = Netns::create().await.unwrap();
        let l = ns.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let port = l.local_addr().unwrap().port();
        let accepted = tokio::spawn(async move { l.accept().await.map(|_| ()) });
        // From the host namespace: nobody there (or not this listener).
        let outside = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
        assert!(!accepted.is_finished());
        // From inside: accepted.
        let _inside = ns.connect(port).await.unwrap();
        accepted.await.unwrap().unwrap();
        drop(outside);
        let here = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        assert_ne!(ns.inode, here);
    }
}
