//! Micro-benchmarks of the SMSG seal/open path (`cargo test --release -- --ignored --nocapture bench`).
//! Each figure is the minimum over several repeats (the machine is shared).

use std::hint::black_box;
use std::time::Instant;

use crate::smsg::{self, Cipher};

fn time<F: FnMut()>(name: &str, bytes: usize, iters: u32, repeats: u32, mut f: F) -> f64 {
    for _ in 0..iters.min(100) {
        f();
    }
    let mut best = f64::INFINITY;
    for _ in 0..repeats {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64() / iters as f64);
    }
    if bytes > 0 {
        println!("{name:<34} {:>10.3} us  {:>8.0} MB/s", best * 1e6, bytes as f64 / best / 1e6);
    } else {
        println!("{name:<34} {:>10.3} us", best * 1e6);
    }
    best
}

/// A transport Message of exactly `n` bytes, mostly one long ASCII string.
fn message(n: usize) -> Vec<u8> {
    let head = format!(
        r#"{{"id":"0123456789abcdef","type":"echo","from":"{}","to":"{}","ts":"2025-01-01T00:00:00Z","payload":{{"html":"<a href=\"x\">&</a>","data":""#,
        "a".repeat(32),
        "b".repeat(32)
    );
    let tail = r#""}}"#;
    let mut m = head.into_bytes();
    while m.len() + tail.len() < n {
        m.push(b'x');
    }
    m.extend_from_slice(tail.as_bytes());
    assert_eq!(m.len(), n);
    m
}

/// A transport Message of about `n` bytes made of many small JSON objects
/// (lots of quotes to escape).
fn message_dense(n: usize) -> Vec<u8> {
    let mut m = Vec::from(&br#"{"id":"0123456789abcdef","type":"stats","ts":"2025-01-01T00:00:00Z","payload":{"rows":["#[..]);
    let mut i = 0u64;
    while m.len() + 64 < n {
        if i > 0 {
            m.push(b',');
        }
        m.extend_from_slice(format!(r#"{{"k":"key{i}","v":{},"ok":true,"s":"é<b>"}}"#, i * 7919).as_bytes());
        i += 1;
    }
    m.extend_from_slice(b"]}}");
    m
}

fn cipher() -> Cipher {
    Cipher::new(&[0x5a; 32]).unwrap()
}

const NONCE: [u8; 24] = [7u8; 24];
const TS: i64 = 1735689600;

fn run(label: &str, msg: &[u8], iters: u32, repeats: u32) {
    let c = cipher();
    let n = msg.len();
    let frame = c.seal(msg, &NONCE, TS).unwrap();
    assert_eq!(c.open(&frame).unwrap(), msg);
    let env = smsg::envelope(msg, TS);
    println!("-- {label}: message {n} B, envelope {} B, frame {} B", env.len(), frame.len());
    time(&format!("{label} seal+open"), n, iters, repeats, || {
        let f = c.seal(black_box(msg), &NONCE, TS).unwrap();
        black_box(c.open(black_box(&f)).unwrap());
    });
    time(&format!("{label} seal"), n, iters, repeats, || {
        black_box(c.seal(black_box(msg), &NONCE, TS).unwrap());
    });
    time(&format!("{label} open"), n, iters, repeats, || {
        black_box(c.open(black_box(&frame)).unwrap());
    });
    time(&format!("{label} open_body"), n, iters, repeats, || {
        black_box(c.open_body(black_box(&frame)).unwrap());
    });
    // components
    let mut buf = env.clone();
    time(&format!("{label}  keystream xor"), env.len(), iters, repeats, || {
        smsg::xor_keystream(&NONCE, black_box(&mut buf));
    });
    time(&format!("{label}  envelope (escape)"), n, iters, repeats, || {
        black_box(smsg::envelope(black_box(msg), TS));
    });
    time(&format!("{label}  body_of_envelope"), n, iters, repeats, || {
        black_box(smsg::body_of_envelope(black_box(&env)).unwrap());
    });
    time(&format!("{label}  parse_message_head"), n, iters, repeats, || {
        black_box(smsg::parse_message_head(black_box(msg)).unwrap());
    });
    {
        let aead = crate::aead::XChaCha20Poly1305::new(&[1u8; 32]);
        let mut buf = env.clone();
        time(&format!("{label}  aead encrypt"), env.len(), iters, repeats, || {
            black_box(aead.seal_in_place(&NONCE, black_box(&mut buf)).unwrap());
        });
    }
    time(&format!("{label}  memcpy+alloc"), env.len(), iters, repeats, || {
        black_box(black_box(&env[..]).to_vec());
    });
}

#[test]
#[ignore]
fn bench_smsg_1k() {
    run("1KiB", &message(1024), 20000, 15);
    run("1KiB-dense", &message_dense(1024), 20000, 15);
    run("200B", &message(200), 50000, 15);
}

#[test]
#[ignore]
fn bench_smsg_1m() {
    run("1MiB", &message(1 << 20), 20, 15);
    run("1MiB-dense", &message_dense(1 << 20), 20, 15);
}

/// Protocol 2.0: seal + open of one message on a Noise link (issue 11: 1 KiB <= 1.5 us).
#[test]
#[ignore]
fn bench_noise_link() {
    use crate::noise::{prologue, Handshake};
    let pro = prologue(b"hello", b"ack");
    let dialler_public = crate::keys::public_key(&[2u8; 32]).expect("key");
    let mut acceptor = Handshake::acceptor(&[1u8; 32], &dialler_public, &pro).expect("acceptor");
    let mut dialler = Handshake::dialler(&[2u8; 32], &pro).expect("dialler");
    dialler.read_message(&acceptor.write_message().expect("m1")).expect("read m1");
    acceptor.read_message(&dialler.write_message().expect("m2")).expect("read m2");
    let (sender, receiver) = (dialler.into_link(0).expect("link"), acceptor.into_link(0).expect("link"));
    for n in [256, 1024, 16 * 1024, 1 << 20] {
        let m = message(n);
        time(&format!("2.0 seal+open {n} B"), n, if n > 100_000 { 50 } else { 20_000 }, 5, || {
            let f = sender.seal(black_box(&m)).expect("seal");
            black_box(receiver.open(&f).expect("open"));
        });
        let cipher = Cipher::new(&[7u8; 32]).expect("cipher");
        time(&format!("1.0 seal+open {n} B"), n, if n > 100_000 { 50 } else { 20_000 }, 5, || {
            let f = cipher.seal(black_box(&m), &[1u8; 24], 1).expect("seal");
            black_box(cipher.open(&f).expect("open"));
        });
    }
}

/// Which Noise cipher is cheaper here: ChaChaPoly or AESGCM (ring), 1 KiB seal + open.
#[test]
#[ignore]
fn bench_noise_ciphers() {
    use snow::resolvers::{DefaultResolver, FallbackResolver, RingResolver};
    for name in ["Noise_IK_25519_ChaChaPoly_SHA256", "Noise_IK_25519_AESGCM_SHA256"] {
        let mk = || Box::new(FallbackResolver::new(Box::new(RingResolver), Box::new(DefaultResolver)));
        let params: snow::params::NoiseParams = name.parse().expect("params");
        let rs = crate::keys::public_key(&[2u8; 32]).expect("key");
        let mut i = snow::Builder::with_resolver(params.clone(), mk())
            .local_private_key(&[1u8; 32]).and_then(|b| b.remote_public_key(&rs)).and_then(|b| b.build_initiator()).expect("i");
        let mut r = snow::Builder::with_resolver(params, mk())
            .local_private_key(&[2u8; 32]).and_then(|b| b.build_responder()).expect("r");
        let mut buf = vec![0u8; 70000];
        let mut out = vec![0u8; 70000];
        let n = i.write_message(&[], &mut buf).expect("m1");
        r.read_message(&buf[..n], &mut out).expect("r1");
        let n = r.write_message(&[], &mut buf).expect("m2");
        i.read_message(&buf[..n], &mut out).expect("r2");
        let i = i.into_stateless_transport_mode().expect("t");
        let r = r.into_stateless_transport_mode().expect("t");
        let m = message(1024);
        let mut nonce = 0u64;
        time(&format!("{name} 1 KiB"), 1024, 50_000, 5, || {
            let n = i.write_message(nonce, black_box(&m), &mut buf).expect("seal");
            black_box(r.read_message(nonce, &buf[..n], &mut out).expect("open"));
            nonce += 1;
        });
    }
}
