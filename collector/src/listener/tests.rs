use super::*;

fn limits(max_connections: usize, max_per_source: usize) -> Limits {
    Limits {
        max_connections,
        max_per_source,
        handshake_timeout: Duration::from_secs(10),
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        stall_timeout: Duration::from_secs(120),
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

#[test]
fn a_flooding_source_loses_its_own_idle_connections_before_anyone_else() {
    let t = table(4, 10);
    let client = t.admit(ip(5)).unwrap();
    let flood: Vec<_> = (0..3).map(|_| t.admit(ip(2)).unwrap()).collect();
    let _new = t.admit(ip(3)).unwrap();
    assert!(
        t.lock().conns.contains_key(&client.conn.id),
        "the oldest, but not the flooder's"
    );
    assert!(!t.lock().conns.contains_key(&flood[0].conn.id));
}

#[test]
fn an_ipv6_host_counts_as_its_slash_64() {
    let a: SocketAddr = "[2001:db8:1:2::5]:4000".parse().unwrap();
    let b: SocketAddr = "[2001:db8:1:2:ffff::9]:4001".parse().unwrap();
    let c: SocketAddr = "[2001:db8:1:3::5]:4000".parse().unwrap();
    assert_eq!(source_of(a), source_of(b));
    assert_ne!(source_of(a), source_of(c));
}

#[test]
fn a_quiet_connection_is_overdue_after_the_idle_timeout_and_a_stalled_response_after_the_stall_timeout()
 {
    let t = table(10, 10);
    let admitted = t.admit(ip(2)).unwrap();
    let conn = &admitted.conn;
    let limits = limits(10, 10);
    let ago = |secs| {
        Instant::now()
            .checked_sub(Duration::from_secs(secs))
            .unwrap()
    };
    *conn.last_work.lock().unwrap() = ago(90);
    assert!(conn.overdue(&limits), "idle 90 s past a 60 s idle timeout");
    let busy = Busy::start(conn.clone());
    *conn.last_work.lock().unwrap() = ago(90);
    assert!(
        !conn.overdue(&limits),
        "a response quiet 90 s is within the 120 s stall timeout"
    );
    *conn.last_work.lock().unwrap() = ago(130);
    assert!(
        conn.overdue(&limits),
        "a peer that stopped reading 130 s ago"
    );
    drop(busy);
    assert!(!conn.overdue(&limits), "a request that just ended is work");
}

#[test]
fn the_stall_timeout_leaves_the_live_feed_two_keep_alives() {
    let mut config = Connections {
        idle_timeout: Duration::from_secs(2),
        ..Connections::default()
    };
    assert_eq!(
        Limits::new(&config, 1 << 20).stall_timeout,
        2 * FEED_KEEP_ALIVE
    );
    config.idle_timeout = Duration::from_secs(600);
    assert_eq!(
        Limits::new(&config, 1 << 20).stall_timeout,
        Duration::from_secs(600)
    );
}
