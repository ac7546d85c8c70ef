//! Test support shared by the test suites of the shop's crates (enabled by the `test-support`
//! feature, never in release builds): the queue crate's helpers (Redis, prefixes, polling, ports,
//! a private redis-server), plus what only the shop needs: random signing secrets, the URL of a
//! test database, a decompression-bomb image for the upload tests, and private PostgreSQL and
//! HAProxy servers ([`PrivatePostgres`], [`Haproxy`]).

pub use orderly_queue::testing::{
    PrivateRedis, delete_prefix, eventually, free_port, redis_url, unique_prefix,
};

mod servers;
pub use servers::{Haproxy, PgBouncer, PrivatePostgres};

/// A signing secret for one test run: random, as `JWT_SECRET` must be (the config refuses
/// secrets published in the repository, placeholders and low-entropy values).
pub fn random_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The URL of the database `pool` points at (for processes a test starts): the test database
/// `#[sqlx::test]` created, on the server of `DATABASE_URL`.
pub fn database_url(pool: &sqlx::PgPool) -> String {
    let database = pool
        .connect_options()
        .get_database()
        .unwrap_or_default()
        .to_owned();
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let server = base
        .rsplit_once('/')
        .map(|(server, _)| server)
        .unwrap_or(&base);
    format!("{server}/{database}")
}

/// A PNG of a few dozen bytes whose header declares `width`x`height` (RGBA, 8 bits): decoded, it
/// would need `width * height * 4` bytes. For the image checks' decompression-bomb tests.
pub fn png_bomb(width: u32, height: u32) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for byte in data {
            crc ^= u32::from(*byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut header = width.to_be_bytes().to_vec();
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[8, 6, 0, 0, 0]);
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [
        (b"IHDR", header.as_slice()),
        (
            b"IDAT",
            &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01][..],
        ),
        (b"IEND", &[][..]),
    ] {
        let mut chunk = kind.to_vec();
        chunk.extend_from_slice(data);
        bytes.extend_from_slice(&(data.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&chunk);
        bytes.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }
    bytes
}
