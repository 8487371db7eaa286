//! Listening sockets: one SO_REUSEPORT socket per worker on an address no other process holds, and
//! free ports below the kernel's ephemeral range.

use std::io;
use std::net::SocketAddr;

/// Binds a non-blocking listening socket with SO_REUSEPORT.
pub fn bind_reuseport(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// Where a listener configured on port 0 gets its port: below the kernel's ephemeral range (32768–60999
/// by default, `net.ipv4.ip_local_port_range`), from which client sockets get their source ports. A
/// listener there could take a port an outgoing connection of this machine is about to be handed, and
/// a restart could find its port held by one; the kernel's own pick for port 0 is in that range. The
/// floor keeps clear of the ports services usually sit on.
pub const PICKED_PORTS: std::ops::Range<u16> = 20000..32768;

/// Random ports tried before a port-0 listener gives up.
const PICK_TRIES: usize = 256;

/// Whether no socket of any process is bound to `addr`: a plain bind (SO_REUSEADDR, which forgives only
/// connections in TIME_WAIT, and no SO_REUSEPORT) is refused by any listener there, SO_REUSEPORT or not.
/// The group is bound right after, so another gateway cannot slip in by joining it.
fn probe_free(addr: SocketAddr) -> io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())
}

fn in_use(addr: SocketAddr, e: io::Error) -> io::Error {
    match e.kind() {
        io::ErrorKind::AddrInUse => io::Error::new(e.kind(), format!("{addr} is already in use")),
        _ => io::Error::new(e.kind(), format!("{addr}: {e}")),
    }
}

fn random_port(range: &std::ops::Range<u16>) -> io::Result<u16> {
    let mut b = [0u8; 2];
    getrandom::fill(&mut b).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(range.start + u16::from_le_bytes(b) % (range.end - range.start))
}

/// Binds `n` SO_REUSEPORT sockets on `addr`, one per worker, after checking that nothing else is bound
/// there: SO_REUSEPORT alone would let this process silently join another's port and the kernel split
/// the traffic between them. Port 0 is a free port of [`PICKED_PORTS`], probed the same way.
pub fn bind_group(
    addr: SocketAddr,
    n: usize,
    backlog: i32,
) -> io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    let bind_all = |at: SocketAddr| -> io::Result<Vec<std::net::TcpListener>> {
        probe_free(at)?;
        (0..n.max(1)).map(|_| bind_reuseport(at, backlog)).collect()
    };
    if addr.port() != 0 {
        return bind_all(addr).map(|all| (addr, all)).map_err(|e| in_use(addr, e));
    }
    for _ in 0..PICK_TRIES {
        let at = SocketAddr::new(addr.ip(), random_port(&PICKED_PORTS)?);
        match bind_all(at) {
            Ok(all) => return Ok((at, all)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(in_use(at, e)),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("no free port in {}..{} on {}", PICKED_PORTS.start, PICKED_PORTS.end, addr.ip()),
    ))
}
