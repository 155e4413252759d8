//! Declares the `loom` cfg (set by RUSTFLAGS="--cfg loom" for the model in tests/loom.rs), so
//! `unexpected_cfgs` does not flag it in ordinary builds.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(loom)");
}
