use super::*;

fn limits(max_connections: usize, max_per_source: usize) -> Limits {
    Limits {
        max_connections,
        max_per_source,
        handshake_timeout: Duration::from_secs(10),
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
    }
}

fn table(max_connections: usize, max_per_source: usize) -> Arc<Table> {
    Arc::new(Table::new(
        limits(max_connections, max_per_source),
        Arc::new(Metrics::new().unwrap()),
    ))
}

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

#[test]
fn a_source_at_its_cap_is_refused_and_other_sources_are_not() {
    let t = table(100, 2);
    let _a = t.admit(ip(2)).unwrap();
    let b = t.admit(ip(2)).unwrap();
    assert_eq!(t.admit(ip(2)).err(), Some("connections_per_source"));
    assert!(t.admit(ip(3)).is_ok());
    drop(b);
    assert!(
        t.admit(ip(2)).is_ok(),
        "a closed connection frees its source's place"
    );
}

#[test]
fn a_full_table_closes_the_oldest_idle_connection_for_a_new_one() {
    let t = table(3, 10);
    let oldest = t.admit(ip(2)).unwrap();
    let busy = t.admit(ip(2)).unwrap();
    let _third = t.admit(ip(3)).unwrap();
    // The second is busy: the oldest idle one goes, even though it is older than the busy one.
    let _request = Busy::start(busy.conn.clone());
    let _new = t.admit(ip(4)).unwrap();
    assert_eq!(t.open(), 3);
    assert!(!t.lock().conns.contains_key(&oldest.conn.id));
    assert!(t.lock().conns.contains_key(&busy.conn.id));
    assert_eq!(t.metrics.connections_evicted.get(), 1);
    // The evicted connection was told to close (a permit waits for its task).
    let notified = oldest.conn.close.notified();
    tokio::pin!(notified);
    assert!(futures::FutureExt::now_or_never(notified.as_mut()).is_some());
}

#[test]
fn a_full_table_of_busy_connections_refuses_the_new_one() {
    let t = table(2, 10);
    let a = t.admit(ip(2)).unwrap();
    let b = t.admit(ip(3)).unwrap();
    let _ra = Busy::start(a.conn.clone());
    let rb = Busy::start(b.conn.clone());
    assert_eq!(t.admit(ip(4)).err(), Some("connections_total"));
    // Once a request ends, its connection is idle again and may make room.
    drop(rb);
    assert!(t.admit(ip(4)).is_ok());
}

#[test]
fn the_total_stays_below_the_descriptor_limit_less_a_reserve() {
    let config = Connections::default();
    assert_eq!(Limits::new(&config, 128).max_connections, 64);
    assert_eq!(Limits::new(&config, 1 << 20).max_connections, config.max);
    assert_eq!(Limits::new(&config, 10).max_connections, 1);
}

#[test]
fn an_ipv4_peer_on_an_ipv6_socket_counts_as_its_ipv4_address() {
    let mapped: SocketAddr = "[::ffff:10.0.0.5]:4000".parse().unwrap();
    assert_eq!(source_of(mapped), IpAddr::from([10, 0, 0, 5]));
}
