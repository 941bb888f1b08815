//! The network policy applied to every component the host runs.
//!
//! Guests may reach only the local machine: TCP to loopback addresses, and
//! outgoing `wasi:http` requests to `localhost` or a loopback IP literal. That
//! is enough for the emulator, local databases and test servers, and it keeps
//! a test or benchmark from ever talking to real Google endpoints by accident.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};

use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

/// Whether `ip` is a loopback address (127.0.0.0/8 or `::1`), IPv4-mapped
/// IPv6 forms included.
///
/// The mapped form is canonicalised first: on a dual-stack socket
/// `::ffff:10.0.0.1` reaches 10.0.0.1, so it must be judged as that address.
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Whether a guest may connect a TCP socket to `addr`: loopback only.
pub fn tcp_connect_allowed(addr: SocketAddr) -> bool {
    is_loopback(addr.ip())
}

/// Whether a guest may bind a TCP socket to `addr`.
///
/// The unspecified address must be allowed because wasmtime checks the
/// implicit bind of `0.0.0.0:0` (or `[::]:0`) that `connect` performs before it
/// checks the connect itself.
pub fn tcp_bind_allowed(addr: SocketAddr) -> bool {
    let ip = addr.ip().to_canonical();
    ip.is_unspecified() || ip.is_loopback()
}

/// The `socket_addr_check` of every guest: TCP to and from loopback only, no
/// UDP.
///
/// Listening is allowed on loopback only (a guest listening on the wildcard
/// address would be reachable from the network), and only loopback peers are
/// accepted.
pub fn socket_addr_allowed(addr: SocketAddr, use_: SocketAddrUse) -> bool {
    match use_ {
        SocketAddrUse::TcpBind => tcp_bind_allowed(addr),
        SocketAddrUse::TcpConnect | SocketAddrUse::TcpListen | SocketAddrUse::TcpAccept => {
            tcp_connect_allowed(addr)
        }
        SocketAddrUse::UdpBind | SocketAddrUse::UdpSend | SocketAddrUse::UdpReceive => false,
    }
}

/// Whether an outgoing `wasi:http` request may go to `host`, the host part of
/// the request's authority (without the port): `localhost` or a loopback IP
/// literal, IPv6 with or without brackets.
pub fn http_host_allowed(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<IpAddr>().is_ok_and(is_loopback)
}

/// Whether an outgoing `wasi:http` request may be sent, judged by its URI's
/// authority. A request without an authority is denied.
pub fn http_request_allowed<B>(request: &http::Request<B>) -> bool {
    request
        .uri()
        .authority()
        .is_some_and(|authority| http_host_allowed(authority.host()))
}

/// Applies the socket policy to a WASI context builder: TCP on with the
/// loopback-only check, UDP off, name lookup on (the guest may resolve any
/// name, but can connect only to loopback results).
pub fn apply_socket_policy(builder: &mut WasiCtxBuilder) {
    builder
        .allow_tcp(true)
        .allow_udp(false)
        .allow_ip_name_lookup(true)
        .socket_addr_check(|addr, use_| {
            let allowed = socket_addr_allowed(addr, use_);
            Box::pin(async move { allowed })
        });
}

/// `wasi:http` hooks that deny requests to anything but the local machine and
/// send the others with wasmtime's default implementation.
///
/// `wasi:http/outgoing-handler` does not go through `socket_addr_check`, so
/// without this hook a guest could reach any host over HTTP(S).
#[derive(Debug, Default, Clone, Copy)]
pub struct LoopbackHttpHooks;

type ResponseFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for LoopbackHttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> ResponseFuture {
        if !http_request_allowed(&request) {
            // Fail before any DNS lookup or connection is attempted.
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        wasmtime_wasi_http::default_hooks().send_request(request, options, fut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_connects_are_allowed() {
        assert!(tcp_connect_allowed(sa("127.0.0.1:5432")));
        assert!(tcp_connect_allowed(sa("127.255.0.9:1")));
        assert!(tcp_connect_allowed(sa("[::1]:3307")));
        assert!(tcp_connect_allowed(sa("[::ffff:127.0.0.1]:80")));
    }

    #[test]
    fn other_connects_are_denied() {
        for a in [
            "10.255.255.1:80",
            "192.168.1.1:443",
            "8.8.8.8:53",
            "34.1.2.3:3307",
            "0.0.0.0:80",
            "[::]:80",
            "[::ffff:10.0.0.1]:80",
            "[2001:4860:4860::8888]:443",
            "[fe80::1]:80",
        ] {
            assert!(!tcp_connect_allowed(sa(a)), "{a} must be denied");
            assert!(
                !socket_addr_allowed(sa(a), SocketAddrUse::TcpConnect),
                "{a} must be denied"
            );
        }
    }

    #[test]
    fn implicit_and_loopback_binds_are_allowed() {
        assert!(socket_addr_allowed(sa("0.0.0.0:0"), SocketAddrUse::TcpBind));
        assert!(socket_addr_allowed(sa("[::]:0"), SocketAddrUse::TcpBind));
        assert!(socket_addr_allowed(
            sa("127.0.0.1:0"),
            SocketAddrUse::TcpBind
        ));
        assert!(!socket_addr_allowed(
            sa("10.0.0.5:0"),
            SocketAddrUse::TcpBind
        ));
        // Listening on the wildcard address would expose the guest.
        assert!(!socket_addr_allowed(
            sa("0.0.0.0:8080"),
            SocketAddrUse::TcpListen
        ));
        assert!(socket_addr_allowed(
            sa("127.0.0.1:8080"),
            SocketAddrUse::TcpListen
        ));
    }

    #[test]
    fn udp_is_denied() {
        for use_ in [
            SocketAddrUse::UdpBind,
            SocketAddrUse::UdpSend,
            SocketAddrUse::UdpReceive,
        ] {
            assert!(!socket_addr_allowed(sa("127.0.0.1:53"), use_));
            assert!(!socket_addr_allowed(sa("0.0.0.0:0"), use_));
        }
    }

    #[test]
    fn is_loopback_handles_both_families() {
        assert!(is_loopback(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(is_loopback(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert!(!is_loopback(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
        assert!(!is_loopback(IpAddr::V6(Ipv6Addr::UNSPECIFIED)));
    }

    #[test]
    fn http_hosts() {
        for ok in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.1.2.3",
            "[::1]",
            "::1",
        ] {
            assert!(http_host_allowed(ok), "{ok} must be allowed");
        }
        for denied in [
            "sqladmin.googleapis.com",
            "oauth2.googleapis.com",
            "metadata.google.internal",
            "169.254.169.254",
            "10.0.0.1",
            "localhost.example.com",
            "evil-localhost",
            "[::]",
            "0.0.0.0",
            "",
        ] {
            assert!(!http_host_allowed(denied), "{denied} must be denied");
        }
    }

    #[test]
    fn http_requests_are_judged_by_authority() {
        let req = |uri: &str| http::Request::builder().uri(uri).body(()).unwrap();
        assert!(http_request_allowed(&req("http://localhost:8080/token")));
        assert!(http_request_allowed(&req("https://127.0.0.1/x")));
        assert!(http_request_allowed(&req("http://[::1]:9/")));
        assert!(!http_request_allowed(&req(
            "https://sqladmin.googleapis.com/v1"
        )));
        assert!(!http_request_allowed(&req("/relative/only")));
        // Userinfo must not fool the check.
        assert!(!http_request_allowed(&req("http://localhost@example.com/")));
    }
}
