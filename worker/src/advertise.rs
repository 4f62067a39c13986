//! The address a worker gives others (`--advertise`), which differs from
//! the one it binds (`--listen`) behind NAT or in a container: a bare HOST
//! keeps the bound port, so `--listen 10.1.2.3:0 --advertise 10.1.2.3`
//! works.

use std::net::SocketAddr;

/// `advertise` as `host:port`, or the bound address when unset.
pub fn advertised_address(bound: SocketAddr, advertise: Option<&str>) -> Result<String, String> {
    let Some(given) = advertise.map(str::trim) else {
        return Ok(bound.to_string());
    };
    let refuse = |why: &str| {
        Err(format!(
            "--advertise '{given}' {why}; expected HOST or HOST:PORT"
        ))
    };
    if given.is_empty() {
        return refuse("is empty");
    }
    if given.contains("://") || given.contains('/') || given.chars().any(char::is_whitespace) {
        return refuse("is not a host");
    }
    // `[v6]` or `[v6]:port`; otherwise a single colon separates the port.
    let (host, port) = match given.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, "")) => (format!("[{v6}]"), None),
            Some((v6, tail)) => match tail.strip_prefix(':') {
                Some(port) => (format!("[{v6}]"), Some(port)),
                None => return refuse("has text after ']'"),
            },
            None => return refuse("has no closing ']'"),
        },
        None => match given.split_once(':') {
            Some((_, port)) if port.contains(':') => {
                return refuse("is an IPv6 address without brackets")
            }
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (given.to_string(), None),
        },
    };
    if host.is_empty() || host == "[]" {
        return refuse("has no host");
    }
    match port {
        None => Ok(format!("{host}:{}", bound.port())),
        Some(port) => match port.parse::<u16>() {
            Ok(0) | Err(_) => refuse("has a bad port"),
            Ok(port) => Ok(format!("{host}:{port}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_host_keeps_the_bound_port() {
        let bound: SocketAddr = "10.1.2.3:4567".parse().expect("address");
        let advertised = |given| advertised_address(bound, given);
        assert_eq!(advertised(None).as_deref(), Ok("10.1.2.3:4567"));
        assert_eq!(advertised(Some("10.1.2.3")).as_deref(), Ok("10.1.2.3:4567"));
        assert_eq!(
            advertised(Some("worker-0.tone")).as_deref(),
            Ok("worker-0.tone:4567")
        );
        assert_eq!(advertised(Some("host:80")).as_deref(), Ok("host:80"));
        assert_eq!(advertised(Some("[::1]")).as_deref(), Ok("[::1]:4567"));
        assert_eq!(advertised(Some("[::1]:81")).as_deref(), Ok("[::1]:81"));
        for bad in [
            "",
            "http://host",
            "host:0",
            "host:x",
            "::1",
            "[::1",
            "[::1]x",
            "a b",
            ":80",
        ] {
            let error = advertised(Some(bad)).expect_err(bad);
            assert!(error.contains("--advertise"), "{error}");
        }
    }
}
