//! Tells cargo to rebuild the store when a migration is added or changed.

fn main() {
    // include_dir! does not track new files by itself.
    println!("cargo:rerun-if-changed=../../migrations");
}
