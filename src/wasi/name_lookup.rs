//! Name lookup with a deadline: `wasi:sockets/ip-name-lookup` polled beside a
//! timer, since std's `to_socket_addrs` waits as long as the host does.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use wasip2::clocks::monotonic_clock;
use wasip2::io::poll;
use wasip2::sockets::instance_network::instance_network;
use wasip2::sockets::ip_name_lookup::{resolve_addresses, ErrorCode};
use wasip2::sockets::network::IpAddress;

/// The addresses of `host`, with `port`, or an error of kind `TimedOut`
/// once `timeout` has passed.
pub(crate) fn resolve(host: &str, port: u16, timeout: Duration) -> io::Result<Vec<SocketAddr>> {
    let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    let timer = monotonic_clock::subscribe_duration(nanos);
    let network = instance_network();
    let stream = resolve_addresses(&network, host).map_err(other)?;
    let mut addrs = Vec::new();
    loop {
        match stream.resolve_next_address() {
            Ok(Some(ip)) => addrs.push(SocketAddr::new(ip_addr(ip), port)),
            Ok(None) => return Ok(addrs),
            Err(ErrorCode::WouldBlock) => {
                let ready = stream.subscribe();
                if !poll::poll(&[&ready, &timer]).contains(&0) {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("looking up {host} took longer than {timeout:?}"),
                    ));
                }
            }
            Err(e) => return Err(other(e)),
        }
    }
}

fn other(e: ErrorCode) -> io::Error {
    io::Error::other(format!("name lookup failed: {e:?}"))
}

fn ip_addr(ip: IpAddress) -> IpAddr {
    match ip {
        IpAddress::Ipv4((a, b, c, d)) => IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => {
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h))
        }
    }
}
