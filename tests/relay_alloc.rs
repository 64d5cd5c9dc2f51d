//! What the relays allocate, counted by a global allocator for this test thread only (the
//! tests run on tokio's current-thread runtime, so the relay task runs here too): no copy
//! buffer before the first byte, a small buffer per message of light traffic, and one large
//! buffer reused through a burst instead of a new one per readiness wake.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use common::tcp_pair;
use frontgate::forward::relay::{relay_streams, relay_tcp, RelayStats};
use frontgate::forward::shutdown::ShutdownSwitch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

/// The system allocator, adding up the bytes asked for on a thread while it counts.
struct Counting;

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

fn count(bytes: usize) {
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCATED.try_with(|total| total.set(total.get() + bytes));
        }
    });
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes allocated on this thread while `body` runs.
async fn allocated_during(body: impl std::future::Future<Output = ()>) -> usize {
    ALLOCATED.with(|total| total.set(0));
    COUNTING.with(|on| on.set(true));
    body.await;
    COUNTING.with(|on| on.set(false));
    ALLOCATED.with(Cell::get)
}

/// Lets every other task of this thread run until it waits.
async fn let_others_run() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// A client and a backend socket with a relay task between them: the passthrough relay
/// (`relay_tcp`), or the stream relay of TLS-terminated routes (`relay_streams`) over the
/// same sockets. On Linux the passthrough relay moves bursts with `splice(2)` (no buffer
/// at all; tests/relay_pipes.rs counts its pipes), so the burst policy is checked on the
/// stream relay, which shares it.
async fn relayed_pair(
    passthrough: bool,
) -> (TcpStream, TcpStream, tokio::task::JoinHandle<RelayStats>) {
    // As in the gateway: the relay holds the accepted client socket and the connecting
    // backend socket (tcp_pair gives the accepted end first).
    let (client_side, client) = tcp_pair().await;
    let (backend, backend_side) = tcp_pair().await;
    let shutdown = ShutdownSwitch::new().subscribe();
    let relay = tokio::spawn(async move {
        let idle = Duration::from_secs(30);
        if passthrough {
            relay_tcp(&client_side, &backend_side, idle, &shutdown).await
        } else {
            relay_streams(client_side, backend_side, idle, &shutdown).await
        }
    });
    (client, backend, relay)
}

/// The small buffer of the relays (`SMALL_BUFFER` in frontgate::forward::relay).
const SMALL: usize = 4096;

#[tokio::test]
async fn light_traffic_takes_at_most_a_small_buffer_per_message() {
    let (mut client, mut backend, relay) = relayed_pair(true).await;
    const ROUNDS: usize = 200;
    let (mut request, mut reply) = ([0u8; 1024], [0u8; 1024]);
    let bytes = allocated_during(async {
        for round in 0..ROUNDS {
            request.fill(round as u8);
            client.write_all(&request).await.unwrap();
            backend.read_exact(&mut reply).await.unwrap();
            assert_eq!(reply, request);
            backend.write_all(&reply).await.unwrap();
            client.read_exact(&mut request).await.unwrap();
            assert_eq!(reply, request);
        }
    })
    .await;
    assert!(
        bytes <= 2 * ROUNDS * SMALL,
        "{bytes} bytes allocated for {ROUNDS} round trips of 1 KiB"
    );
    drop((client, backend));
    relay.await.unwrap();
}

#[tokio::test]
async fn a_burst_reuses_one_large_buffer() {
    let (mut client, mut backend, relay) = relayed_pair(false).await;
    // Chunks that each arrive on their own, as segments of a download do: one readiness
    // wake per chunk, larger than the small buffer.
    const CHUNKS: usize = 256;
    let (chunk, mut got) = (vec![0x5au8; 32 * 1024], vec![0u8; 32 * 1024]);
    let bytes = allocated_during(async {
        for _ in 0..CHUNKS {
            client.write_all(&chunk).await.unwrap();
            backend.read_exact(&mut got).await.unwrap();
            assert!(got == chunk);
        }
    })
    .await;
    assert!(
        bytes < 256 * 1024,
        "{bytes} bytes allocated to relay {CHUNKS} chunks of 32 KiB"
    );
    drop((client, backend));
    relay.await.unwrap();
}

#[tokio::test]
async fn an_idle_stream_relay_holds_no_buffer() {
    let (client_side, _client) = tcp_pair().await;
    let (_backend, backend_side) = tcp_pair().await;
    let shutdown = ShutdownSwitch::new().subscribe();
    let mut relay = None;
    let bytes = allocated_during(async {
        relay = Some(tokio::spawn(async move {
            relay_streams(
                client_side,
                backend_side,
                Duration::from_secs(30),
                &shutdown,
            )
            .await
        }));
        let_others_run().await;
    })
    .await;
    assert!(
        bytes < 8 * 1024,
        "{bytes} bytes allocated by a relay that has seen no byte"
    );
    if let Some(relay) = relay {
        relay.abort();
    }
}
