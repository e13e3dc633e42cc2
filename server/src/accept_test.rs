use super::*;
use std::sync::atomic::AtomicU64;

fn acceptor(total: usize, per_ip: usize, exempt: Vec<IpAddr>) -> (Arc<Acceptor>, Arc<AtomicU64>) {
    let refused = Arc::new(AtomicU64::new(0));
    let r = Arc::clone(&refused);
    let a = Acceptor::new(
        "test",
        ConnLimits {
            max_total: total,
            max_per_ip: per_ip,
            exempt,
        },
        move |_| {
            r.fetch_add(1, Ordering::Relaxed);
        },
    );
    (a, refused)
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[test]
fn per_ip_cap_and_release() {
    let (a, _) = acceptor(100, 2, vec![]);
    let p1 = a.admit(ip("10.0.0.1")).expect("first");
    let _p2 = a.admit(ip("10.0.0.1")).expect("second");
    assert_eq!(
        a.admit(ip("10.0.0.1")).err(),
        Some(Refusal::TooManyFromAddress)
    );
    // Another address is not affected.
    let _q = a.admit(ip("10.0.0.2")).expect("other address");
    drop(p1);
    let _p3 = a.admit(ip("10.0.0.1")).expect("slot released");
    assert_eq!(a.open(), 3);
}

#[test]
fn mapped_ipv6_counts_as_ipv4() {
    let (a, _) = acceptor(100, 1, vec![]);
    let _p = a.admit(ip("10.0.0.1")).expect("v4");
    assert_eq!(
        a.admit(ip("::ffff:10.0.0.1")).err(),
        Some(Refusal::TooManyFromAddress)
    );
}

#[test]
fn global_cap_and_exempt_addresses() {
    let (a, _) = acceptor(3, 1, vec![ip("127.0.0.5")]);
    let _e1 = a.admit(ip("127.0.0.5")).expect("exempt 1");
    let _e2 = a.admit(ip("::ffff:127.0.0.5")).expect("exempt 2, mapped");
    let _x = a.admit(ip("10.0.0.9")).expect("third");
    assert_eq!(
        a.admit(ip("127.0.0.5")).err(),
        Some(Refusal::TooManyConnections)
    );
    // A refused admission does not leak a slot.
    assert_eq!(a.open(), 3);
}

#[tokio::test]
async fn accept_closes_refused_connections() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (a, refused) = acceptor(1, 1, vec![]);
    let c1 = tokio::net::TcpStream::connect(addr).await.expect("c1");
    let (_s1, _, _p1) = a.accept(&listener).await;
    let mut c2 = tokio::net::TcpStream::connect(addr).await.expect("c2");
    let a2 = Arc::clone(&a);
    let task = tokio::spawn(async move {
        let l = listener;
        let _ = a2.accept(&l).await;
    });
    // c2 is refused: the server closes it, so a read sees EOF (or a reset).
    use tokio::io::AsyncReadExt;
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(5), c2.read(&mut b))
        .await
        .expect("refused connection was not closed");
    assert!(matches!(r, Ok(0) | Err(_)), "refused connection got data");
    assert!(refused.load(Ordering::Relaxed) >= 1, "refusal not reported");
    drop(c1);
    task.abort();
}
