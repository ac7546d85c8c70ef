//! Rebuilds the crate when a migration is added or changed: `sqlx::migrate!` embeds
//! `migrations/` in the binaries at compile time, and cargo does not watch that folder by itself
//! (without this, an incremental build could ship the migrations of an earlier build).
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
