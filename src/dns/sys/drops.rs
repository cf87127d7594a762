//! Datagrams the kernel dropped at our DNS sockets because their receive
//! buffer was full: the `drops` column of `/proc/net/udp` and `udp6`, for
//! the sockets this process holds on the given local ports. Read at
//! scrape time, never on the query path.

use std::collections::HashSet;

/// The sum of `drops` over this process's UDP sockets bound to one of
/// `ports`; 0 where `/proc` cannot be read.
pub fn receive_drops(ports: &[u16]) -> u64 {
    let ours = own_socket_inodes();
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|table| sum_drops(&table, ports, &ours))
        .sum()
}

/// The inodes of the sockets this process has open (`socket:[N]` links in
/// `/proc/self/fd`).
fn own_socket_inodes() -> HashSet<u64> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return HashSet::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// One `/proc/net/udp*` table: `sl local_address rem_address st tx_queue
/// rx_queue tr tm->when retrnsmt uid timeout inode ref pointer drops`,
/// the local address as `HEX_ADDRESS:HEX_PORT`.
fn sum_drops(table: &str, ports: &[u16], ours: &HashSet<u64>) -> u64 {
    table
        .lines()
        .skip(1)
        .filter_map(|row| {
            let f: Vec<&str> = row.split_whitespace().collect();
            let port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            let inode: u64 = f.get(9)?.parse().ok()?;
            let drops: u64 = f.last()?.parse().ok()?;
            (ports.contains(&port) && ours.contains(&inode)).then_some(drops)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_only_our_sockets_on_our_ports() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  1: 0100007F:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1111 2 0000000000000000 7\n\
  2: 0100007F:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 2222 2 0000000000000000 5\n\
  3: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3333 2 0000000000000000 100\n\
  4: garbage\n";
        let ours: HashSet<u64> = [1111, 3333].into();
        assert_eq!(sum_drops(table, &[0x14E9], &ours), 7);
        assert_eq!(sum_drops(table, &[0x14E9, 53], &ours), 107);
        assert_eq!(sum_drops(table, &[], &ours), 0);
    }

    #[test]
    fn reads_this_process_without_failing() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        assert_eq!(receive_drops(&[port]), 0);
    }
}
