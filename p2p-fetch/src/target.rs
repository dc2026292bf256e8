//! The first host from the command line: `HOST` or `HOST:PORT`, a name or an IPv4 address.

use crate::exit::{ExitCode, Failure};
use std::net::{SocketAddr, SocketAddrV4, ToSocketAddrs};

/// Resolves `host` (with `default_port` unless it names one) to an IPv4 socket address;
/// the protocol's peer lists carry IPv4 only.
pub fn resolve(host: &str, default_port: u16) -> Result<SocketAddrV4, Failure> {
    let (name, port) =
        match host.rsplit_once(':') {
            Some((name, port)) => {
                let port = port.parse::<u16>().ok().filter(|&port| port != 0).ok_or_else(|| {
                Failure::new(
                    ExitCode::Usage,
                    format!("bad port in {host:?}: expected HOST:PORT with a port from 1 to 65535"),
                )
            })?;
                (name, port)
            }
            None => (host, default_port),
        };
    if name.is_empty() {
        return Err(Failure::new(ExitCode::Usage, "the host is empty"));
    }
    let addresses = (name, port).to_socket_addrs().map_err(|error| {
        Failure::new(
            ExitCode::Unreachable,
            format!("cannot resolve {name}: {error}"),
        )
    })?;
    addresses
        .filter_map(|address| match address {
            SocketAddr::V4(v4) => Some(v4),
            SocketAddr::V6(_) => None,
        })
        .next()
        .ok_or_else(|| {
            Failure::new(
                ExitCode::Unreachable,
                format!("{name} has no IPv4 address (p2p-blocks peers are IPv4)"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_with_and_without_port() {
        let plain = resolve("127.0.0.1", 8888).map_err(|f| f.message);
        assert_eq!(
            plain,
            Ok("127.0.0.1:8888"
                .parse()
                .unwrap_or(SocketAddrV4::new([0; 4].into(), 0)))
        );
        let with_port = resolve("127.0.0.1:9000", 8888)
            .map(|a| a.port())
            .map_err(|f| f.code);
        assert_eq!(with_port, Ok(9000));
        assert_eq!(
            resolve("127.0.0.1:x", 8888).map_err(|f| f.code).err(),
            Some(ExitCode::Usage)
        );
        assert_eq!(
            resolve("127.0.0.1:0", 8888).map_err(|f| f.code).err(),
            Some(ExitCode::Usage)
        );
        assert_eq!(
            resolve(":80", 8888).map_err(|f| f.code).err(),
            Some(ExitCode::Usage)
        );
    }
}
