//! Linker scripts for the board's binary (embassy-stm32's `memory-x` feature supplies the
//! memory map).

fn main() {
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
}
